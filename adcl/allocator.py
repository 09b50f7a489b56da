"""glibc's allocator set for the work at hand: one setting for training, one for evaluation.

Training repeats one step whose host buffers (XLA:CPU's temporaries, the batches) have the same
sizes every time: they are fastest reused from the heap, which is what glibc does on its own
once it has raised its mmap threshold. Given each its own mapping instead, every step faults
in fresh zeroed pages: the CPU quickstart trained about a quarter slower
(docs/performance.md). Evaluation reads chunk after chunk of arrays that are freed in no
particular order: taken from the heap they fragment it, and resident memory grows with the
images evaluated (docs/data_design.md), so while evaluating, every allocation of 128 KiB or
more gets its own mapping, returned to the system when freed.

Both settings are fixed values (mallopt turns glibc's own adjustment off), so what a run holds
does not depend on what it happened to allocate first. Only the commands use this (adcl/cli.py
calls `manage`); importing adcl or calling `evaluating` in a notebook changes nothing. Nothing
on other C libraries.
"""

import contextlib
import ctypes
from typing import Iterator, Optional

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# (mmap threshold, trim threshold) in bytes. Training: glibc's ceiling for a raised mmap
# threshold (32 MiB on 64-bit systems) and twice it for the trim threshold, as glibc pairs
# them. Evaluation: glibc's initial values, held.
TRAINING = (32 * 2**20, 64 * 2**20)
EVALUATION = (128 * 2**10, 128 * 2**10)

_libc: Optional[ctypes.CDLL] = None
_current = TRAINING


def _set(setting: tuple) -> None:
  global _current
  _current = setting
  if _libc is not None:
    mmap_threshold, trim_threshold = setting
    _libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    _libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)


def manage() -> None:
  """From now on, this process trains with TRAINING and evaluates with EVALUATION (where the C
  library is glibc)."""
  global _libc
  try:
    _libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return
  _set(TRAINING)


@contextlib.contextmanager
def evaluating() -> Iterator[None]:
  """The block runs with EVALUATION, then with the setting before it again (if `manage` was
  called); blocks may nest."""
  before = _current
  _set(EVALUATION)
  try:
    yield
  finally:
    _set(before)
