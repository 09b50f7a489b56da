"""The failures a command reports in one line (adcl.cli) instead of a traceback.

Any ValueError or OSError is one too: a bad config value, a missing file. These are the rest.
"""

import importlib


class UsageError(Exception):
  """The command line itself is wrong (missing or unexpected arguments): exit code 2."""


class NonFiniteLoss(RuntimeError):
  """The loss (or gradient) stopped being finite; the last good checkpoint is kept."""


class Stopped(RuntimeError):
  """SIGTERM or SIGINT: the run stopped after a step and checkpointed it; rerun to resume."""

  def __init__(self, message: str, signal_name: str):
    super().__init__(message)
    self.exit_code = 143 if signal_name == "SIGTERM" else 130  # 128 + the signal's number.


class DamagedFile(ValueError):
  """A file adcl wrote and reads back (eval.json, metrics.jsonl, a run record, a cache entry)
  does not parse: cut mid-line, emptied, or edited by hand. Names the file."""

  def __init__(self, path, reason: str, advice: str = ""):
    super().__init__(f"{path} is damaged ({reason})" + (f"; {advice}" if advice else ""))
    self.path, self.reason = path, reason


class ChildCrashed(RuntimeError):
  """A child process doing the work died of a signal (a native library's fault)."""


class MissingDependency(ImportError):
  """An optional package a config asks for is not installed (TensorFlow for TFDS)."""


def import_tensorflow(purpose: str):
  """`import tensorflow`, or MissingDependency naming `purpose` and the way around it.

  TensorFlow reads only TFDS sources: a host without it (a managed GPU image) trains on IDX,
  NPZ, folder and records sources.
  """
  try:
    return importlib.import_module("tensorflow")
  except ImportError:
    raise MissingDependency(
        f"{purpose} needs TensorFlow, which is not installed here: pip install tensorflow-cpu "
        "tensorflow-datasets, or use data.source idx, npz, folder or records"
    ) from None
