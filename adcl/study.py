"""`python -m adcl.study --spec configs/studies/NAME.py --workdir DIR [--spec.KEY=VALUE ...]`.

Runs a grid of settings x seeds one run after another, evaluates each with `adcl.evaluate`,
and writes DIR/report.md with its figures in DIR/figures/. Rerunning the same command resumes:
finished runs are read back, a half-trained run continues from its latest checkpoint, and
a trained but unevaluated run is only evaluated. The report is rewritten after every run, so
it is readable while the grid is still going.

A spec file's `get_config()` returns a ConfigDict:
  config    the base config file (`path` or `path:argument`, relative to the working folder
            or to the repository), e.g. 'configs/quickstart.py'.
  common    nested overrides for every run, e.g. {'train': {'num_epochs': 1}}.
  seeds     the default seeds of every setting.
  settings  {name: {'overrides': {...}, 'seeds': optional, 'baseline': optional setting name,
            'config': optional config file of its own}}, run in this order (build it as
            ConfigDict(sort_keys=False)). A setting with a baseline gets a setting - baseline
            row in the report, paired by seed.
  comparisons  optional ((setting, other setting), ...): more paired rows than the baselines,
            e.g. the cheap attack against the full one.
  sweeps    {name: {'key': 'adv.eps', 'settings': (names...)}}: a table and a plot of each
            setting's metrics and difference to its baseline against the value at `key`.
  evaluate  {'robust_examples': int (0: no attacks), 'figures': bool (each run's own figures)}.

Layout: DIR/runs/SETTING/seed_S/ is an ordinary adcl workdir (checkpoints, metrics.jsonl,
eval.json) plus study_run.json (resolved config, wall times, state).

A grid longer than a sitting: `--max_runs N` stops after N runs; `--export DEST` copies the
report and the finished runs' records (no checkpoints) to DEST, and DEST/runs copied into a new
workdir (another machine) resumes the grid there.

What the attack costs: each setting's train wall time over its baseline's, and, with
`--step_times FILE[,FILE]` (the JSON lines `benchmarks/step_time.py` prints last), its step
time over its baseline's as timed side by side in one process. The report's cost figure uses the
step-time ratio where the files have it: a grid run in several sittings runs on several
machines, whose speeds differ (10-15% between this project's machines), so its wall-time ratios
mix machines. `--plan` prints every run and, from the same records, its hours.
"""

import dataclasses
import functools
import importlib.util
import json
import os
import shlex
import sys
import time
from typing import Optional, Sequence

import ml_collections
import numpy as np

from adcl import cli, compare, errors, figures, paths

# The accuracies the report aggregates (eval.json keys), in the order of its columns.
METRICS = ("knn_top1_backbone", "knn_top1_embedding", "linear_top1")
METRIC_LABELS = {"knn_top1_backbone": "kNN (backbone)", "knn_top1_embedding": "kNN (projector)",
                 "linear_top1": "linear probe"}
# Metrics whose margin over the raw pixels (eval.json's METRIC_minus_pixels) the report shows.
PIXEL_MARGINS = ("knn_top1_backbone", "linear_top1")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- The grid.

@dataclasses.dataclass
class PlannedRun:
  setting: str
  seed: int
  config: ml_collections.ConfigDict
  workdir: str  # DIR/runs/SETTING/seed_S.


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """`get_config()` (or `get_config(argument)`) of the config file `path[:argument]`."""
  path, _, argument = spec.partition(":")
  candidates = [path, os.path.join(REPO_ROOT, path)]
  found = next((p for p in candidates if os.path.isfile(p)), None)
  if found is None:
    raise ValueError(f"config file {path!r} not found (looked in the working folder and in "
                     f"{REPO_ROOT})")
  module_spec = importlib.util.spec_from_file_location("adcl_study_config", found)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(argument) if argument else module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides, where: str) -> None:
  """Set every leaf of the nested `overrides` on `config`; an unknown key or a value of the
  wrong type is a ValueError naming `where` and the dotted key."""

  def visit(target, values, prefix):
    for key, value in dict(values).items():
      dotted = f"{prefix}{key}"
      if key not in target:
        raise ValueError(f"{where}: {dotted!r} is not a config key")
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        if not isinstance(target[key], ml_collections.ConfigDict):
          raise ValueError(f"{where}: {dotted!r} is a value, not a section")
        visit(target[key], value, dotted + ".")
        continue
      try:
        setattr(target, key, value)
      except TypeError as error:
        raise ValueError(f"{where}: {dotted} = {value!r}: {error}") from None

  visit(config, overrides or {}, "")


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
    unknown = set(setting) - {"overrides", "seeds", "baseline", "config"}
    if unknown:
      raise ValueError(f"spec.settings.{name}: unknown field(s) {sorted(unknown)}; use "
                       "overrides, seeds, baseline, config")
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


