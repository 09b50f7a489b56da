"""`python -m adcl.train --config configs/NAME.py --workdir DIR [--config.key=value ...]`.

Trains CLAE (or, with adv.enabled=False, its baseline) and writes checkpoints, metrics.jsonl
and TensorBoard events to DIR. A DIR that holds a checkpoint is resumed from its latest one.
"""

import logging as pylogging
import os
import sys

# TensorFlow only feeds data: keep it off accelerators so it never takes their memory.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging
import jax
import ml_collections
import numpy as np
import tensorflow as tf
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags

from adcl import checkpoints, configs, distributed, evaluate, models, optim, step as step_lib
from adcl.data import pipeline, sources
from adcl.monitor import Monitor

tf.config.set_visible_devices([], "GPU")

class NonFiniteLoss(RuntimeError):
  """The loss (or gradient) stopped being finite; the last good checkpoint is kept."""


class Stopped(RuntimeError):
  """SIGTERM or SIGINT: the run stopped after a step and checkpointed it; rerun to resume."""

  def __init__(self, message: str, signal_name: str):
    super().__init__(message)
    self.exit_code = 143 if signal_name == "SIGTERM" else 130  # 128 + the signal's number.


def total_steps(config: ml_collections.ConfigDict, per_epoch: int) -> int:
  return config.train.num_steps if config.train.num_steps > 0 else config.train.num_epochs * per_epoch


def knn_eval(embed_fn, state, train_data, test_data, config, sharding) -> float:
  """kNN top-1 (percent) of the clean encoder on the whole test set (REFERENCE §5)."""
  (train_x, train_y), (test_x, test_y) = train_data, test_data
  embed = lambda x: evaluate.embed_all(embed_fn, state.params, state.batch_stats, x,
                                       config.eval.batch_size, sharding)
  sigma = config.eval.knn_sigma or config.loss.temperature
  return evaluate.knn_accuracy(embed(train_x), train_y, embed(test_x), test_y,
                               config.eval.knn_k, sigma)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Train to the end of the schedule (resuming from `workdir`); returns the last metrics."""
  # ---- Checks that need nothing built: fail in a second, before any compilation.
  configs.validate(config, jax.device_count(), jax.process_count())
  configs.validate_dataset_name(config)
  ckpt = checkpoints.Checkpoints(workdir, config.train.keep_checkpoints)
  resume_step = ckpt.latest_step()
  if resume_step is not None:
    ckpt.check_compatible(config)

  # ---- Data (host memory) and the pieces of the step.
  train_images, train_labels = sources.load(config.data, "train")
  test_images, test_labels = sources.load(config.data, "test")
  channels = train_images.shape[-1]
  per_epoch = pipeline.steps_per_epoch(len(train_images), config.train.batch_size)
  num_steps = total_steps(config, per_epoch)
  mesh = step_lib.data_mesh()
  replicated, data_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  model = models.from_config(config.model)
  tx = optim.make_optimizer(config, per_epoch, num_steps)
  image_shape = (config.data.image_size, config.data.image_size, channels)

  # ---- State: fresh, or the latest checkpoint.
  if resume_step is None:
    state = step_lib.create_train_state(model, tx, config.seed, image_shape, replicated)
  else:
    abstract = step_lib.train_state_shapes(model, tx, image_shape)
    state = ckpt.restore(checkpoints.abstract_like(abstract, replicated))
    logging.info("Resuming from %s at step %d", ckpt.directory, resume_step)
  start_step = int(state.step)

  train_step = step_lib.make_train_step(model, tx, config, channels, mesh)
  embed_fn = step_lib.make_embed_fn(model, config.eval.features, mesh)
  eval_data = ((pipeline.eval_images(train_images, config.data), train_labels),
               (pipeline.eval_images(test_images, config.data), test_labels))
  batches = pipeline.train_batches(train_images, config, start_step, num_steps,
                                   jax.process_index(), jax.process_count())
  is_main = jax.process_index() == 0
  monitor = Monitor(workdir, num_steps, config.train.batch_size, start_step, is_main)
  logging.info("Training %s on %s: %d steps (%d per epoch) from step %d on %d devices",
               config.model.architecture, config.data.name, num_steps, per_epoch, start_step,
               jax.device_count())

  # ---- The loop: the only host syncs are at log, eval and checkpoint steps.
  stop = distributed.StopSignal()
  try:
    metrics, last_saved = {}, resume_step
    for step in range(start_step + 1, num_steps + 1):
      state, device_metrics = train_step(state, pipeline.to_global(next(batches), data_sharding))
      stopping = stop.should_stop(step)  # SIGTERM/SIGINT: checkpoint this step, then exit.
      is_last = step == num_steps
      log_now = step % config.train.log_every == 0 or is_last or stopping
      eval_now = is_last or (config.eval.every > 0 and step % config.eval.every == 0)
      save_now = is_last or step % config.train.checkpoint_every == 0 or stopping
      if not (log_now or eval_now or save_now):
        continue
      metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
      if not all(np.isfinite(metrics[k]) for k in ("loss", "grad_norm", "param_norm")):
        raise NonFiniteLoss(f"loss {metrics['loss']} / grad norm {metrics['grad_norm']} at step "
                            f"{step}: stopped; the last good checkpoint is step {last_saved} in "
                            f"{ckpt.directory}")
      metrics.update(monitor.throughput(step))
      if eval_now:
        metrics["knn_top1"] = knn_eval(embed_fn, state, *eval_data, config, data_sharding)
        monitor.throughput(step)  # Do not count evaluation time as training speed.
      monitor.write(step, metrics)
      monitor.progress(step, metrics)
      if save_now:
        ckpt.save(step, state, config)
        last_saved = step
      if stopping and not is_last:
        raise Stopped(f"stopped by {stop.received} after step {step}/{num_steps}: checkpoint "
                      f"{step} is in {ckpt.directory}; rerun the same command to resume",
                      stop.received)
  finally:  # Also on errors: finish writing the checkpoints already started.
    stop.restore()
    ckpt.wait()
    ckpt.close()
    monitor.close()
  return metrics


class QuietLibraries(pylogging.Filter):
  """Console: adcl's INFO lines (progress, resume); other libraries' warnings and errors only."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or f"{os.sep}adcl{os.sep}" in record.pathname


