"""`python -m adcl.train --config configs/NAME.py --workdir DIR [--config.key=value ...]`.

Trains CLAE (or, with adv.enabled=False, its baseline) and writes checkpoints, metrics.jsonl
and TensorBoard events to DIR. A DIR that holds a checkpoint is resumed from its latest one.
"""

import ml_collections
import numpy as np
from absl import flags, logging
import jax

from adcl import allocator, build, checkpoints, cli, configs, distributed, errors
from adcl.data import memory, order
from adcl.evaluation import knn, protocol, splits
from adcl.lock import WorkdirLock
from adcl.monitor import Monitor


def total_steps(config: ml_collections.ConfigDict, per_epoch: int) -> int:
  return config.train.num_steps if config.train.num_steps > 0 else config.train.num_epochs * per_epoch


def knn_eval(trainer: build.Trainer, state, eval_data, config) -> float:
  """kNN top-1 (percent) of the clean encoder on the whole test set (docs/method.md §5).
  eval_data: (train, test) splits as adcl.evaluation.splits.load_split gives them."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  with allocator.evaluating(), protocol.feature_store(eval_data) as store:
    (train_f, train_y), (test_f, test_y) = (
        protocol.split_features(trainer.embed_fn(), variables, split, config, trainer.mesh,
                                store)
        for split in eval_data)
    return knn.knn_accuracy(train_f, train_y, test_f, test_y, *protocol.knn_settings(config))


def open_data(config: ml_collections.ConfigDict, process_index: int, process_count: int):
  """What training needs of config.data, in host memory only where the source is read whole:
  (training images, channels, eval_data for knn_eval, `batches(start_step, num_steps)` ->
  this process's batches of those steps, the records' fingerprint ('' for sources read
  whole)).

  'records' reads a batch at a time (adcl.data.records) and evaluates a chunk at a time
  (splits.load_split); the other sources load both splits whole."""
  eval_data = tuple(splits.load_split(config, split) for split in ("train", "test"))
  if config.data.source == "records":
    from adcl.data import records

    train = eval_data[0]
    batches = lambda start, end: records.train_batches(config, start, end, process_index,
                                                      process_count)
    return len(train), train.channels, eval_data, batches, train.fingerprint
  train_images = eval_data[0].images
  batches = lambda start, end: memory.train_images(train_images, config, start, end,
                                                   process_index, process_count)
  return len(train_images), train_images.shape[-1], eval_data, batches, ""


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Train to the end of the schedule (resuming from `workdir`); returns the last metrics."""
  # ---- Checks that need nothing built: fail in a second, before any compilation.
  configs.validate(config, jax.device_count(), jax.process_count())
  configs.validate_dataset_name(config)
  with WorkdirLock(workdir, enabled=jax.process_index() == 0):  # One run per workdir.
    return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  # ---- Data and everything the config builds.
  num_train, channels, eval_data, batch_source, fingerprint = open_data(
      config, jax.process_index(), jax.process_count())
  config = config.copy_and_resolve_references()
  config.data.fingerprint = fingerprint  # Saved with every checkpoint.
  ckpt = checkpoints.Checkpoints(workdir, config.train.keep_checkpoints)
  resume_step = ckpt.latest_step()
  if resume_step is not None:
    ckpt.check_compatible(config)
  per_epoch = order.steps_per_epoch(num_train, config.train.batch_size)
  num_steps = total_steps(config, per_epoch)
  image_shape = (config.data.image_size, config.data.image_size, channels)
  trainer = build.trainer(config, image_shape, per_epoch, num_steps)

  # ---- State: fresh, or the latest checkpoint.
  if resume_step is None:
    state = trainer.init_state()
  else:
    state = ckpt.restore_latest_intact(trainer.abstract_state())
    logging.info("Resuming from %s at step %d", ckpt.directory, int(state.step))
  start_step = int(state.step)

  batches = batch_source(start_step, num_steps)
  monitor = Monitor(workdir, num_steps, config.train.batch_size, start_step,
                    jax.process_index() == 0)
  logging.info("Training %s on %s: %d steps (%d per epoch) from step %d on %d devices",
               config.model.architecture, config.data.name, num_steps, per_epoch, start_step,
               jax.device_count())

  # ---- The loop: the only host syncs are at log, eval and checkpoint steps.
  stop = distributed.StopSignal()
  try:
    metrics, last_saved = {}, (start_step if resume_step is not None else None)
    for step in range(start_step + 1, num_steps + 1):
      state, device_metrics = trainer.train_step(
          state, memory.to_global(monitor.next_batch(batches), trainer.data_sharding))
      stopping = stop.should_stop(step)  # SIGTERM/SIGINT: checkpoint this step, then exit.
      is_last = step == num_steps
      log_now = step % config.train.log_every == 0 or is_last or stopping
      eval_now = is_last or (config.eval.every > 0 and step % config.eval.every == 0)
      save_now = is_last or step % config.train.checkpoint_every == 0 or stopping
      if not (log_now or eval_now or save_now):
        continue
      metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
      if not all(np.isfinite(metrics[k]) for k in ("loss", "grad_norm", "param_norm")):
        raise errors.NonFiniteLoss(
            f"loss {metrics['loss']} / grad norm {metrics['grad_norm']} at step {step}: "
            "stopped; " + (f"the last good checkpoint is step {last_saved} in {ckpt.directory}"
                           if last_saved is not None else "no checkpoint was written yet"))
      # The rate step `step` applied (its update count is step - 1): a function of the step,
      # computed here rather than fetched from the device.
      metrics["learning_rate"] = float(trainer.learning_rate(step - 1))
      metrics.update(monitor.throughput(step))
      if eval_now:
        metrics["knn_top1"] = knn_eval(trainer, state, eval_data, config)
        monitor.throughput(step)  # Do not count evaluation time as training speed.
      monitor.write(step, metrics)
      monitor.progress(step, metrics)
      if save_now:
        ckpt.save(step, state, config)
        last_saved = step
      if stopping and not is_last:
        raise errors.Stopped(f"stopped by {stop.received} after step {step}/{num_steps}: "
                             f"checkpoint {step} is in {ckpt.directory}; rerun the same "
                             "command to resume", stop.received)
  finally:  # Also on errors: finish writing the checkpoints already started.
    stop.restore()
    ckpt.wait()
    ckpt.close()
    monitor.close()
  return metrics


