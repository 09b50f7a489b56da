"""A study's report.md and figures, from the summaries of its finished runs.

A summary is one finished run's numbers: eval.json's metrics, images/s, the step reached
(adcl.compare.summarize), plus its setting, seed, train and eval seconds and whether a
training segment was killed (runner.run_summary).
"""

from typing import Optional, Sequence

import numpy as np

from adcl import configs, figures, paths
from adcl.study import cost, spec as spec_lib, stats

# The accuracies the report aggregates (eval.json keys), in the order of its columns.
METRICS = ("knn_top1_backbone", "knn_top1_embedding", "linear_top1")
METRIC_LABELS = {"knn_top1_backbone": "kNN (backbone)", "knn_top1_embedding": "kNN (projector)",
                 "linear_top1": "linear probe"}
# Metrics whose margin over the raw pixels (eval.json's METRIC_minus_pixels) the report shows.
PIXEL_MARGINS = ("knn_top1_backbone", "linear_top1")


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  """A markdown table; every cell as str()."""
  line = lambda cells: "| " + " | ".join(map(str, cells)) + " |"
  return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def plan_table(planned, step_times: Sequence[dict], finished: Sequence = ()) -> str:
  """`--plan`'s markdown: cost.plan_rows under cost.PLAN_HEADER."""
  return table(cost.PLAN_HEADER, cost.plan_rows(planned, step_times, finished)) + "\n"


def aggregate(spec, summaries: Sequence[dict]) -> dict:
  """{setting: {seed: summary}} of the finished runs, in the spec's setting order."""
  runs = {name: {} for name in spec.settings}
  for s in summaries:
    runs[s["setting"]][s["seed"]] = s
  return runs


def _pm(values: Sequence[float], digits: int = 2) -> str:
  """'mean ± std' over the values (the mean alone for one, '–' for none)."""
  return _pm_stats(stats.mean_std(values), digits)


def _pm_stats(mean_std: tuple, digits: int = 2) -> str:
  mean, std, n = mean_std
  if n == 0:
    return "–"
  return f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _interval_text(interval) -> str:
  mean, half, n = interval
  if n == 0:
    return "–"
  return f"{mean:+.2f}" if n < 2 else f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"


def _ratio_text(ratio: float) -> str:
  return "–" if np.isnan(ratio) else f"{ratio:.2f}x"


def multiplicity_text(runs: dict, pairs: Sequence[tuple]) -> str:
  """What the table's intervals mean together: of k intervals at 95%, about k/20 exclude 0 by
  chance alone, so each verdict is checked again at the Bonferroni level."""
  values = [(name, other, m, stats.paired_values(runs, name, other, m))
            for name, other in pairs for m in METRICS]
  values = [v for v in values if len(v[3]) >= 2]
  k = len(values)
  if not k:
    return "No interval yet: a paired interval needs two seeds of both settings."
  level = stats.bonferroni_confidence(k)
  kept = [f"{name} − {other} {METRIC_LABELS[m]}: {_interval_text(i)}"
          for name, other, m, diffs in values
          for i in [stats.paired_interval(diffs, level)] if stats.verdict(i) != "within noise"]
  return (f"{k} intervals of 2 seeds or more: at 95% each, about {k / 20:.1f} would exclude 0 "
          f"by chance alone. At the Bonferroni level ({100 - 5 / k:.2f}% each, 95% for the "
          "family), " + ("; ".join(kept) + " still exclude 0." if kept
                         else "none excludes 0: a verdict above is a lead, not a finding."))


def sweep_rows(spec, planned, runs: dict, sweep) -> list:
  """One row per setting of the sweep: its x value, (mean, std, n) of each metric and of its
  paired Δ to its baseline."""
  config_of = {p.setting: p.config for p in planned}
  rows = []
  for name in sweep.settings:
    done = runs[name]
    baseline = spec.settings[name].baseline
    row = {"setting": name, "x": configs.lookup(config_of[name], sweep.key), "n": len(done),
           "delta": stats.mean_std(stats.paired_values(runs, name, baseline, METRICS[0])
                                   if baseline else [])}
    row.update({m: stats.mean_std([r[m] for r in done.values()]) for m in METRICS})
    rows.append(row)
  return rows


def gain_growth_rows(spec, runs: dict, sweep) -> list:
  """For the sweep's settings that have a baseline: each one's paired gain over its baseline
  minus the first one's, seed by seed (stats.gain_differences), as [setting, its baseline,
  first, first's baseline, [paired interval per metric]]. A setting that shares the first one's
  baseline is left out: its difference of gains is the plain difference of the two settings,
  which spec.comparisons can pair."""
  pairs = [(name, spec.settings[name].baseline) for name in sweep.settings
           if spec.settings[name].baseline]
  return [[*pair, *pairs[0],
           [stats.paired_interval(stats.gain_differences(runs, pair, pairs[0], m))
            for m in METRICS]] for pair in pairs[1:] if pair[1] != pairs[0][1]]