def main(argv):
  logging.get_absl_handler().addFilter(QuietLibraries())
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.workdir is None:
    raise app.UsageError("--workdir is required")
  try:
    # Before anything touches a device: a multi-process run must join first.
    distributed.initialize(f.coordinator, f.num_processes, f.process_id, f.distributed,
                           f.join_timeout)
    run(f.config, f.workdir)
  except Stopped as stopped:
    print(f"adcl.train: {stopped}", file=sys.stderr)
    sys.exit(stopped.exit_code)
  except (ValueError, OSError, NonFiniteLoss) as error:
    # OSError includes a config file that failed to load (config_flags loads it lazily).
    lines = [l.strip() for l in str(error).splitlines() if l.strip()]
    print(f"adcl.train: error: {' '.join(lines[:1] + lines[-1:] if len(lines) > 1 else lines)}",
          file=sys.stderr)
    sys.exit(1)


def define_flags() -> None:
  """The command's flags; defined only when it runs as a command, so that other commands
  (adcl.study) can import this module and define their own."""
  config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
  flags.DEFINE_string(
      "coordinator", None, "host:port of process 0 for a multi-process run ($ADCL_COORDINATOR).")
  flags.DEFINE_integer("num_processes", None, "Processes in the run ($ADCL_NUM_PROCESSES).")
  flags.DEFINE_integer("process_id", None, "This process's index ($ADCL_PROCESS_ID).")
  flags.DEFINE_bool(
      "distributed", False, "Multi-process run whose cluster jax detects (TPU VM pod slices).")
  flags.DEFINE_integer("join_timeout", 300, "Seconds to wait for every process to join.")
  flags.mark_flags_as_required(["config"])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with a bad --config.KEY override reported in one line (config_flags
  raises a bare AttributeError/KeyError with a traceback otherwise)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    # A config file that raises while loading: its first line and its cause, not the traceback.
    lines = [l.strip() for l in str(error).splitlines() if l.strip()]
    cause = f" {lines[-1]}" if len(lines) > 1 else ""
    print(f"adcl.train: error: {lines[0]}{cause}", file=sys.stderr)
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    message = str(error).strip("'\"").replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
    print(f"adcl.train: error: bad config override: {message}", file=sys.stderr)
  sys.exit(2)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=parse_flags)
