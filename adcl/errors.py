"""The failures a command reports in one line (adcl.cli) instead of a traceback.

Any ValueError or OSError is one too: a bad config value, a missing file. These are the rest.
"""


class UsageError(Exception):
  """The command line itself is wrong (missing or unexpected arguments): exit code 2."""


class NonFiniteLoss(RuntimeError):
  """The loss (or gradient) stopped being finite; the last good checkpoint is kept."""


class Stopped(RuntimeError):
  """SIGTERM or SIGINT: the run stopped after a step and checkpointed it; rerun to resume."""

  def __init__(self, message: str, signal_name: str):
    super().__init__(message)
    self.exit_code = 143 if signal_name == "SIGTERM" else 130  # 128 + the signal's number.
