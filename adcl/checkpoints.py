"""Orbax checkpoints in `workdir/checkpoints`: the TrainState (params, both BN sets, optimiser
state, step, rng; the step is also the data position) and the config as JSON."""

import logging
from typing import Any, Optional

import jax
import ml_collections
import orbax.checkpoint as ocp

from adcl import configs, paths


def _write_small_arrays_whole() -> None:
  """Orbax splits each replicated array across its replicas so that they write in parallel.
  For small arrays the split costs more than it saves: every (shape, slice) is a compiled
  slice op, 6.5 s of a tiny test run's first save on 8 CPU devices. Arrays under 1 MiB per
  slice are written whole by one replica; large arrays on a pod are still spread. Orbax's
  handler registry is global, so this runs when a Checkpoints is made, not on import."""
  absl_logger = logging.getLogger("absl")
  absl_logger.disabled = True  # Orbax warns about any override; this one is intended.
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=2**20),
        override=True)
  finally:
    absl_logger.disabled = False


class Checkpoints:
  """Save, find and restore the checkpoints of one workdir."""

  def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
    self.directory = paths.resolve(workdir) / "checkpoints"
    if read_only and not self.directory.is_dir():
      raise ValueError(f"{self.directory}: no such checkpoint directory")
    _write_small_arrays_whole()
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "config"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                             read_only=read_only))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def saved_config(self, step: Optional[int] = None) -> dict:
    """The config JSON stored with checkpoint `step` (default: the latest)."""
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return restored.config

  def check_compatible(self, config: ml_collections.ConfigDict) -> None:
    """Raise ValueError, touching nothing, if the latest checkpoint's model differs."""
    differ = configs.incompatible_keys(self.saved_config(), config)
    if differ:
      raise ValueError(
          f"{self.directory} holds a checkpoint of another model: " + "; ".join(differ) +
          ". Use a new --workdir, or restore those values.")

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> Any:
    """The state of checkpoint `step` (default latest), laid out as `abstract_state`
    (a pytree of jax.ShapeDtypeStruct carrying shardings)."""
    step = self.latest_step() if step is None else step
    try:
      restored = self.manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    except (ValueError, KeyError, TypeError) as error:
      raise ValueError(f"{self.directory}/{step} does not fit this config's model: "
                       f"{str(error).splitlines()[0]}") from error
    return restored.state

  def restore_raw(self, step: Optional[int] = None) -> dict:
    """The state of checkpoint `step` (default latest) as a dict of arrays on one local device,
    with no model or config needed, whatever topology wrote it: for notebooks, evaluation and
    tests."""
    step = self.latest_step() if step is None else step
    saved = ocp.StandardCheckpointer().metadata(self.directory / str(step) / "state")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          saved.item_metadata)
    return self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state

  def save(self, step: int, state: Any, config: ml_collections.ConfigDict) -> None:
    """Write checkpoint `step` (asynchronously; `wait()` before exit)."""
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config.to_dict())))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or shapes from jax.eval_shape) on `sharding`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