def machine_names(summaries: Sequence[dict]) -> dict:
  """{machine label: 'M1', 'M2', ...} in the order the runs name them."""
  labels = dict.fromkeys(label for s in summaries for label in s.get("machines", []))
  return {label: f"M{i + 1}" for i, label in enumerate(labels)}


def machine_crossing(runs: dict, *settings: str) -> str:
  """Whether the paired runs of `settings` share one machine, seed by seed: 'one' when every
  seed's runs do, else the seeds whose runs cross machines or have no record of them."""
  crossing, unrecorded = [], []
  for seed in sorted(set.intersection(*(set(runs.get(name, {})) for name in settings))):
    records = [runs[name][seed].get("machines", []) for name in settings]
    if not all(records):
      unrecorded.append(seed)
    elif len(set().union(*records)) > 1:
      crossing.append(seed)
  parts = ([f"cross: seeds {', '.join(map(str, crossing))}"] if crossing else []) + (
      [f"unrecorded: seeds {', '.join(map(str, unrecorded))}"] if unrecorded else [])
  return "; ".join(parts) or "one"


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
        f"{stats.sampling_noise(accuracy, test_images[0]):.2f} points; the seed-to-seed spread "
        "above includes it.")
  return [part for line in lines for part in (line, "")]


def report_markdown(spec, planned: Sequence, summaries: Sequence[dict], command: str,
                    title: str, figure_names: Sequence[str] = (),
                    step_ratios: Optional[dict] = None) -> str:
  """report.md; `step_ratios` ({(setting, other): step time over the other's}) adds a column."""
  step_ratios = step_ratios or {}
  runs = aggregate(spec, summaries)
  total = len(planned)
  lines = [f"# {title}", "", f"Produced by `{command}`.", "",
           f"Base config `{spec.config}`; every run: {spec_lib.overrides_text(spec.common)}.",
           f"Finished runs: {len(summaries)} of {total}."
           + ("" if len(summaries) == total else " The grid is not finished; rerun the command "
              "to resume it."), ""]
  lines += ["## Settings (mean ± std over seeds)", "",
            "The encoder's margin over the raw pixels of its input (same protocol) is "
            "`− pixels`; a representation that does not beat its input has a negative one.", ""]
  rows = []
  for name, setting in spec.settings.items():
    done = runs[name].values()
    rows.append([name, spec_lib.overrides_text(setting.overrides), len(done),
                 *[_pm([r[m] for r in done]) for m in METRICS],
                 *[_pm([r[f"{m}_minus_pixels"] for r in done if f"{m}_minus_pixels" in r])
                   for m in PIXEL_MARGINS],
                 _pm([r["train_seconds"] for r in done], 0),
                 _pm([r.get("images_per_s", np.nan) for r in done], 0)])
  lines += [table(["setting", "overrides", "seeds", *(METRIC_LABELS[m] for m in METRICS),
                   *(f"{METRIC_LABELS[m]} − pixels" for m in PIXEL_MARGINS),
                   "train wall time (s)", "images/s"], rows)]
  lines += ["", *_pixel_lines(summaries)]
  paired = spec_lib.comparisons(spec)
  if paired:
    lines += ["", "## Against the baseline (paired by seed: setting − baseline"
              + ("; then the spec's comparisons, setting − the other)" if spec.comparisons
                 else ")"), "",
              "Mean difference over the seeds both settings finished, with its 95% interval "
              "(paired t over seeds); a gain or a loss only where the interval excludes 0. "
              "Machines: whether each pair of runs shares one machine (adcl/machine.py); "
              "machines differ in float rounding, which training carries into the accuracy."
              + (" Step-time ratio: the compiled steps timed side by side in one process "
                 "(benchmarks/step_time.py, --step_times); the wall-time ratio compares runs "
                 "that may have run on different machines." if step_ratios else ""), ""]
    rows = []
    for name, baseline in paired:
      intervals = [stats.paired_interval(stats.paired_values(runs, name, baseline, m))
                   for m in METRICS]
      rows.append([name, baseline, intervals[0][2],
                   *[f"{_interval_text(i)} ({stats.verdict(i)})" if i[2] else "–"
                     for i in intervals],
                   machine_crossing(runs, name, baseline),
                   _ratio_text(cost.time_ratio(runs, name, baseline)),
                   *([f"{step_ratios[name, baseline]:.2f}x" if (name, baseline) in step_ratios
                      else "–"] if step_ratios else [])])
    lines += [table(["setting", "baseline", "paired seeds",
                     *(f"Δ {METRIC_LABELS[m]}" for m in METRICS), "machines",
                     "train wall time ratio",
                     *(["step-time ratio"] if step_ratios else [])], rows)]
    lines += ["", multiplicity_text(runs, paired)]
  for sweep_name, sweep in spec.sweeps.items():
    lines += ["", f"## Sweep: {sweep_name} ({sweep.key})", ""]
    rows = [[row["x"], row["setting"], row["n"], *(_pm_stats(row[m]) for m in METRICS),
             _pm_stats(row["delta"])] for row in sweep_rows(spec, planned, runs, sweep)]
    lines += [table([sweep.key, "setting", "seeds", *(METRIC_LABELS[m] for m in METRICS),
                     f"Δ {METRIC_LABELS[METRICS[0]]} vs its baseline"], rows)]
    growth = gain_growth_rows(spec, runs, sweep)
    if growth:
      lines += ["", "Does the gain change along the sweep? Each setting's gain over its baseline "
                "minus the first setting's gain over its own, paired by seed (at the seeds where "
                "all four settings finished), with its 95% interval:", ""]
      rows = [[f"({name} − {base}) − ({first} − {first_base})", intervals[0][2],
               *[f"{_interval_text(i)} ({stats.verdict(i)})" if i[2] else "–"
                 for i in intervals],
               machine_crossing(runs, name, base, first, first_base)]
              for name, base, first, first_base, intervals in growth]
      lines += [table(["difference of gains", "paired seeds",
                       *(f"Δ {METRIC_LABELS[m]}" for m in METRICS), "machines"], rows)]
  lines += ["", "## Every run", ""]
  names = machine_names(summaries)
  rows = []
  for name in spec.settings:
    for seed, r in sorted(runs[name].items()):
      note = " (resumed; killed segment not timed)" if r["interrupted"] else ""
      rows.append([name, seed, r.get("step", "–"), *(f"{r[m]:.2f}" for m in METRICS),
                   f"{r['train_seconds']:.0f}{note}", f"{r['eval_seconds']:.0f}",
                   f"{r.get('images_per_s', float('nan')):.0f}",
                   " ".join(names[label] for label in r.get("machines", [])) or "–"])
  lines += [table(["setting", "seed", "step", *(METRIC_LABELS[m] for m in METRICS), "train s",
                   "eval s", "images/s", "machine"], rows)]
  if names:
    lines += ["", "Machines: " + "; ".join(f"{n} {label}" for label, n in names.items())
              + ". A run resumed or evaluated elsewhere names each of its machines; – : not "
              "recorded (a run made before records named machines)."]
  if figure_names:
    lines += ["", "Figures: " + ", ".join(f"[{n}](figures/{n})" for n in figure_names) + ".", ""]
  return "\n".join(lines)


