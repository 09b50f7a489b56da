"""Orbax checkpoints in `workdir/checkpoints`: the TrainState (params, both BN sets, optimiser
state, step, rng; the step is also the data position) and the config as JSON."""

import contextlib
import logging
import time
from typing import Any, Optional

import jax
import ml_collections
import orbax.checkpoint as ocp

from adcl import configs, paths


class Checkpoints:
  """Save, find and restore the checkpoints of one workdir."""

  def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
    self.directory = paths.resolve(workdir) / "checkpoints"
    if read_only and not self.directory.is_dir():
      raise ValueError(f"{self.directory}: no such checkpoint directory")
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "config"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                             read_only=read_only))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def saved_config(self, step: Optional[int] = None) -> ml_collections.ConfigDict:
    """The config stored with checkpoint `step` (default: the latest), in today's schema
    (configs.from_saved). A config file that does not read back is a ValueError naming it."""
    step = self.latest_step() if step is None else step
    try:
      return self._read_config(step)
    except Exception as error:  # Orbax wraps the JSON parser's errors in its own types.
      raise ValueError(f"{self.directory / str(step) / 'config'} is damaged "
                       f"({_first_line(error)}); choose another checkpoint (adcl.train moves "
                       "it aside on resume)") from None

  def _read_config(self, step: int) -> ml_collections.ConfigDict:
    restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return configs.from_saved(restored.config)

  def check_compatible(self, config: ml_collections.ConfigDict) -> None:
    """Raise ValueError, touching nothing, if the latest checkpoint's model or records
    (data.fingerprint) differ. A latest
    checkpoint whose config does not read back is damaged: moved aside, as in
    restore_latest_intact, and the one before it is checked."""
    while (step := self.latest_step()) is not None:
      try:
        saved = self._read_config(step)
        break
      except Exception as error:  # Whatever the reader raised: the file is unreadable.
        self._set_aside(step, _first_line(error))
    else:
      return
    if saved.data.fingerprint != config.data.fingerprint:
      raise ValueError(
          f"{self.directory} was trained on other data: its records' fingerprint is "
          f"{saved.data.fingerprint[:12] or 'none (in-memory source)'}, config.data.data_dir "
          f"{config.data.data_dir!r} has {config.data.fingerprint[:12] or 'none'}. Use a new "
          "--workdir, or the data it was trained on.")
    differ = configs.incompatible_keys(saved, config)
    if differ:
      raise ValueError(
          f"{self.directory} holds a checkpoint of another model: " + "; ".join(differ) +
          ". Use a new --workdir, or restore those values.")

  def restore_latest_intact(self, abstract_state: Any) -> Any:
    """The latest checkpoint that reads back, laid out as `abstract_state`.

    A checkpoint that does not read back at all (a truncated or corrupted file: a crash or a
    full disk during its write, a damaged copy) is moved aside to workdir/damaged_checkpoints/
    (never deleted), with a log line saying so, and the one before it is tried. ValueError
    when none is left. A checkpoint that reads but does not fit `abstract_state` is another
    model's: ValueError, and nothing is moved.
    """
    while (step := self.latest_step()) is not None:
      try:
        return self.restore(abstract_state, step)
      except Exception as error:  # Orbax and TensorStore raise many types; tell them apart:
        damage = self.damage(step)
        if damage is None:  # It reads: it is another model's checkpoint.
          raise
        self._set_aside(step, damage)
    raise ValueError(f"{self.directory}: no intact checkpoint left (damaged ones are in "
                     f"{self.directory.parent / 'damaged_checkpoints'}); use a new --workdir "
                     "or restore one")

  def damage(self, step: int) -> Optional[str]:
    """None if checkpoint `step` reads back whole (with no model); else what is wrong."""
    try:
      self.restore_raw(step, check=False)
      return None
    except Exception as error:  # Whatever the reader raised: the checkpoint is unreadable.
      return _first_line(error)

  def _set_aside(self, step: int, damage: str) -> None:
    aside = self.move_aside(step)
    logging.getLogger("absl").warning(
        "checkpoint %d in %s is damaged (%s): moved to %s; trying the one before it",
        step, self.directory, damage, aside)

  def move_aside(self, step: int):
    """Move checkpoint `step` to workdir/damaged_checkpoints/STEP-TIME; returns where."""
    target = self.directory.parent / "damaged_checkpoints" / f"{step}-{int(time.time())}"
    target.parent.mkdir(parents=True, exist_ok=True)
    (self.directory / str(step)).rename(target)
    self.manager.reload()
    return target

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

  def restore_raw(self, step: Optional[int] = None, check: bool = True) -> dict:
    """The state of checkpoint `step` (default latest) as a dict of arrays on one local device,
    with no model or config needed, whatever topology wrote it: for notebooks, evaluation and
    tests. A checkpoint that does not read back is a ValueError naming it (with `check`)."""
    step = self.latest_step() if step is None else step
    try:
      saved = ocp.StandardCheckpointer().metadata(self.directory / str(step) / "state")
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            saved.item_metadata)
      return self.manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
    except Exception as error:  # Orbax and TensorStore raise many types for a damaged file.
      if not check:
        raise
      raise ValueError(f"{self.directory / str(step)} is damaged ({_first_line(error)}); "
                       "choose another checkpoint (adcl.train moves it aside on resume)") from None

  def save(self, step: int, state: Any, config: ml_collections.ConfigDict) -> None:
    """Write checkpoint `step` (asynchronously; `wait()` before exit). A full disk, here or
    in the write of the previous one, is a one-line ValueError (the earlier checkpoints stay
    intact: a checkpoint becomes visible only once its write is complete)."""
    self._pending = step
    with self._disk_full_named():
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config.to_dict())))

  def wait(self) -> None:
    with self._disk_full_named():
      self.manager.wait_until_finished()

  @contextlib.contextmanager
  def _disk_full_named(self):
    try:
      yield
    except Exception as error:  # Orbax reports ENOSPC as TensorStore's RESOURCE_EXHAUSTED.
      text = str(error)
      if "No space left" not in text and "os_error_code='28'" not in text:
        raise
      intact = [s for s in self.manager.all_steps() if s != getattr(self, "_pending", None)]
      raise ValueError(
          f"{self.directory}: disk full (No space left on device) while writing checkpoint "
          f"{getattr(self, '_pending', '?')}; "
          + (f"checkpoint {max(intact)} is intact: " if intact else "")
          + "free space and rerun the same command to resume") from None

  def close(self) -> None:
    self.manager.close()


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or shapes from jax.eval_shape) on `sharding`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _first_line(error: BaseException) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