def main(argv):
  if len(argv) > 1:
    raise errors.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.workdir is None:
    raise errors.UsageError("--workdir is required")
  # Before anything touches a device: a multi-process run must join first.
  distributed.initialize(f.coordinator, f.num_processes, f.process_id, f.distributed,
                         f.join_timeout)
  run(f.config, f.workdir)


def define_flags(flag_values=None) -> None:
  """The command's flags, on `flag_values` (default: absl's global FLAGS); defined only when
  it runs as a command, so that other commands (adcl.study) can import this module."""
  from ml_collections import config_flags

  fv = flags.FLAGS if flag_values is None else flag_values
  config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True,
                                  flag_values=fv)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.", flag_values=fv)
  flags.DEFINE_string("coordinator", None, "host:port of process 0 for a multi-process run "
                      "($ADCL_COORDINATOR).", flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "Processes in the run ($ADCL_NUM_PROCESSES).",
                       flag_values=fv)
  flags.DEFINE_integer("process_id", None, "This process's index ($ADCL_PROCESS_ID).",
                       flag_values=fv)
  flags.DEFINE_bool("distributed", False, "Multi-process run whose cluster jax detects (TPU VM "
                    "pod slices).", flag_values=fv)
  flags.DEFINE_integer("join_timeout", 300, "Seconds to wait for every process to join.",
                       flag_values=fv)
  flags.mark_flags_as_required(["config"], flag_values=fv)


if __name__ == "__main__":
  define_flags()
  cli.run(main, "adcl.train")