# ---- One run: train (resuming), evaluate, record.

def _record_path(run: PlannedRun):
  return paths.resolve(run.workdir) / "study_run.json"


def read_record(run: PlannedRun) -> dict:
  path = _record_path(run)
  return json.loads(path.read_text()) if path.exists() else {}


def _write_record(run: PlannedRun, record: dict) -> None:
  paths.write_atomic(_record_path(run), json.dumps(record, indent=1))


def check_same_config(run: PlannedRun, record: dict) -> None:
  """A run directory made with another config is not silently continued."""
  saved = record.get("config")
  if saved is None:
    return
  current = json.loads(run.config.to_json())
  differ = _differences(saved, current)
  if differ:
    raise ValueError(f"{run.workdir} was made with another config ({'; '.join(differ[:3])}); "
                     "move it away or use another --workdir")


def _differences(old, new, prefix=""):
  """Dotted keys whose values differ. A key the saved config lacks is not a difference: it
  was added to adcl after that run, with a default that keeps the old behaviour."""
  if isinstance(old, dict) and isinstance(new, dict):
    return [d for k in sorted(set(old) | set(new)) if k in old
            for d in _differences(old[k], new.get(k), f"{prefix}{k}.")]
  return [] if old == new else [f"{prefix[:-1]} {old!r} -> {new!r}"]


def execute(run: PlannedRun, evaluate_options: ml_collections.ConfigDict) -> dict:
  """Train `run` to the end (resuming), evaluate it once, and return its record.

  The record's train_seconds sums the training segments that finished; a segment killed
  from outside is counted in `interrupted_segments` and its time is lost (the steps it
  checkpointed are not redone).
  """
  from adcl import evaluate, train

  record = read_record(run)
  check_same_config(run, record)
  if record.get("evaluated"):
    return record
  record.update(setting=run.setting, seed=run.seed, config=json.loads(run.config.to_json()))
  record.setdefault("train_seconds", 0.0)
  record.setdefault("train_segments", 0)
  record.setdefault("interrupted_segments", 0)
  if not record.get("trained"):
    if record.get("training"):  # The previous segment never finished.
      record["interrupted_segments"] += 1
    record["training"] = True
    _write_record(run, record)
    start = time.perf_counter()
    train.run(run.config, run.workdir)
    record["train_seconds"] += time.perf_counter() - start
    record["train_segments"] += 1
    record.update(training=False, trained=True)
    _write_record(run, record)
  start = time.perf_counter()
  evaluate.evaluate_workdir(run.workdir, robust_examples=evaluate_options.get("robust_examples", 0),
                            figures=evaluate_options.get("figures", False))
  record.update(eval_seconds=time.perf_counter() - start, evaluated=True)
  _write_record(run, record)
  return record


# ---- The report.

def run_summary(run: PlannedRun) -> Optional[dict]:
  """eval.json, images/s and wall times of a finished run; None if it is not finished."""
  record = read_record(run)
  if not record.get("evaluated"):
    return None
  summary = compare.summarize(run.workdir)
  summary.update(setting=run.setting, seed=run.seed, train_seconds=record["train_seconds"],
                 eval_seconds=record.get("eval_seconds", 0.0),
                 interrupted=record.get("interrupted_segments", 0) > 0)
  return summary


def mean_std(values: Sequence[float]):
  """(mean, sample std (ddof 1; nan for one value), n)."""
  values = np.asarray(values, float)
  if not len(values):
    return float("nan"), float("nan"), 0
  std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
  return float(np.mean(values)), std, len(values)


