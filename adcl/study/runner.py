"""Running a study's grid: each run trained (resuming), evaluated once and recorded; the report
after each; its finished records exported to another machine.

Layout: DIR/runs/SETTING/seed_S/ is an ordinary adcl workdir (checkpoints, metrics.jsonl,
eval.json) plus study_run.json, the run's record: its resolved config, train and eval seconds,
how far it got (training, trained, evaluated) and the machines that trained and evaluated it
(adcl.machine.identity, one entry per distinct machine).
"""

import functools
import json
import logging
import time
from typing import Optional, Sequence


from adcl import compare, configs, errors, machine, paths
from adcl.study import cost, report, spec as spec_lib

# What a finished run is read back from (run_summary): no checkpoints.
RECORD_FILES = ("study_run.json", "eval.json", "metrics.jsonl")


def _record_path(run: spec_lib.PlannedRun):
  return paths.resolve(run.workdir) / "study_run.json"


def read_record(run: spec_lib.PlannedRun) -> dict:
  """The run's record, {} for a run not started. A damaged record is set aside with one
  warning and the run goes on from its workdir's checkpoints; the time of its finished
  training segments is lost with it, so it counts as interrupted."""
  path = _record_path(run)
  try:
    return paths.read_json_object(path) or {}
  except errors.DamagedFile as error:
    aside = paths.set_aside(path)
    logging.getLogger("absl").warning("%s: moved to %s; the run resumes from its checkpoints",
                                      error, aside)
    return {"interrupted_segments": 1}


def write_record(run: spec_lib.PlannedRun, record: dict) -> None:
  paths.write_atomic(_record_path(run), json.dumps(record, indent=1))


def is_finished(run: spec_lib.PlannedRun) -> bool:
  return bool(read_record(run).get("evaluated"))


def check_same_config(run: spec_lib.PlannedRun, record: dict) -> None:
  """A run directory made with another config is not silently continued. The record's config
  is read in today's schema (configs.from_saved), so a key added or retired since is not a
  difference."""
  saved = record.get("config")
  if saved is None:
    return
  old, new = configs.flatten(configs.from_saved(saved)), configs.flatten(run.config)
  differ = [f"{key} {old[key]!r} -> {new[key]!r}" for key in old if old[key] != new[key]]
  if differ:
    raise ValueError(f"{run.workdir} was made with another config ({'; '.join(differ[:3])}); "
                     "move it away or use another --workdir")


def note_machine(record: dict) -> None:
  """Adds this process's machine to the record's `machines` unless it is there already."""
  here = machine.identity()
  machines = record.setdefault("machines", [])
  if machine.label(here) not in map(machine.label, machines):
    machines.append(here)


def execute(run: spec_lib.PlannedRun, evaluate_options: spec_lib.EvaluateOptions) -> dict:
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
  record.update(setting=run.setting, seed=run.seed, config=run.config.to_dict())
  record.setdefault("train_seconds", 0.0)
  record.setdefault("train_segments", 0)
  record.setdefault("interrupted_segments", 0)
  note_machine(record)
  if not record.get("trained"):
    if record.get("training"):  # The previous segment never finished.
      record["interrupted_segments"] += 1
    record["training"] = True
    write_record(run, record)
    start = time.perf_counter()
    train.run(run.config, run.workdir)
    record["train_seconds"] += time.perf_counter() - start
    record["train_segments"] += 1
    record.update(training=False, trained=True)
    write_record(run, record)
  start = time.perf_counter()
  evaluate.evaluate_workdir(run.workdir, robust_examples=evaluate_options.robust_examples,
                            figures=evaluate_options.figures)
  record.update(eval_seconds=time.perf_counter() - start, evaluated=True)
  write_record(run, record)
  return record


def run_summary(run: spec_lib.PlannedRun) -> Optional[dict]:
  """eval.json, images/s and wall times of a finished run; None if it is not finished."""
  record = read_record(run)
  if not record.get("evaluated"):
    return None
  summary = compare.summarize(run.workdir)
  summary.update(setting=run.setting, seed=run.seed, train_seconds=record["train_seconds"],
                 eval_seconds=record.get("eval_seconds", 0.0),
                 interrupted=record.get("interrupted_segments", 0) > 0,
                 machines=[machine.label(m) for m in record.get("machines", [])])
  return summary


