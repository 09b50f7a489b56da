"""`python -m adcl.study --spec configs/studies/NAME.py --workdir DIR [--spec.KEY=VALUE ...]`.

Runs a grid of settings x seeds one run after another, evaluates each with `adcl.evaluate`,
and writes DIR/report.md with its figures in DIR/figures/, rewritten after every run.
Rerunning the same command resumes: finished runs are read back, a half-trained run continues
from its latest checkpoint, a trained but unevaluated run is only evaluated.

`--max_runs N` stops after N runs of this sitting; `--export DEST` copies the report and the
finished runs' records (no checkpoints) to DEST, and DEST/runs copied into a new workdir
resumes the grid there. `--step_times FILE[,FILE]` (benchmarks/step_time.py's JSON lines) adds
each paired row's step-time ratio; `--plan` prints every run and, from those records, its hours.
"""

import shlex
import sys
from typing import Sequence

from absl import flags

from adcl import cli, errors
from adcl.study import cost, report, runner, spec as spec_lib


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise errors.UsageError(f"unexpected arguments {argv[1:]}")
  step_times = cost.read_step_times(f.step_times)  # Before anything runs: a bad file is named.
  study = spec_lib.parse(f.spec)
  planned = spec_lib.plan(study, f.workdir)
  if f.plan:
    finished = [run for run in planned if runner.is_finished(run)]
    print(report.plan_table(planned, step_times, finished), end="")
    return
  # The report names the command that makes the whole grid, without this sitting's options.
  command = "python -m adcl.study " + " ".join(
      shlex.quote(a) for a in without_options(sys.argv[1:], ("--max_runs", "--export")))
  if f.export:  # The report redrawn from the finished runs, then copied with their records.
    runner.write_report(study, planned, f.workdir, command, step_times)
    copied = runner.export(planned, f.workdir, f.export)
    print(f"copied {len(copied)} files to {f.export}")
    return
  runner.run_study(study, f.workdir, command, max_runs=f.max_runs, step_times=step_times)


def without_options(args: Sequence[str], names: Sequence[str]) -> list:
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


def define_flags(flag_values=None) -> None:
  """The command's flags, on `flag_values` (default: absl's global FLAGS)."""
  from ml_collections import config_flags

  fv = flags.FLAGS if flag_values is None else flag_values
  config_flags.DEFINE_config_file("spec", None, "Path to a study spec file.", lock_config=False,
                                  flag_values=fv)
  flags.DEFINE_string("workdir", None, "Folder of the study (runs/, report.md, figures/).",
                      required=True, flag_values=fv)
  flags.DEFINE_integer("max_runs", 0, "Stop after this many runs have finished in this "
                       "sitting (0: run the whole grid); rerun the command to go on.",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_string("export", None, "Redraw report.md and figures/ from the finished runs and "
                      "copy them and the runs' records (no checkpoints) to this folder; train "
                      "nothing. Copying its runs/ into a new --workdir resumes the grid there.",
                      flag_values=fv)
  flags.DEFINE_string("step_times", "", "Comma-separated files of benchmarks/step_time.py's "
                      "JSON lines: the report's step-time ratio of each setting to its "
                      "baseline, the cost figure's axis, and --plan's speeds.", flag_values=fv)
  flags.DEFINE_bool("plan", False, "Print every planned run and, for the models that "
                    "--step_times timed, its hours; run nothing.", flag_values=fv)
  flags.mark_flags_as_required(["spec"], flag_values=fv)


if __name__ == "__main__":
  define_flags()
  cli.run(main, "adcl.study")