def _pm(stats, digits: int = 2) -> str:
  mean, std, n = stats
  if n == 0:
    return "–"
  return f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def paired_difference(runs: dict, setting: str, baseline: str, key: str):
  """mean/std/n of setting - baseline over the seeds both have finished (paired by seed)."""
  return mean_std(_paired_values(runs, setting, baseline, key))


def _paired_values(runs: dict, setting: str, baseline: str, key: str) -> list:
  ours, theirs = runs.get(setting, {}), runs.get(baseline, {})
  return [ours[s][key] - theirs[s][key] for s in sorted(set(ours) & set(theirs))]


def paired_interval(differences: Sequence[float], confidence: float = 0.95):
  """(mean, half-width, n) of the paired t interval of the mean difference over seeds:
  mean ± t(confidence, n - 1) * std / sqrt(n). Half-width nan below 2 seeds."""
  from scipy import stats

  mean, std, n = mean_std(differences)
  if n < 2:
    return mean, float("nan"), n
  return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n)), n


def verdict(interval) -> str:
  """'gain' / 'loss' when the 95% interval excludes 0, else 'within noise' ('1 seed' alone)."""
  mean, half, n = interval
  if n < 2 or not np.isfinite(half):
    return f"{n} seed" if n else "–"
  return "gain" if mean - half > 0 else "loss" if mean + half < 0 else "within noise"


def multiplicity_text(runs: dict, pairs: Sequence[tuple]) -> str:
  """What the table's intervals mean together: of k intervals at 95%, about k/20 exclude 0 by
  chance alone, so each verdict is checked again at the Bonferroni level 1 - 0.05/k."""
  values = [(name, other, m, _paired_values(runs, name, other, m))
            for name, other in pairs for m in METRICS]
  values = [v for v in values if len(v[3]) >= 2]
  k = len(values)
  if not k:
    return "No interval yet: a paired interval needs two seeds of both settings."
  kept = [f"{name} − {other} {METRIC_LABELS[m]}: {_interval_text(i)}"
          for name, other, m, diffs in values
          for i in [paired_interval(diffs, 1 - 0.05 / k)] if verdict(i) != "within noise"]
  return (f"{k} intervals of 2 seeds or more: at 95% each, about {k / 20:.1f} would exclude 0 "
          f"by chance alone. At the Bonferroni level ({100 - 5 / k:.2f}% each, 95% for the "
          "family), " + ("; ".join(kept) + " still exclude 0." if kept
                         else "none excludes 0: a verdict above is a lead, not a finding."))


def _interval_text(interval) -> str:
  mean, half, n = interval
  if n == 0:
    return "–"
  return f"{mean:+.2f}" if n < 2 else f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"


def sampling_noise(accuracy: float, test_images: int) -> float:
  """Binomial std (percentage points) of one accuracy measured on `test_images` images."""
  p = accuracy / 100
  return 100 * float(np.sqrt(p * (1 - p) / test_images))


def aggregate(spec, summaries: Sequence[dict]) -> dict:
  """{setting: {seed: summary}} of the finished runs, in the spec's setting order."""
  runs = {name: {} for name in spec.settings}
  for s in summaries:
    runs[s["setting"]][s["seed"]] = s
  return runs


def _lookup(config: dict, dotted: str):
  for part in dotted.split("."):
    config = config[part]
  return config


def _overrides_text(setting) -> str:
  flat = []

  def visit(values, prefix):
    for key, value in dict(values).items():
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        visit(value, f"{prefix}{key}.")
      else:
        flat.append(f"{prefix}{key}={value}")

  visit(setting.get("overrides") or {}, "")
  return ", ".join(flat) or "(base)"


