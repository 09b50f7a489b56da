"""A study spec: loading it, resolving every (setting, seed) to its config, checking it.

A spec file's `get_config()` returns a ConfigDict:
  config       the base config file (`path` or `path:argument`, relative to the working folder
               or to the repository), e.g. 'configs/quickstart.py'.
  common       nested overrides for every run, e.g. {'train': {'num_epochs': 1}}.
  seeds        the default seeds of every setting.
  settings     {name: {'overrides': {...}, 'seeds': optional, 'baseline': optional setting
               name, 'config': optional config file of its own}}, run in this order (build it
               as ConfigDict(sort_keys=False)). A setting with a baseline gets a
               setting - baseline row in the report, paired by seed.
  comparisons  optional ((setting, other setting), ...): more paired rows than the baselines.
  sweeps       {name: {'key': 'adv.eps', 'settings': (names...)}}: a table and a plot of each
               setting's metrics and difference to its baseline against the value at `key`.
  evaluate     {'robust_examples': int (0: no attacks), 'figures': bool (each run's own)}.
  title        optional: the report's title (default: the workdir's name).
"""

import dataclasses
import os

import ml_collections
from ml_collections.config_flags import config_flags

from adcl import configs, paths

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTING_FIELDS = ("overrides", "seeds", "baseline", "config")


@dataclasses.dataclass
class PlannedRun:
  setting: str
  seed: int
  config: ml_collections.ConfigDict
  workdir: str  # DIR/runs/SETTING/seed_S.


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """`get_config()` (or `get_config(argument)`) of the config file `path[:argument]`, found
  in the working folder or else in the repository; loaded as `--config` loads it."""
  path, colon, argument = spec.partition(":")
  found = next((p for p in (path, os.path.join(REPO_ROOT, path)) if os.path.isfile(p)), None)
  if found is None:
    raise ValueError(f"config file {path!r} not found (looked in the working folder and in "
                     f"{REPO_ROOT})")
  parser = config_flags.ConfigFileFlagParser(name="study", lock_config=False)
  return parser.parse(found + colon + argument)


def apply_overrides(config: ml_collections.ConfigDict, overrides, where: str) -> None:
  """Set every leaf of the nested `overrides` on `config`; an unknown key or a value of the
  wrong type is a ValueError naming `where` and the dotted key."""
  for dotted, value in configs.flatten(overrides or {}).items():
    try:
      configs.set_value(config, dotted, value)
    except (KeyError, TypeError) as error:
      problem = (f"{dotted!r} is not a config key" if isinstance(error, KeyError)
                 else f"{dotted} = {value!r}: {error}")
      raise ValueError(f"{where}: {problem}") from None


def overrides_text(overrides) -> str:
  """'key=value, ...' of nested overrides, '(base)' for none."""
  return ", ".join(f"{k}={v}" for k, v in configs.flatten(overrides or {}).items()) or "(base)"


def plan(spec: ml_collections.ConfigDict, workdir: str) -> list:
  """Every (setting, seed) of the spec with its resolved config, checked before any run."""
  if not spec.get("settings"):
    raise ValueError("spec.settings: the spec names no settings")
  bases = {}

  def base_config(path: str, where: str):
    if path not in bases:
      try:
        bases[path] = load_config_file(path)
      except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
      apply_overrides(bases[path], spec.get("common"), "spec.common")
    return bases[path]

  runs = []
  for name, setting in spec.settings.items():
    unknown = set(setting) - set(SETTING_FIELDS)
    if unknown:
      raise ValueError(f"spec.settings.{name}: unknown field(s) {sorted(unknown)}; use "
                       + ", ".join(SETTING_FIELDS))
    if not (setting.get("config") or spec.get("config")):
      raise ValueError(f"spec.settings.{name}: no config file (set spec.config or its config)")
    base = base_config(setting.get("config") or spec.config,
                       f"spec.settings.{name}.config" if setting.get("config") else "spec.config")
    baseline = setting.get("baseline")
    if baseline is not None and baseline not in spec.settings:
      raise ValueError(f"spec.settings.{name}.baseline: {baseline!r} is not a setting")
    seeds = tuple(setting.get("seeds") or spec.seeds)
    if not seeds:
      raise ValueError(f"spec.settings.{name}: no seeds (set spec.seeds or the setting's seeds)")
    for seed in seeds:
      config = base.copy_and_resolve_references()
      apply_overrides(config, setting.get("overrides"), f"spec.settings.{name}.overrides")
      config.seed = int(seed)
      runs.append(PlannedRun(name, int(seed), config,
                             str(paths.resolve(workdir) / "runs" / name / f"seed_{seed}")))
  for index, pair in enumerate(spec.get("comparisons") or ()):
    if len(pair) != 2 or any(name not in spec.settings for name in pair):
      raise ValueError(f"spec.comparisons[{index}]: {tuple(pair)!r} is not a (setting, setting) "
                       f"pair of {sorted(spec.settings)}")
  for name, sweep in (spec.get("sweeps") or {}).items():
    for setting in sweep.settings:
      if setting not in spec.settings:
        raise ValueError(f"spec.sweeps.{name}.settings: {setting!r} is not a setting")
  return runs


def comparisons(spec) -> list:
  """The report's paired rows: (setting, its baseline) in setting order, then
  spec.comparisons."""
  pairs = [(name, s.baseline) for name, s in spec.settings.items() if s.get("baseline")]
  return pairs + [tuple(pair) for pair in spec.get("comparisons") or ()]


def title_of(spec, workdir: str) -> str:
  return spec.get("title") or os.path.basename(os.path.normpath(workdir))
