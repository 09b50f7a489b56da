"""glibc's allocator settings (adcl/allocator.py), read back from glibc itself in a fresh
process: whether an array gets a mapping of its own or comes from the heap."""

import json
import subprocess
import sys

from conftest import REPO

PROBE = """
import ctypes, json
import numpy as np
from adcl import allocator

class MallInfo2(ctypes.Structure):
  _fields_ = [(name, ctypes.c_size_t) for name in (
      "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
      "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped(size):
  # Whether an array of `size` bytes got a mapping of its own (glibc's hblkhd grew by it).
  before = libc.mallinfo2().hblkhd
  array = np.ones(size, np.uint8)
  grown = libc.mallinfo2().hblkhd - before
  del array
  return grown >= size

# A notebook: glibc raises its threshold past a freed 4 MiB mapping on its own, and
# `evaluating` without `manage` leaves that alone: 1 MiB comes from the heap.
big = np.ones(4 * 2**20, np.uint8)
del big
with allocator.evaluating():
  notebook = mapped(2**20)
allocator.manage()
# 2 MiB, more than the heap has free: mapped at 128 KiB, not at glibc's raised 4 MiB.
with allocator.evaluating():
  evaluating = mapped(2 * 2**20)
# 16 MiB after the block: from the heap at 32 MiB, mapped at glibc's raised 4 MiB.
training = mapped(16 * 2**20)
print(json.dumps({"notebook": notebook, "evaluating": evaluating, "training": training}))
"""


def test_commands_train_from_the_heap_and_map_each_large_array_while_evaluating():
  result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == {
      "notebook": False, "evaluating": True, "training": False}


def test_evaluating_blocks_nest_and_give_back_the_setting_before_them():
  from adcl import allocator  # Without `manage`: this process's allocator is not touched.

  assert allocator._current == allocator.TRAINING
  with allocator.evaluating():
    with allocator.evaluating():
      pass
    assert allocator._current == allocator.EVALUATION  # Still inside the outer block.
  assert allocator._current == allocator.TRAINING
