"""One run per workdir: `workdir/lock` names the host and process that trains there.

A second `adcl.train` (or study run) on the same workdir refuses in one line instead of both
runs writing the same checkpoints. A lock left by a process that is gone (killed, crashed) on
this host is taken over with a log line; one from another host cannot be checked from here, so
it is refused with the command to clear it. In a multi-process run only process 0 holds it.
On object stores (gs://) the check and the write are two steps: it guards against the common
mistake, not against two starts in the same second.
"""

import os
import socket
import time

from absl import logging

from adcl import paths


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Someone else's process: it exists.
    return True
  return True


class WorkdirLock:
  """Context manager: holds `workdir/lock` for the duration of a run (`enabled` False: no-op)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = paths.resolve(workdir) / "lock"
    self.enabled = enabled
    self.owner = f"{socket.gethostname()} {os.getpid()}"

  def __enter__(self):
    if not self.enabled:
      return self
    self.path.parent.mkdir(parents=True, exist_ok=True)
    while not self._create():
      holder = self._read()
      host, _, pid = holder.partition(" ")
      if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
        logging.warning("Taking over %s: its process %s is gone", self.path, pid)
        self.path.unlink(missing_ok=True)
        continue
      where = f"process {pid} on {host}" if pid else "another run"
      raise ValueError(f"{self.path.parent} is in use by {where} (its lock: {self.path}); wait "
                       "for that run to end, or use another --workdir"
                       + ("" if host == socket.gethostname() else
                          f"; if that run is gone, delete {self.path}"))
    return self

  def _create(self) -> bool:
    """Write the lock if there is none; False if there is one."""
    if "://" not in str(self.path):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, "w") as f:
        f.write(f"{self.owner} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
      return True
    if self.path.exists():
      return False
    self.path.write_text(f"{self.owner}\n")
    return True

  def _read(self) -> str:
    try:
      return " ".join(self.path.read_text().split()[:2])
    except FileNotFoundError:  # Released between our attempt and this read: try again.
      return ""

  def __exit__(self, *exc):
    if self.enabled and self._read() == self.owner:
      self.path.unlink(missing_ok=True)
    return False
