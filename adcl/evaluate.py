"""`python -m adcl.evaluate --workdir DIR [--checkpoint STEP] [--robust_examples 1000]`.

Evaluates one checkpoint (adcl.evaluation.protocol: kNN, the linear probe, the same on the raw
input pixels, robust accuracy; docs/method.md §5), writes DIR/eval.json, prints it as a table, and draws the run's figures
(training curves, adversarial views, embedding projection) in DIR/figures/. eval.json and each
figure are written whole, then renamed, and only after everything was computed: a failure
leaves the previous files as they were.
"""

import json
from typing import Optional

from absl import flags

from adcl import build, cli, errors, inspect, paths
from adcl.evaluation import protocol, splits


def evaluate_workdir(workdir: str, step: Optional[int] = None, robust_examples: int = 1000,
                     figures: bool = True, figure_examples: int = 2000) -> tuple[dict, list]:
  """Evaluate checkpoint `step` (default: the latest) of `workdir` and write eval.json (and,
  with `figures`, the figures). Returns (the metrics, the paths written)."""
  restored = build.restore(workdir, step)
  data = {split: splits.load_split(restored.config, split) for split in ("train", "test")}
  result = {"step": restored.step, **protocol.evaluate(
      restored.model, restored.variables, restored.config, data, robust_examples)}
  written = [paths.write_atomic(paths.resolve(workdir) / "eval.json",
                                json.dumps(result, indent=1))]
  if figures:
    run = inspect.Run(restored.workdir, restored.step, restored.config, restored.model,
                      restored.variables)
    images, labels = data["test"].head(figure_examples)
    written += run.write_figures(images, labels, pixel_knn=result.get("pixels_knn_top1"))
  return result, [str(w) for w in written]


def main(argv):
  if len(argv) > 1:
    raise errors.UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  result, written = evaluate_workdir(f.workdir, f.checkpoint if f.checkpoint >= 0 else None,
                                     f.robust_examples, f.figures, f.figure_examples)
  width = max(len(k) for k in result)
  for key, value in result.items():
    print(f"{key:<{width}}  {value:.2f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
  for path in written:
    print(f"wrote {path}")


def define_flags(flag_values=None) -> None:
  """The command's flags, on `flag_values` (default: absl's global FLAGS)."""
  fv = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_string("workdir", None, "Training workdir (with checkpoints/).", required=True,
                      flag_values=fv)
  flags.DEFINE_integer("checkpoint", -1, "Step to evaluate (default: the latest).",
                       flag_values=fv)
  flags.DEFINE_integer("robust_examples", 1000,
                       "Test images attacked for robust accuracy (0: no attack).", flag_values=fv)
  flags.DEFINE_bool("figures", True, "Also write the run's figures to WORKDIR/figures/.",
                    flag_values=fv)
  flags.DEFINE_integer("figure_examples", 2000, "Test images in the embedding projection.",
                       flag_values=fv)


if __name__ == "__main__":
  define_flags()
  cli.run(main, "adcl.evaluate")
