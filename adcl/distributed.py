"""Joining a multi-process run (several hosts, or several local processes) and preemption.

A run is multi-process when it is given a coordinator (flags or ADCL_* environment variables)
or asked to detect its cluster (`--distributed`: TPU VM pod slices, SLURM and others, which
jax.distributed detects itself). Every process then sees one global device list, and
`adcl.step.data_mesh()` spans all of them.
"""

import os
import signal
import socket
import threading
import time
from typing import Optional

from absl import logging
import jax


def initialize(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, detect: bool = False,
               timeout_s: int = 300) -> bool:
  """jax.distributed.initialize when this is a multi-process run; returns whether it is.

  Args:
    coordinator: 'host:port' of process 0 (default: $ADCL_COORDINATOR).
    num_processes, process_id: default $ADCL_NUM_PROCESSES, $ADCL_PROCESS_ID.
    detect: no coordinator given: let jax.distributed detect the cluster (TPU VMs).
    timeout_s: how long to wait for every process to join before failing.
  Raises:
    ValueError naming the setting, or the coordinator that did not answer.
  """
  coordinator = coordinator or os.environ.get("ADCL_COORDINATOR") or None
  num_processes = num_processes or _env_int("ADCL_NUM_PROCESSES")
  if process_id is None:
    process_id = _env_int("ADCL_PROCESS_ID")
  if coordinator is None and not detect:
    return False
  if coordinator is not None:
    if num_processes is None or process_id is None:
      raise ValueError(f"coordinator {coordinator} given without the process count and id: set "
                       "--num_processes and --process_id (or ADCL_NUM_PROCESSES, ADCL_PROCESS_ID)")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} is not in [0, --num_processes={num_processes})")
  # CPU processes need a collectives library to talk to each other (GPU/TPU ignore it; asking
  # for the backend here would initialise it before the distributed runtime, which jax forbids).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator is not None and process_id != 0:
    # XLA aborts the process (no Python exception) when the coordinator never answers, so
    # wait for its port here first and fail with a message instead.
    _wait_for_port(coordinator, timeout_s, f"process {process_id} of {num_processes}")
  logging.info("Joining the run at %s as process %s of %s (timeout %d s)",
               coordinator or "the detected cluster", process_id, num_processes, timeout_s)
  try:
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               initialization_timeout=timeout_s)
  except Exception as error:  # XLA raises its own error types (DEADLINE_EXCEEDED, ...).
    where = coordinator or "the detected cluster"
    raise ValueError(f"could not join the run at {where} within {timeout_s} s "
                     f"(process {process_id} of {num_processes}): "
                     f"{str(error).splitlines()[0][:300]}") from error
  return True


def _wait_for_port(address: str, timeout_s: float, who: str) -> None:
  """Return once host:port accepts a TCP connection; ValueError after `timeout_s`."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"--coordinator={address!r} is not host:port")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
      return
    except OSError as error:
      if time.monotonic() > deadline:
        raise ValueError(f"the coordinator {address} did not answer within {timeout_s} s "
                         f"({who}: {error.strerror or error}); start process 0 first, or check "
                         "--coordinator and the firewall") from None
      time.sleep(0.5)


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"${name}={value!r} is not an integer") from None


class StopSignal:
  """Stop at a step boundary on SIGTERM (preemption) or SIGINT (Ctrl-C), so the loop can save
  a checkpoint and exit; rerunning the same command resumes.

  One process: Python handlers record the signal. Several processes: they must all stop at the
  same step (the checkpoint is written cooperatively), so the decision is jax's preemption sync
  point, which the distributed runtime's own SIGTERM notifier feeds and which agrees on one step
  across processes; no Python handler is installed then, as it would replace that notifier.
  """

  def __init__(self):
    self.received: Optional[str] = None
    self._previous = {}
    # Python handlers can only be set from the main thread (a notebook may train elsewhere).
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name

  def should_stop(self, step: int) -> bool:
    """Whether to stop after `step`; call it at every step on every process."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      if multihost_utils.reached_preemption_sync_point(step):  # A local query, no collective.
        self.received = "SIGTERM"
    return self.received is not None

  def restore(self) -> None:
    """Put back the handlers that were there before."""
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