def report_markdown(spec, planned: Sequence[PlannedRun], summaries: Sequence[dict],
                    command: str, title: str, figure_names: Sequence[str] = (),
                    step_ratios: Optional[dict] = None) -> str:
  """report.md; `step_ratios` ({(setting, other): step time over the other's}) adds a column."""
  step_ratios = step_ratios or {}
  runs = aggregate(spec, summaries)
  total = len(planned)
  lines = [f"# {title}", "", f"Produced by `{command}`.", "",
           f"Base config `{spec.config}`; every run: {_overrides_text({'overrides': spec.get('common')})}.",
           f"Finished runs: {len(summaries)} of {total}."
           + ("" if len(summaries) == total else " The grid is not finished; rerun the command "
              "to resume it."), ""]
  lines += ["## Settings (mean ± std over seeds)", "",
            "The encoder's margin over the raw pixels of its input (same protocol) is "
            "`− pixels`; a representation that does not beat its input has a negative one.", "",
            "| setting | overrides | seeds | " + " | ".join(METRIC_LABELS[m] for m in METRICS)
            + " | " + " | ".join(f"{METRIC_LABELS[m]} − pixels" for m in PIXEL_MARGINS)
            + " | train wall time (s) | images/s |",
            "|" + "---|" * (len(METRICS) + len(PIXEL_MARGINS) + 5)]
  for name, setting in spec.settings.items():
    done = runs[name]
    cells = [_pm(mean_std([r[m] for r in done.values()])) for m in METRICS]
    cells += [_pm(mean_std([r[f"{m}_minus_pixels"] for r in done.values()
                            if f"{m}_minus_pixels" in r])) for m in PIXEL_MARGINS]
    lines.append(f"| {name} | {_overrides_text(setting)} | {len(done)} | " + " | ".join(cells)
                 + f" | {_pm(mean_std([r['train_seconds'] for r in done.values()]), 0)}"
                 + f" | {_pm(mean_std([r.get('images_per_s', np.nan) for r in done.values()]), 0)} |")
  lines += ["", *_pixel_lines(summaries)]
  paired = comparisons(spec)
  if paired:
    lines += ["", "## Against the baseline (paired by seed: setting − baseline"
              + ("; then the spec's comparisons, setting − the other)" if spec.get("comparisons")
                 else ")"), "",
              "Mean difference over the seeds both settings finished, with its 95% interval "
              "(paired t over seeds); a gain or a loss only where the interval excludes 0."
              + (" Step-time ratio: the compiled steps timed side by side in one process "
                 "(benchmarks/step_time.py, --step_times); the wall-time ratio compares runs "
                 "that may have run on different machines." if step_ratios else ""), "",
              "| setting | baseline | paired seeds | " + " | ".join(f"Δ {METRIC_LABELS[m]}"
                                                          for m in METRICS)
              + " | train wall time ratio |" + (" step-time ratio |" if step_ratios else ""),
              "|" + "---|" * (len(METRICS) + 4 + bool(step_ratios))]
    for name, baseline in paired:
      intervals = [paired_interval(_paired_values(runs, name, baseline, m)) for m in METRICS]
      ratio = _time_ratio(runs, name, baseline)
      lines.append(f"| {name} | {baseline} | {intervals[0][2]} | "
                   + " | ".join(f"{_interval_text(i)} ({verdict(i)})" if i[2] else "–"
                                for i in intervals)
                   + f" | {ratio} |"
                   + (f" {step_ratios[name, baseline]:.2f}x |" if (name, baseline) in step_ratios
                      else " – |" if step_ratios else ""))
    lines += ["", multiplicity_text(runs, paired)]
  for sweep_name, sweep in (spec.get("sweeps") or {}).items():
    lines += ["", f"## Sweep: {sweep_name} ({sweep.key})", "",
              f"| {sweep.key} | setting | seeds | " + " | ".join(METRIC_LABELS[m] for m in METRICS)
              + f" | Δ {METRIC_LABELS[METRICS[0]]} vs its baseline |", "|" + "---|" * (len(METRICS) + 4)]
    for row in sweep_rows(spec, planned, runs, sweep):
      lines.append(f"| {row['x']} | {row['setting']} | {row['n']} | "
                   + " | ".join(_pm(row[m]) for m in METRICS) + f" | {_pm(row['delta'])} |")
  lines += ["", "## Every run", "",
            "| setting | seed | step | " + " | ".join(METRIC_LABELS[m] for m in METRICS)
            + " | train s | eval s | images/s |", "|" + "---|" * (len(METRICS) + 6)]
  for name in spec.settings:
    for seed, r in sorted(runs[name].items()):
      note = " (resumed; killed segment not timed)" if r["interrupted"] else ""
      lines.append(f"| {name} | {seed} | {r.get('step', '–')} | "
                   + " | ".join(f"{r[m]:.2f}" for m in METRICS)
                   + f" | {r['train_seconds']:.0f}{note} | {r['eval_seconds']:.0f} | "
                   + f"{r.get('images_per_s', float('nan')):.0f} |")
  if figure_names:
    lines += ["", "Figures: " + ", ".join(f"[{n}](figures/{n})" for n in figure_names) + ".", ""]
  return "\n".join(lines)


