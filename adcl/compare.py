"""Runs side by side: `python -m adcl.compare DIR1 DIR2 ... [--names a,b] [--output DIR]`.

Reads each workdir's eval.json (adcl.evaluate) and metrics.jsonl (adcl.train), prints a
markdown table with one column per run and the difference of every later run to the first
(put the baseline first), and writes it with a bar chart to OUTPUT/compare.md and compare.png;
where runs logged kNN during training (eval.every), their curves too, with the raw-pixel kNN
of their eval.json as the reference line (compare_knn.png).
"""

import os
from typing import Optional, Sequence

import numpy as np

from adcl import cli, errors, figures, paths

# Metrics drawn in the chart (all percentages); the table lists every metric found.
CHART_PREFIXES = ("knn_top1", "linear_top1", "robust_")


def summarize(workdir: str) -> dict:
  """The numbers of one run: eval.json's metrics, the final training-time kNN, the median
  images/s of training and the step reached. Raises ValueError if the run has neither file."""
  eval_path, metrics_path = (paths.resolve(workdir) / n for n in ("eval.json", "metrics.jsonl"))
  if not (eval_path.exists() or metrics_path.exists()):
    raise ValueError(f"{workdir}: neither eval.json nor metrics.jsonl; train it with adcl.train "
                     "and evaluate it with adcl.evaluate first")
  summary = {}
  if metrics_path.exists():
    records = paths.read_jsonl(metrics_path)
    knn = [r["knn_top1"] for r in records if "knn_top1" in r]
    # The first logged interval holds the compilation: leave it out of the speed.
    speeds = [r["images_per_s"] for r in records[1:] if "images_per_s" in r]
    if knn:
      summary["train_knn_top1"] = float(knn[-1])
    if speeds:
      summary["images_per_s"] = float(np.median(speeds))
    if records and "step" in records[-1]:
      summary["step"] = int(records[-1]["step"])
  saved = paths.read_json_object(
      eval_path, f"write it again with python -m adcl.evaluate --workdir {workdir}")
  if saved is not None:
    summary.update({k: v for k, v in saved.items() if isinstance(v, (int, float))})
  return summary


def markdown_table(names: Sequence[str], summaries: Sequence[dict]) -> str:
  """| metric | run 1 | ... | run i - run 1 | ... |, one row per metric any run has."""
  keys = [k for k in _ordered_keys(summaries)]
  header = ["metric", *names, *[f"{n} − {names[0]}" for n in names[1:]]]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for key in keys:
    values = [s.get(key) for s in summaries]
    cells = [_cell(v) for v in values]
    for v in values[1:]:
      both = v is not None and values[0] is not None
      cells.append(_cell(v - values[0], signed=True) if both else "–")
    lines.append(f"| {key} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _ordered_keys(summaries):
  keys = []
  for summary in summaries:
    keys += [k for k in summary if k not in keys]
  return keys


def _cell(value, signed: bool = False) -> str:
  if value is None:
    return "–"
  if isinstance(value, int) and not isinstance(value, bool):
    return f"{value:+d}" if signed else str(value)
  return f"{value:+.2f}" if signed else f"{value:.2f}"


def chart_metrics(summaries: Sequence[dict]) -> dict:
  """{metric: [value per run]} for the percentage metrics every run has."""
  keys = [k for k in _ordered_keys(summaries) if k.startswith(CHART_PREFIXES)
          and all(k in s for s in summaries)]
  return {k: [s[k] for s in summaries] for k in keys}


def compare(workdirs: Sequence[str], names: Optional[Sequence[str]] = None,
            output: Optional[str] = None) -> str:
  """The markdown table of `workdirs`; with `output`, also writes compare.md and compare.png."""
  names = list(names) if names else [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(names) != len(workdirs):
    raise ValueError(f"--names has {len(names)} names for {len(workdirs)} workdirs")
  summaries = [summarize(w) for w in workdirs]
  table = markdown_table(names, summaries)
  if output:
    output = paths.resolve(output)
    paths.write_atomic(output / "compare.md", table)
    metrics = chart_metrics(summaries)
    if metrics:
      figures.save(figures.comparison(names, metrics), output / "compare.png")
    curves = [knn_series(w) for w in workdirs]
    if any(len(steps) > 1 for steps, _ in curves):
      pixel_knn = next((s["pixels_knn_top1"] for s in summaries if "pixels_knn_top1" in s), None)
      figures.save(figures.knn_curves(names, curves, pixel_knn), output / "compare_knn.png")
  return table


def knn_series(workdir: str):
  """(steps, kNN top-1) logged during training in the workdir's metrics.jsonl."""
  records = sorted((r for r in paths.read_jsonl(paths.resolve(workdir) / "metrics.jsonl")
                    if "knn_top1" in r), key=lambda r: r["step"])
  return [r["step"] for r in records], [r["knn_top1"] for r in records]


def main(argv):
  from absl import flags

  f = flags.FLAGS
  workdirs = argv[1:]
  if len(workdirs) < 2:
    raise errors.UsageError("give two or more workdirs (the baseline first)")
  table = compare(workdirs, f.names.split(",") if f.names else None, f.output)
  print(table, end="")
  print(f"wrote {os.path.join(f.output, 'compare.md')} and compare.png")


def define_flags(flag_values=None) -> None:
  """The command's flags, on `flag_values` (default: absl's global FLAGS)."""
  from absl import flags
  fv = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_string("names", None, "Comma-separated run names (default: the folder names).",
                      flag_values=fv)
  flags.DEFINE_string("output", "compare", "Folder for compare.md and compare.png.",
                      flag_values=fv)


if __name__ == "__main__":
  define_flags()
  cli.run(main, "adcl.compare")
