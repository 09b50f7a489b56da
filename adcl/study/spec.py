"""A study spec: loading it, checking it into a typed Study (`parse`: an unknown or misspelt
field is one line naming it and the nearest valid one), resolving every (setting, seed) to its
config (`plan`).

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
import difflib
import os
from typing import Optional

import ml_collections
from ml_collections.config_flags import config_flags

from adcl import configs, paths

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Setting:
  """One setting of the grid: its overrides of the base config, run at each of its seeds."""
  name: str
  overrides: dict  # Nested, e.g. {'adv': {'enabled': False}}.
  seeds: tuple
  baseline: Optional[str] = None  # A setting name: a paired row setting - baseline.
  config: Optional[str] = None  # Its own base config file, else the study's.


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A table and a plot of the settings' metrics against the value at a config key."""
  name: str
  key: str
  settings: tuple


@dataclasses.dataclass(frozen=True)
class EvaluateOptions:
  """How each finished run is evaluated (adcl.evaluate)."""
  robust_examples: int = 0  # 0: no attacks.
  figures: bool = False  # Each run's own figures.


@dataclasses.dataclass(frozen=True)
class Study:
  """A study spec, checked: the module docstring's fields, typed."""
  config: Optional[str]
  common: dict
  seeds: tuple
  settings: dict  # {name: Setting}, in run order.
  comparisons: tuple = ()  # ((setting, other setting), ...).
  sweeps: dict = dataclasses.field(default_factory=dict)  # {name: Sweep}.
  evaluate: EvaluateOptions = EvaluateOptions()
  title: Optional[str] = None


def _fields(cls, skip=("name",)) -> list:
  return [f.name for f in dataclasses.fields(cls) if f.name not in skip]


def _check_keys(given, cls, where: str) -> dict:
  """`given` (a ConfigDict or dict) as a dict, or ValueError naming an unknown key and the
  valid key nearest to it."""
  given = dict(given or {})
  valid = _fields(cls)
  for key in given:
    if key not in valid:
      nearest = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
      raise ValueError(f"{where}.{key}: unknown field; " + (
          f"did you mean {nearest[0]!r}?" if nearest else f"the fields are {valid}"))
  return given


def parse(spec) -> Study:
  """The Study of a spec file's ConfigDict, every field name checked (an unknown one is a
  one-line ValueError naming it and the nearest valid one) and every reference between its
  parts resolved."""
  top = _check_keys(spec, Study, "spec")
  settings = {}
  for name, fields in dict(top.get("settings") or {}).items():
    fields = _check_keys(fields, Setting, f"spec.settings.{name}")
    settings[name] = Setting(name, dict(fields.get("overrides") or {}),
                             tuple(int(s) for s in (fields.get("seeds") or ())),
                             fields.get("baseline"), fields.get("config"))
  if not settings:
    raise ValueError("spec.settings: the spec names no settings")
  sweeps = {}
  for name, fields in dict(top.get("sweeps") or {}).items():
    fields = _check_keys(fields, Sweep, f"spec.sweeps.{name}")
    sweeps[name] = Sweep(name, fields.get("key"), tuple(fields.get("settings") or ()))
  evaluate = EvaluateOptions(**_check_keys(top.get("evaluate"), EvaluateOptions,
                                           "spec.evaluate"))
  return Study(config=top.get("config"), common=dict(top.get("common") or {}),
               seeds=tuple(int(s) for s in (top.get("seeds") or ())), settings=settings,
               comparisons=tuple(tuple(pair) for pair in (top.get("comparisons") or ())),
               sweeps=sweeps, evaluate=evaluate, title=top.get("title"))


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


def plan(study: Study, workdir: str) -> list:
  """Every (setting, seed) of the study with its resolved config, checked before any run."""
  bases = {}

  def base_config(path: str, where: str):
    if path not in bases:
      try:
        bases[path] = load_config_file(path)
      except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
      apply_overrides(bases[path], study.common, "spec.common")
    return bases[path]

  runs = []
  for name, setting in study.settings.items():
    if not (setting.config or study.config):
      raise ValueError(f"spec.settings.{name}: no config file (set spec.config or its config)")
    base = base_config(setting.config or study.config,
                       f"spec.settings.{name}.config" if setting.config else "spec.config")
    if setting.baseline is not None and setting.baseline not in study.settings:
      raise ValueError(f"spec.settings.{name}.baseline: {setting.baseline!r} is not a setting")
    seeds = setting.seeds or study.seeds
    if not seeds:
      raise ValueError(f"spec.settings.{name}: no seeds (set spec.seeds or the setting's seeds)")
    for seed in seeds:
      config = base.copy_and_resolve_references()
      apply_overrides(config, setting.overrides, f"spec.settings.{name}.overrides")
      config.seed = seed
      runs.append(PlannedRun(name, seed, config,
                             str(paths.resolve(workdir) / "runs" / name / f"seed_{seed}")))
  for index, pair in enumerate(study.comparisons):
    if len(pair) != 2 or any(name not in study.settings for name in pair):
      raise ValueError(f"spec.comparisons[{index}]: {tuple(pair)!r} is not a (setting, setting) "
                       f"pair of {sorted(study.settings)}")
  for name, sweep in study.sweeps.items():
    for setting in sweep.settings:
      if setting not in study.settings:
        raise ValueError(f"spec.sweeps.{name}.settings: {setting!r} is not a setting")
  return runs


def comparisons(study: Study) -> list:
  """The report's paired rows: (setting, its baseline) in setting order, then
  spec.comparisons."""
  pairs = [(name, s.baseline) for name, s in study.settings.items() if s.baseline]
  return pairs + list(study.comparisons)


def title_of(study: Study, workdir: str) -> str:
  return study.title or os.path.basename(os.path.normpath(workdir))
