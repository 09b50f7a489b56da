"""What a study's runs cost: step-time records, the step-time ratio of each paired row, and
the plan of a grid's hours before it runs.

Step times come from `benchmarks/step_time.py`, whose last line is a JSON record of one model
timed with and without the attack side by side in one process. Wall times of runs made in
several sittings mix machines of different speeds; a ratio from one record does not.
"""

from typing import Optional, Sequence

import ml_collections
import numpy as np

from adcl import configs, paths
from adcl.study import spec as spec_lib


def read_step_times(files: str) -> list:
  """The records of benchmarks/step_time.py (one JSON object per line) in the comma-separated
  `files`; a file that is missing or holds anything else is a ValueError naming it."""
  records = []
  for path in filter(None, (p.strip() for p in files.split(","))):
    try:
      text = paths.resolve(path).read_text()
    except OSError as error:
      raise ValueError(f"--step_times: {path}: {error.strerror or error}") from None
    for number, record in paths.parse_jsonl(text):
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
    fraction = float(config.adv.fraction)
    variant = "clae" if fraction == 1.0 else f"clae_fraction_{fraction}"
  return (config.model.architecture, config.model.width, config.data.image_size,
          config.train.batch_size, config.model.dtype, variant)


def measured_speed(records: Sequence[dict], config: ml_collections.ConfigDict,
                   ) -> Optional[tuple[float, int]]:
  """(source images/s, copies) of `config`'s step from the step_time records that timed its
  model, input and attack: the first at its batch (copies 1), else the first at a batch b
  that divides its batch B, standing for B / b copies of that setup in data parallel (copies
  B / b, its rate times B / b: an upper bound, which leaves out the gradient all-reduce). None
  where no record did."""
  architecture, width, size, batch, dtype, variant = model_key(config)
  model, scaled = [architecture, width, size, dtype], None
  for record in records:
    rate = record.get(f"{variant}_images_per_s")
    if not rate or [record.get(k) for k in ("architecture", "width", "image_size",
                                            "dtype")] != model:
      continue
    if record.get("batch") == batch:
      return rate, 1
    if scaled is None and record.get("batch") and batch % record["batch"] == 0:
      copies = batch // record["batch"]
      scaled = rate * copies, copies
  return scaled


def measured_images_per_s(records: Sequence[dict], config: ml_collections.ConfigDict,
                          ) -> Optional[float]:
  """Source images/s of `config`'s step (measured_speed's rate); None where no record timed
  its model."""
  speed = measured_speed(records, config)
  return speed[0] if speed else None


def step_time_ratios(spec, planned: Sequence[spec_lib.PlannedRun],
                     records: Sequence[dict]) -> dict:
  """{(setting, other): its step time over the other's} for each of spec.comparisons(), from
  the first record that timed both side by side; pairs without such a record are left out."""
  config_of = {p.setting: p.config for p in planned}
  ratios = {}
  for name, other in spec_lib.comparisons(spec):
    for record in records:  # Both from one record: timed side by side.
      ours = measured_images_per_s([record], config_of[name])
      theirs = measured_images_per_s([record], config_of[other])
      if ours and theirs:
        ratios[name, other] = theirs / ours
        break
  return ratios


def time_ratio(runs: dict, name: str, baseline: str) -> float:
  """Mean train wall time of `name` over that of `baseline` (nan if either has no run).
  runs: {setting: {seed: summary with 'train_seconds'}}."""
  ours = [r["train_seconds"] for r in runs.get(name, {}).values()]
  theirs = [r["train_seconds"] for r in runs.get(baseline, {}).values()]
  if not ours or not theirs:
    return float("nan")
  return float(np.mean(ours) / np.mean(theirs))


def run_images(config: ml_collections.ConfigDict) -> Optional[int]:
  """Source images one run trains on (steps x batch); None for a dataset of unknown size."""
  if config.train.num_steps > 0:
    return config.train.num_steps * config.train.batch_size
  size = configs.TRAIN_IMAGES.get(config.data.name)
  if size is None:
    return None
  return config.train.num_epochs * (size // config.train.batch_size) * config.train.batch_size


def step_hours(run: spec_lib.PlannedRun, step_times: Sequence[dict]) -> Optional[float]:
  """Hours `run`'s training steps take at the speed of the step_time record that timed its
  model (measured_images_per_s); None where no record did or the dataset's size is unknown."""
  images, speed = run_images(run.config), measured_images_per_s(step_times, run.config)
  return images / speed / 3600 if images and speed else None


def time_left(left: Sequence[spec_lib.PlannedRun], finished_here: Sequence[spec_lib.PlannedRun],
              seconds_here: float, step_times: Sequence[dict]) -> str:
  """'N runs left, about M min (how)' for the unfinished runs `left`, estimated from the runs
  this sitting finished in `seconds_here`.

  Where step_time records time every one of those runs, the runs left take their step hours
  times this sitting's wall time over its step hours (evaluation and the input included): a
  grid's runs differ in width and attack, so a mean time per run misleads. Otherwise this
  sitting's mean per run.
  """
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


PLAN_HEADER = ("run", "data", "model (arch, width, px, batch, dtype, step)", "epochs",
               "images (M)", "images/s (x copies of the timed batch)", "hours")


def plan_rows(planned: Sequence[spec_lib.PlannedRun], step_times: Sequence[dict],
              finished: Sequence[spec_lib.PlannedRun] = ()) -> list:
  """One row (PLAN_HEADER's columns) per planned run: its model key, the images it trains on
  and, where a step_time record (read_step_times) timed that model, the hours it takes at
  that speed; the `finished` runs are marked. A last row sums the hours, and those still to
  run apart."""
  done_keys = {(run.setting, run.seed) for run in finished}
  rows, total, left, unmeasured = [], 0.0, 0.0, 0
  for run in planned:
    c, images = run.config, run_images(run.config)
    measured, hours = measured_speed(step_times, c), step_hours(run, step_times)
    speed = measured and (f"{measured[0]}" + (f" (x{measured[1]})" if measured[1] > 1 else ""))
    done = (run.setting, run.seed) in done_keys
    total += hours or 0.0
    left += 0.0 if done else (hours or 0.0)
    unmeasured += hours is None
    rows.append([f"{run.setting} seed {run.seed}{' (done)' if done else ''}", c.data.name,
                 " ".join(map(str, model_key(c))),
                 c.train.num_epochs if c.train.num_steps <= 0 else "–",
                 f"{images / 1e6 if images else float('nan'):.1f}", speed if speed else "–",
                 f"{hours:.1f}" if hours else "–"])
  rows.append(["all", "", "", "", "", "", f"{total:.1f}, {left:.1f} left"
               + (f" (+{unmeasured} runs not timed)" if unmeasured else "")])
  return rows
