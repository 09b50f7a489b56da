"""What every command (`adcl.train`, `adcl.evaluate`, `adcl.compare`, `adcl.study`) shares.

    if __name__ == "__main__":
      define_flags()
      cli.run(main, "adcl.NAME")

`run` does, before jax starts a backend: adcl's XLA:CPU defaults (adcl/xla_cpu.py; importing
adcl changes nothing, the command does it), glibc's allocator set for training and for
evaluation (adcl/allocator.py), TensorFlow's C++ log level, and jax kept off the TPU runtime
on a host with libtpu but no TPU chip (adcl.tpu.skip_absent_runtime). Then it parses the
flags (a bad `--config.KEY` override or a config file that fails to load: one line), filters
the console log (adcl's own INFO lines, other libraries' warnings only) and turns every
expected failure into one line on stderr and an exit code:

  1    a ValueError or OSError (bad value, file, checkpoint), errors.NonFiniteLoss
  2    errors.UsageError, a bad flag or config override
  130  errors.Stopped by SIGINT; 143 by SIGTERM (checkpointed: rerun to resume)

Anything else is a bug and keeps its traceback. ADCL_DEBUG=1 prints the traceback of an
expected failure too, above its one line.
"""

import logging as pylogging
import os
import sys
from typing import Callable

from adcl import allocator, errors, tpu, xla_cpu

EXPECTED = (ValueError, OSError, errors.NonFiniteLoss, errors.MissingDependency,
            errors.ChildCrashed)


class QuietLibraries(pylogging.Filter):
  """Console: adcl's INFO lines (progress, resume); other libraries' warnings and errors only,
  each as its first line (a library that logs an error it also raises, as Orbax does for a
  full disk, would otherwise print its traceback before adcl's one line)."""

  def filter(self, record):
    if f"{os.sep}adcl{os.sep}" in record.pathname:
      return True
    if record.levelno < pylogging.WARNING:
      return False
    message = record.getMessage().strip().splitlines()
    if record.name == "asyncio" and message and "exception was never retrieved" in message[0]:
      return False  # A library's background write that failed: the error is reported already.
    record.msg, record.args = (message[0][:300] if message else ""), None
    record.exc_info = record.exc_text = None
    return True


def _unraisable_quietly(unraisable) -> None:
  """Exceptions Python cannot raise (in a library's callbacks: Orbax's closed event loop after
  a failed write prints ~120 tracebacks) go to the debug log, not the console."""
  logging_module = pylogging.getLogger("adcl.cli")
  logging_module.debug("unraisable %s: %s", type(unraisable.exc_value).__name__,
                       unraisable.exc_value)


def one_line(error: BaseException) -> str:
  """An error message as one line: its first line, and its last when they differ (a config
  file that fails to load: where, then why)."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()] or [type(error).__name__]
  return " ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else lines[0]


def show_traceback_if_debugging() -> None:
  """With ADCL_DEBUG=1, the traceback behind the one-line error being handled, on stderr above
  that line: where an internal ValueError or OSError came from."""
  if os.environ.get("ADCL_DEBUG") == "1":
    import traceback
    traceback.print_exc()


def fail(program: str, message: str, code: int):
  """Print adcl's one line and exit. Nothing logs after it: a library's background thread
  still running (Orbax's metadata writer after a full disk) would otherwise log its own error
  below adcl's line, sometimes, depending on which thread finishes first."""
  print(f"{program}: {message}", file=sys.stderr, flush=True)
  pylogging.disable(pylogging.CRITICAL)
  sys.exit(code)


def parse_flags(program: str, argv: list[str]) -> list[str]:
  """absl's flag parsing, with its errors in one line: config_flags raises a bare
  AttributeError/KeyError (with a traceback) for an unknown `--config.KEY`."""
  from absl import flags

  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    fail(program, f"error: {one_line(error)}", 2)
  except SyntaxError as error:  # A config file that is not valid Python.
    fail(program, f"error: {error.filename}:{error.lineno}: {error.msg} (config file)", 2)
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    message = str(error).strip("'\"").replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
    fail(program, f"error: bad config override: {message}", 2)


def prepare_jax() -> None:
  """What every command and benchmark sets before jax starts: adcl's XLA:CPU options
  (adcl/xla_cpu.py) and, on a host with libtpu but no TPU chip, the CPU as jax's platform
  (adcl.tpu.skip_absent_runtime)."""
  xla_cpu.apply_defaults()  # XLA reads XLA_FLAGS once, when its first backend starts.
  tpu.skip_absent_runtime()  # jax reads JAX_PLATFORMS when it starts.


def run(main: Callable[[list[str]], None], program: str) -> None:
  """absl's app.run(main) with the shared start-up, log filter and error path (module doc)."""
  from absl import app, logging

  prepare_jax()
  allocator.manage()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.unraisablehook = _unraisable_quietly

  def guarded(argv):
    logging.get_absl_handler().addFilter(QuietLibraries())
    try:
      main(argv)
    except errors.Stopped as stopped:
      fail(program, str(stopped), stopped.exit_code)
    except errors.UsageError as error:
      show_traceback_if_debugging()
      fail(program, f"error: {one_line(error)}", 2)
    except EXPECTED as error:
      show_traceback_if_debugging()
      fail(program, f"error: {one_line(error)}", 1)

  app.run(guarded, flags_parser=lambda argv: parse_flags(program, argv))