def write_report(spec, planned, summaries: Sequence[dict], workdir: str, command: str,
                 title: str, step_times: Sequence[dict] = ()) -> list:
  """The figures of the finished runs' `summaries` in `workdir`/figures, then report.md
  naming them; returns the written paths. `step_times`: cost.read_step_times records."""
  step_ratios = cost.step_time_ratios(spec, planned, step_times)
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
              if s.baseline and runs[n] and runs[s.baseline]]
    # The step-time ratio where every point has one (one machine, side by side), else wall time.
    by_step = bool(paired) and all(pair in step_ratios for pair in paired)
    points = [{"setting": n,
               "cost": step_ratios[n, b] if by_step else cost.time_ratio(runs, n, b),
               **{m: stats.paired_interval(stats.paired_values(runs, n, b, m)) for m in METRICS}}
              for n, b in paired]
    if points:
      written.append(figures.save(
          figures.study_cost(points, METRICS, METRIC_LABELS, f"{title}: gain against cost",
                             "step time / baseline's" if by_step
                             else "train wall time / baseline's"),
          directory / "figures" / "cost.png"))
    for sweep_name, sweep in spec.sweeps.items():
      rows = [r for r in sweep_rows(spec, planned, runs, sweep) if r["n"]]
      if rows:
        written.append(figures.save(
            figures.study_sweep(sweep.key, rows, METRICS, METRIC_LABELS, f"{title}: {sweep_name}"),
            directory / "figures" / f"sweep_{sweep_name}.png"))
  report = report_markdown(spec, planned, summaries, command, title,
                           [paths.resolve(w).name for w in written], step_ratios)
  return [str(paths.write_atomic(directory / "report.md", report))] + [str(w) for w in written]