def _check_evaluation(run: spec_lib.PlannedRun, log) -> None:
  """A finished run whose eval.json is missing or damaged is evaluated again: the damaged file
  is set aside, and the record says the run is trained but not evaluated."""
  record = read_record(run)
  if not record.get("evaluated"):
    return
  path = paths.resolve(run.workdir) / "eval.json"
  try:
    if paths.read_json_object(path) is not None:
      return
    reason = f"{path} is missing"
  except errors.DamagedFile as error:
    reason = f"{error}: moved to {paths.set_aside(path)}"
  log(f"{run.setting} seed {run.seed}: {reason}; evaluating it again")
  record["evaluated"] = False
  write_record(run, record)


def summaries(planned: Sequence[spec_lib.PlannedRun]) -> list:
  return [s for s in map(run_summary, planned) if s is not None]


def write_report(spec, planned, workdir: str, command: str, step_times: Sequence[dict] = ()
                 ) -> list:
  """report.md and figures/ of the finished runs of `planned` (report.write_report)."""
  return report.write_report(spec, planned, summaries(planned), workdir, command,
                             spec_lib.title_of(spec, workdir), step_times)


def export(planned: Sequence[spec_lib.PlannedRun], workdir: str, destination: str) -> list:
  """Copy report.md, figures/ and each finished run's RECORD_FILES (kilobytes, no checkpoints)
  from `workdir` to `destination`, in the same layout; returns the copied paths.

  A grid of many hours outlives the machine it started on (a preemptible VM, a session's
  disk): copying `destination/runs` into a new workdir resumes the grid there with those runs
  finished. Unfinished runs are not copied; they start again from step 0 on the new machine.
  """
  source, target = paths.resolve(workdir), paths.resolve(destination)
  files = [source / "report.md", *sorted((source / "figures").glob("*.png"))]
  for run in planned:
    if is_finished(run):
      files += [paths.resolve(run.workdir) / name for name in RECORD_FILES]
  copied = []
  for path in files:
    if path.exists():
      copy = target / path.relative_to(source)
      copy.parent.mkdir(parents=True, exist_ok=True)
      copied.append(path.copy(copy, overwrite=True))
  return [str(c) for c in copied]


def run_study(spec, workdir: str, command: str, max_runs: int = 0,
              log=functools.partial(print, flush=True), step_times: Sequence[dict] = ()) -> list:
  """Every planned run (resuming), the report after each; returns the planned runs.

  max_runs > 0 stops after that many runs of this sitting have finished, so that a grid of
  many hours can be run in sittings without killing a run halfway (whose time would be lost).
  """
  planned = spec_lib.plan(spec, workdir)
  for run in planned:  # Fail on a changed spec before training anything.
    check_same_config(run, read_record(run))
    _check_evaluation(run, log)
  evaluate_options = spec.evaluate
  started, finished_here = time.perf_counter(), []
  for index, run in enumerate(planned, 1):
    label = f"[{index}/{len(planned)}] {run.setting} seed {run.seed}"
    if is_finished(run):
      log(f"{label}: finished earlier")
      continue
    if max_runs and len(finished_here) >= max_runs:
      log(f"{label}: not started (--max_runs={max_runs} runs done in this sitting)")
      break
    log(f"{label}: running in {run.workdir}")
    begin = time.perf_counter()
    record = execute(run, evaluate_options)
    finished_here.append(run)
    result = compare.summarize(run.workdir)
    left = [r for r in planned if not is_finished(r)]
    log(f"{label}: done in {time.perf_counter() - begin:.0f} s (train {record['train_seconds']:.0f} s)"
        f" | kNN {result['knn_top1_backbone']:.2f}% | linear {result['linear_top1']:.2f}%"
        f" | {cost.time_left(left, finished_here, time.perf_counter() - started, step_times)}")
    write_report(spec, planned, workdir, command, step_times)
  for path in write_report(spec, planned, workdir, command, step_times):
    log(f"wrote {path}")
  return planned
