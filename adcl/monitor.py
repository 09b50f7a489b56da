"""What a run reports: `workdir/metrics.jsonl`, TensorBoard events, a console progress line."""

import datetime
import json
import os
import socket
import time

from absl import logging

from adcl import paths


class Monitor:
  """Adds one JSON object per logged step to metrics.jsonl and mirrors it to TensorBoard
  (process 0 only). The file is rewritten whole at each log step (object stores such as gs://
  cannot append): a few hundred bytes per logged step.

  History survives a crash: a run resumed from the checkpoint of step S trains the steps after
  S again, so lines of steps > S left by the lost segment are dropped from metrics.jsonl, and
  the TensorBoard events open with a SessionLog START at S + 1, on which TensorBoard purges the
  older events of those steps. Each step is then logged once.
  """

  def __init__(self, workdir: str, total_steps: int, global_batch: int, start_step: int,
               enabled: bool = True):
    self.total_steps, self.global_batch, self.enabled = total_steps, global_batch, enabled
    self._last_time, self._last_step = time.perf_counter(), start_step
    self._input_wait = 0.0
    if enabled:
      from tensorboard.compat.proto import event_pb2, summary_pb2

      self._path = paths.resolve(workdir) / "metrics.jsonl"
      records = paths.read_jsonl(self._path, keep_copy=True)  # Damaged lines: warned, skipped.
      kept = [r for r in records if isinstance(r.get("step"), int) and r["step"] <= start_step]
      self._lines = [json.dumps(r) for r in kept]
      if len(kept) < len(records):
        logging.info("Dropped %d lines of steps after %d from %s (a segment that stopped "
                     "before its checkpoint; those steps are trained again)",
                     len(records) - len(kept), start_step, self._path)
        paths.write_atomic(self._path, "".join(line + "\n" for line in self._lines))
      self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
      self._writer = event_writer(str(paths.resolve(workdir) / "tensorboard"))
      # Also at step 1: a run killed before its first checkpoint completed starts over.
      self._writer.add_event(event_pb2.Event(
          wall_time=time.time(), step=start_step + 1,
          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))

  def next_batch(self, batches):
    """next(batches), timed: the loop's wait for its input, reported by `throughput`."""
    start = time.perf_counter()
    batch = next(batches)
    self._input_wait += time.perf_counter() - start
    return batch

  def throughput(self, step: int) -> dict:
    """Since the previous call, which it resets: steps/s, images/s (source images), and
    input_wait_s / input_wait_fraction, the time the loop was blocked waiting for its next
    batch (a step dispatched without waiting runs ahead of the device, so a fraction near 0
    means the input kept up, and one near 1 that the accelerator starved)."""
    now = time.perf_counter()
    steps, seconds = step - self._last_step, max(now - self._last_time, 1e-9)
    wait, self._input_wait = self._input_wait, 0.0
    self._last_time, self._last_step = now, step
    return {"steps_per_s": steps / seconds, "images_per_s": steps * self.global_batch / seconds,
            "input_wait_s": wait, "input_wait_fraction": min(wait / seconds, 1.0)}

  def write(self, step: int, metrics: dict) -> None:
    """metrics: python floats; written as {"step": step, **metrics}."""
    if not self.enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self._lines.append(json.dumps(record))
    paths.write_atomic(self._path, "\n".join(self._lines) + "\n")
    summary = self._summary_pb2.Summary(value=[
        self._summary_pb2.Summary.Value(tag=key, simple_value=float(value))
        for key, value in metrics.items()])
    self._writer.add_event(self._event_pb2.Event(wall_time=time.time(), step=int(step),
                                                 summary=summary))
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


def event_writer(directory: str):
  """A TensorBoard event file writer on `directory`: `add_event`, `flush`, `close`.

  TensorBoard's EventFileWriter opens its file through TensorFlow's file system when
  TensorFlow is installed, an import of seconds at the start of every run; it is kept for
  remote folders (gs://), which need that file system. A local folder gets the same records
  (TensorBoard's RecordWriter) in a plain file."""
  if "://" in directory:
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    return EventFileWriter(directory)
  return LocalEventWriter(directory)


class LocalEventWriter:
  """EventFileWriter's file, written synchronously to a local folder."""

  def __init__(self, directory: str):
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    os.makedirs(directory, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.0")
    self._records = RecordWriter(open(os.path.join(directory, name), "wb"))
    self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def add_event(self, event) -> None:
    self._records.write(event.SerializeToString())

  def flush(self) -> None:
    self._records.flush()

  def close(self) -> None:
    self._records.close()