def _pixel_lines(summaries: Sequence[dict]) -> list:
  """The raw-pixel baselines of the runs (one per input size) and the test-set noise."""
  lines, seen = [], set()
  for s in summaries:
    if "pixels_knn_top1" not in s:
      continue
    key = (s["pixels_features"], s["pixels_knn_top1"], s["pixels_linear_top1"])
    if key not in seen:
      seen.add(key)
      lines.append(f"Raw pixels ({s['pixels_features']} features, the runs' normalised input): "
                   f"kNN {s['pixels_knn_top1']:.2f}%, linear probe {s['pixels_linear_top1']:.2f}%.")
  test_images = [s["test_images"] for s in summaries if "test_images" in s]
  if test_images:
    accuracy = float(np.mean([s["linear_top1"] for s in summaries]))
    lines.append(
        f"Test-set sampling noise: an accuracy near {accuracy:.1f}% measured on "
        f"{test_images[0]:,} test images has a binomial std of "
        f"{sampling_noise(accuracy, test_images[0]):.2f} points; the seed-to-seed spread "
        "above includes it.")
  return [part for line in lines for part in (line, "")]


def read_step_times(files: str) -> list:
  """The records of benchmarks/step_time.py (one JSON object per line) in the comma-separated
  `files`; a file that is missing or holds anything else is a ValueError naming it."""
  records = []
  for path in filter(None, (p.strip() for p in files.split(","))):
    try:
      lines = paths.resolve(path).read_text().splitlines()
    except OSError as error:
      raise ValueError(f"--step_times: {path}: {error.strerror or error}") from None
    for number, line in enumerate(lines, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        record = None
      if not isinstance(record, dict) or "plain_images_per_s" not in record:
        raise ValueError(f"--step_times: {path}:{number} is not a JSON line of "
                         "benchmarks/step_time.py")
      records.append(record)
  return records


def model_key(config: ml_collections.ConfigDict) -> tuple:
  """What a step's speed depends on, as a step_time record names it: (architecture, width,
  image_size, batch, dtype, variant); variant is 'plain', 'clae' or 'clae_fraction_F'."""
  if not config.adv.enabled:
    variant = "plain"
  else:
    fraction = float(config.adv.get("fraction", 1.0))
    variant = "clae" if fraction == 1.0 else f"clae_fraction_{fraction}"
  return (config.model.architecture, config.model.width, config.data.image_size,
          config.train.batch_size, config.model.dtype, variant)


def measured_images_per_s(records: Sequence[dict], config: ml_collections.ConfigDict,
                          ) -> Optional[float]:
  """Source images/s of `config`'s step in the first step_time record that timed its model,
  input, batch and attack; None where no record did."""
  *model, variant = model_key(config)
  for record in records:
    if [record.get(k) for k in ("architecture", "width", "image_size", "batch",
                                "dtype")] == model and record.get(f"{variant}_images_per_s"):
      return record[f"{variant}_images_per_s"]
  return None


def comparisons(spec) -> list:
  """The report's paired rows: (setting, its baseline) in setting order, then
  spec.comparisons."""
  pairs = [(name, s.baseline) for name, s in spec.settings.items() if s.get("baseline")]
  return pairs + [tuple(pair) for pair in spec.get("comparisons") or ()]


def step_time_ratios(spec, planned: Sequence[PlannedRun], records: Sequence[dict]) -> dict:
  """{(setting, other): its step time over the other's} for each of comparisons(spec), from
  the first record that timed both side by side; pairs without such a record are left out."""
  config_of = {p.setting: p.config for p in planned}
  ratios = {}
  for name, other in comparisons(spec):
    for record in records:  # Both from one record: timed side by side.
      ours = measured_images_per_s([record], config_of[name])
      theirs = measured_images_per_s([record], config_of[other])
      if ours and theirs:
        ratios[name, other] = theirs / ours
        break
  return ratios


def time_ratio(runs, name, baseline) -> float:
  """Mean train wall time of `name` over that of `baseline` (nan if either has no run)."""
  ours = [r["train_seconds"] for r in runs.get(name, {}).values()]
  theirs = [r["train_seconds"] for r in runs.get(baseline, {}).values()]
  if not ours or not theirs:
    return float("nan")
  return float(np.mean(ours) / np.mean(theirs))


def _time_ratio(runs, name, baseline) -> str:
  ratio = time_ratio(runs, name, baseline)
  return "–" if np.isnan(ratio) else f"{ratio:.2f}x"


def sweep_rows(spec, planned, runs, sweep) -> list:
  """One row per setting of the sweep: its x value, metric stats and Δ to its baseline."""
  config_of = {p.setting: json.loads(p.config.to_json()) for p in planned}
  rows = []
  for name in sweep.settings:
    done = runs[name]
    baseline = spec.settings[name].get("baseline")
    row = {"setting": name, "x": _lookup(config_of[name], sweep.key), "n": len(done),
           "delta": (paired_difference(runs, name, baseline, METRICS[0]) if baseline
                     else (np.nan, np.nan, 0))}
    row.update({m: mean_std([r[m] for r in done.values()]) for m in METRICS})
    rows.append(row)
  return rows


def write_report(spec, planned, workdir: str, command: str, title: str,
                 step_times: Sequence[dict] = ()) -> list:
  """The figures of the finished runs in `workdir`/figures, then report.md naming them;
  returns the written paths. `step_times`: benchmarks/step_time.py records (read_step_times)."""
  step_ratios = step_time_ratios(spec, planned, step_times)
  summaries = [s for s in (run_summary(p) for p in planned) if s is not None]
  directory = paths.resolve(workdir)
  runs = aggregate(spec, summaries)
  written = []
  if summaries:
    names = list(spec.settings)
    values = {m: [[r[m] for r in runs[n].values()] for n in names] for m in METRICS}
    seconds = [[r["train_seconds"] for r in runs[n].values()] for n in names]
    written.append(figures.save(figures.study_settings(names, values, seconds, title),
                                directory / "figures" / "settings.png"))
    # Each setting against its own baseline (one point per setting; spec.comparisons are
    # report rows only).
    paired = [(n, s.baseline) for n, s in spec.settings.items()
              if s.get("baseline") and runs[n] and runs[s.baseline]]
    # The step-time ratio where every point has one (one machine, side by side), else wall time.
    by_step = bool(paired) and all(pair in step_ratios for pair in paired)
    points = [{"setting": n, "cost": step_ratios[n, b] if by_step else time_ratio(runs, n, b),
               **{m: paired_interval(_paired_values(runs, n, b, m)) for m in METRICS}}
              for n, b in paired]
    if points:
      written.append(figures.save(
          figures.study_cost(points, METRICS, METRIC_LABELS, f"{title}: gain against cost",
                             "step time / baseline's" if by_step
                             else "train wall time / baseline's"),
          directory / "figures" / "cost.png"))
    for sweep_name, sweep in (spec.get("sweeps") or {}).items():
      rows = [r for r in sweep_rows(spec, planned, runs, sweep) if r["n"]]
      if rows:
        written.append(figures.save(
            figures.study_sweep(sweep.key, rows, METRICS, METRIC_LABELS, f"{title}: {sweep_name}"),
            directory / "figures" / f"sweep_{sweep_name}.png"))
  report = report_markdown(spec, planned, summaries, command, title,
                           [paths.resolve(w).name for w in written], step_ratios)
  return [str(paths.write_atomic(directory / "report.md", report))] + [str(w) for w in written]


# ---- Taking a grid's results to another machine.

# What a finished run is read back from (run_summary): no checkpoints.
RECORD_FILES = ("study_run.json", "eval.json", "metrics.jsonl")


def export(planned: Sequence[PlannedRun], workdir: str, destination: str) -> list:
  """Copy report.md, figures/ and each finished run's RECORD_FILES (kilobytes, no checkpoints)
  from `workdir` to `destination`, in the same layout; returns the copied paths.

  A grid of many hours outlives the machine it started on (a preemptible VM, a session's
  disk): copying `destination/runs` into a new workdir resumes the grid there with those runs
  finished. Unfinished runs are not copied; they start again from step 0 on the new machine.
  """
  source, target = paths.resolve(workdir), paths.resolve(destination)
  files = [source / "report.md", *sorted((source / "figures").glob("*.png"))]
  for run in planned:
    if read_record(run).get("evaluated"):
      files += [paths.resolve(run.workdir) / name for name in RECORD_FILES]
  copied = []
  for path in files:
    if path.exists():
      copy = target / path.relative_to(source)
      copy.parent.mkdir(parents=True, exist_ok=True)
      copied.append(path.copy(copy, overwrite=True))
  return [str(c) for c in copied]


# ---- What a grid costs before it runs.

def run_images(config: ml_collections.ConfigDict) -> Optional[int]:
  """Source images one run trains on (steps x batch); None for a dataset of unknown size."""
  from adcl import configs
  if config.train.num_steps > 0:
    return config.train.num_steps * config.train.batch_size
  size = configs.TRAIN_IMAGES.get(config.data.name)
  if size is None:
    return None
  return config.train.num_epochs * (size // config.train.batch_size) * config.train.batch_size


def step_hours(run: PlannedRun, step_times: Sequence[dict]) -> Optional[float]:
  """Hours `run`'s training steps take at the speed of the step_time record that timed its
  model (measured_images_per_s); None where no record did or the dataset's size is unknown."""
  images, speed = run_images(run.config), measured_images_per_s(step_times, run.config)
  return images / speed / 3600 if images and speed else None


def time_left(planned: Sequence[PlannedRun], finished_here: Sequence[PlannedRun],
              seconds_here: float, step_times: Sequence[dict]) -> str:
  """'N runs left, about M min (how)': the unfinished runs of `planned`, estimated from the
  runs this sitting finished in `seconds_here`.

  Where step_time records time every one of those runs, the runs left take their step hours
  times this sitting's wall time over its step hours (evaluation and the input included):
  a grid's runs differ in width and attack, so a mean time per run misleads (here a width-64
  CLAE run's steps take 5x a width-32 SimCLR run's). Otherwise this sitting's mean per run.
  """
  left = [run for run in planned if not read_record(run).get("evaluated")]
  if not left:
    return "no runs left"
  hours_here = [step_hours(run, step_times) for run in finished_here]
  hours_left = [step_hours(run, step_times) for run in left]
  if finished_here and None not in hours_here + hours_left:
    overhead = seconds_here / 3600 / sum(hours_here)
    minutes = sum(hours_left) * 60 * overhead
    how = f"their step times x {overhead:.2f}, this sitting's wall over step time"
  else:
    minutes = len(left) * seconds_here / max(len(finished_here), 1) / 60
    how = "this sitting's mean per run"
  return f"{len(left)} runs left, about {minutes:.0f} min ({how})"


def cost_table(planned: Sequence[PlannedRun], step_times: Sequence[dict]) -> str:
  """Markdown: every planned run, its model key, the images it trains on and, where a
  step_time record (read_step_times) timed that model, the hours it takes at that speed; the
  runs the workdir has finished are marked, and the hours still to run summed apart."""
  lines = ["| run | data | model (arch, width, px, batch, dtype, step) | epochs | images (M) "
           "| images/s | hours |", "|---|---|---|---|---|---|---|"]
  total, left, unmeasured = 0.0, 0.0, 0
  for run in planned:
    c, images = run.config, run_images(run.config)
    speed, hours = measured_images_per_s(step_times, c), step_hours(run, step_times)
    done = bool(read_record(run).get("evaluated"))
    total += hours or 0.0
    left += 0.0 if done else (hours or 0.0)
    unmeasured += hours is None
    lines.append(f"| {run.setting} seed {run.seed}{' (done)' if done else ''} | {c.data.name} | "
                 f"{' '.join(map(str, model_key(c)))} | "
                 f"{c.train.num_epochs if c.train.num_steps <= 0 else '–'} | "
                 f"{images / 1e6 if images else float('nan'):.1f} | "
                 f"{speed if speed else '–'} | {f'{hours:.1f}' if hours else '–'} |")
  lines.append(f"| all | | | | | | {total:.1f}, {left:.1f} left"
               f"{f' (+{unmeasured} runs not timed)' if unmeasured else ''} |")
  return "\n".join(lines) + "\n"


# ---- The command.

def title_of(spec, workdir: str) -> str:
  return spec.get("title") or os.path.basename(os.path.normpath(workdir))


def run_study(spec, workdir: str, command: str, max_runs: int = 0,
              log=functools.partial(print, flush=True), step_times: Sequence[dict] = ()) -> list:
  """Every planned run (resuming), the report after each; returns the planned runs.

  max_runs > 0 stops after that many runs of this sitting have finished, so that a grid of
  many hours can be run in sittings without killing a run halfway (whose time would be lost).
  """
  planned = plan(spec, workdir)
  for run in planned:  # Fail on a changed spec before training anything.
    check_same_config(run, read_record(run))
  title = title_of(spec, workdir)
  evaluate_options = spec.get("evaluate") or ml_collections.ConfigDict()
  started, finished_here = time.perf_counter(), []
  for index, run in enumerate(planned, 1):
    label = f"[{index}/{len(planned)}] {run.setting} seed {run.seed}"
    if read_record(run).get("evaluated"):
      log(f"{label}: finished earlier")
      continue
    if max_runs and len(finished_here) >= max_runs:
      log(f"{label}: not started (--max_runs={max_runs} runs done in this sitting)")
      break
    log(f"{label}: running in {run.workdir}")
    begin = time.perf_counter()
    record = execute(run, evaluate_options)
    finished_here.append(run)
    result = json.loads((paths.resolve(run.workdir) / "eval.json").read_text())
    log(f"{label}: done in {time.perf_counter() - begin:.0f} s (train {record['train_seconds']:.0f} s)"
        f" | kNN {result['knn_top1_backbone']:.2f}% | linear {result['linear_top1']:.2f}%"
        f" | {time_left(planned, finished_here, time.perf_counter() - started, step_times)}")
    write_report(spec, planned, workdir, command, title, step_times)
  for path in write_report(spec, planned, workdir, command, title, step_times):
    log(f"wrote {path}")
  return planned


def main(argv):
  from absl import flags

  f = flags.FLAGS
  if len(argv) > 1:
    raise errors.UsageError(f"unexpected arguments {argv[1:]}")
  step_times = read_step_times(f.step_times)  # Before anything runs: a bad file is named.
  if f.plan:
    print(cost_table(plan(f.spec, f.workdir), step_times), end="")
    return
  # The report names the command that makes the whole grid, without this sitting's options.
  command = "python -m adcl.study " + " ".join(
      shlex.quote(a) for a in _without_options(sys.argv[1:], ("--max_runs", "--export")))
  if f.export:  # The report redrawn from the finished runs, then copied with their records.
    planned = plan(f.spec, f.workdir)
    write_report(f.spec, planned, f.workdir, command, title_of(f.spec, f.workdir), step_times)
    copied = export(planned, f.workdir, f.export)
    print(f"copied {len(copied)} files to {f.export}")
    return
  run_study(f.spec, f.workdir, command, max_runs=f.max_runs, step_times=step_times)


def _without_options(args: Sequence[str], names: Sequence[str]) -> list:
  """`args` less the options `names`, as `--name=value` or as `--name value`."""
  kept, skip = [], False
  for arg in args:
    if skip:
      skip = False
    elif arg.split("=")[0] in names:
      skip = "=" not in arg
    else:
      kept.append(arg)
  return kept


def define_flags() -> None:
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("spec", None, "Path to a study spec file.", lock_config=False)
  flags.DEFINE_string("workdir", None, "Folder of the study (runs/, report.md, figures/).",
                      required=True)
  flags.DEFINE_integer("max_runs", 0, "Stop after this many runs have finished in this "
                       "sitting (0: run the whole grid); rerun the command to go on.",
                       lower_bound=0)
  flags.DEFINE_string("export", None, "Redraw report.md and figures/ from the finished runs and "
                      "copy them and the runs' records (no checkpoints) to this folder; train "
                      "nothing. Copying its runs/ into a new --workdir resumes the grid there.")
  flags.DEFINE_string("step_times", "", "Comma-separated files of benchmarks/step_time.py's "
                      "JSON lines: the report's step-time ratio of each setting to its "
                      "baseline, the cost figure's axis, and --plan's speeds.")
  flags.DEFINE_bool("plan", False, "Print every planned run and, for the models that "
                    "--step_times timed, its hours; run nothing.")
  flags.mark_flags_as_required(["spec"])


if __name__ == "__main__":
  define_flags()
  cli.run(main, "adcl.study")
