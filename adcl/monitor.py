"""What a run reports: `workdir/metrics.jsonl`, TensorBoard events, a console progress line."""

import datetime
import json
import time

from absl import logging
import tensorflow as tf

from adcl import paths


class Monitor:
  """Adds one JSON object per logged step to metrics.jsonl and mirrors it to TensorBoard
  (process 0 only). The file is rewritten whole at each log step (object stores such as gs://
  cannot append): a few hundred bytes per logged step."""

  def __init__(self, workdir: str, total_steps: int, global_batch: int, start_step: int,
               enabled: bool = True):
    self.total_steps, self.global_batch, self.enabled = total_steps, global_batch, enabled
    self._last_time, self._last_step = time.perf_counter(), start_step
    if enabled:
      self._path = paths.resolve(workdir) / "metrics.jsonl"
      # A resumed run keeps the lines of the runs before it.
      self._lines = [json.dumps(r) for r in paths.read_jsonl(self._path)]
      self._writer = tf.summary.create_file_writer(str(paths.resolve(workdir) / "tensorboard"))

  def throughput(self, step: int) -> dict:
    """steps/s and images/s (source images) since the previous call; resets the clock."""
    now = time.perf_counter()
    steps, seconds = step - self._last_step, max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    return {"steps_per_s": steps / seconds, "images_per_s": steps * self.global_batch / seconds}

  def write(self, step: int, metrics: dict) -> None:
    """metrics: python floats; written as {"step": step, **metrics}."""
    if not self.enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self._lines.append(json.dumps(record))
    paths.write_atomic(self._path, "\n".join(self._lines) + "\n")
    with self._writer.as_default(step=int(step)):
      for key, value in metrics.items():
        tf.summary.scalar(key, float(value))
    self._writer.flush()

  def progress(self, step: int, metrics: dict) -> None:
    """One console line: step, loss, speed and ETA."""
    rate = metrics.get("steps_per_s", 0.0)
    eta = datetime.timedelta(seconds=int((self.total_steps - step) / rate)) if rate else "?"
    parts = [f"step {step}/{self.total_steps}", f"loss {metrics['loss']:.4f}"]
    if "knn_top1" in metrics:
      parts.append(f"kNN top-1 {metrics['knn_top1']:.2f}%")
    if rate:
      parts += [f"{metrics['images_per_s']:.0f} img/s", f"{rate:.2f} steps/s", f"ETA {eta}"]
    logging.info(" | ".join(parts))

  def close(self) -> None:
    if self.enabled:
      self._writer.close()
