"""XLA:CPU options the commands set before jax starts (adcl.cli.run, the benchmarks): the one
place where adcl makes XLA:CPU faster.

jaxlib 0.10 hands three kinds of CPU op to YNNPACK: matrix products, reductions and
convolutions (`--xla_cpu_experimental_ynn_fusion_type` defaults to `individual_dot`,
`reduce`, `individual_convolution`). For a ResNet's convolutions, and their filter gradients
above all, YNNPACK is slower than XLA's own (Eigen) kernels, so adcl sets
`--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce`: jaxlib's default without
convolutions. Dropping `reduce` too would leave batch-norm statistics as unfused
reduce-windows; adding `eltwise` slows the step. docs/performance.md has the measurements
(`python benchmarks/conv_layers.py` per layer, `benchmarks/step_time.py` per step).

A run's initial state is one program that runs once: `init_compiler_options()` compiles it
without LLVM's optimisations on CPU, which takes a fraction of the time
(`python benchmarks/init_time.py`); its values differ from an optimised build's by a few ulps,
and every CPU figure of the docs was made with it.

Rules for the flag: a flag the user's `XLA_FLAGS` already names is left as it is; `ADCL_XLA_DEFAULTS=0`
turns all of this off; nothing is set for a jaxlib older than 0.10 (whose flag set differs:
an unknown flag would abort jax); and since XLA reads `XLA_FLAGS` once, when jax starts its
first backend, calling it after a jax computation ran gets a warning instead. The flag
only concerns the CPU backend: GPU and TPU runs are unaffected. Importing adcl sets nothing:
`apply_defaults()` is called by every command (adcl/cli.py) and benchmark, and a notebook that
wants the speed calls it itself, first.
"""

import importlib.metadata
import os
import sys
import warnings
from typing import Optional

YNN_FUSION_FLAG = "xla_cpu_experimental_ynn_fusion_type"
DEFAULTS = {YNN_FUSION_FLAG: "individual_dot,reduce"}
MIN_JAXLIB = (0, 10)


def named_flags(xla_flags: str) -> dict:
  """{flag name: value} of an XLA_FLAGS string ('--a=1 --b' -> {'a': '1', 'b': ''})."""
  flags = {}
  for item in xla_flags.split():
    name, _, value = item.lstrip("-").partition("=")
    flags[name] = value
  return flags


def with_defaults(xla_flags: str) -> str:
  """`xla_flags` plus adcl's defaults for the flags it does not name."""
  named = named_flags(xla_flags)
  extra = [f"--{name}={value}" for name, value in DEFAULTS.items() if name not in named]
  return " ".join([xla_flags.strip()] + extra).strip()


def _jaxlib_supported() -> bool:
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return False
  parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
  return parts >= MIN_JAXLIB


def _jax_started() -> bool:
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # Private, hence the fallback: assume not started.
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


def apply_defaults(environ=os.environ) -> bool:
  """Adds adcl's defaults to environ['XLA_FLAGS']; True when it changed anything."""
  if environ.get("ADCL_XLA_DEFAULTS", "1") == "0" or not _jaxlib_supported():
    return False
  current = environ.get("XLA_FLAGS", "")
  updated = with_defaults(current)
  if updated == current:
    return False
  if _jax_started():
    warnings.warn(f"adcl.xla_cpu.apply_defaults() was called after jax started, so its "
                  f"XLA:CPU default XLA_FLAGS='{updated[len(current):].strip()}' (adcl/xla_cpu.py: "
                  f"faster ResNet steps on CPU) is not in effect; call it before the first "
                  f"jax computation or set XLA_FLAGS yourself.", stacklevel=2)
    return False
  environ["XLA_FLAGS"] = updated
  return True


def init_compiler_options(backend: Optional[str] = None) -> Optional[dict]:
  """XLA options for the program that makes a run's initial state: no LLVM optimisation on
  CPU (it runs once; compiling it is most of its cost); None (XLA's defaults) elsewhere."""
  import jax
  if (backend or jax.default_backend()) != "cpu":
    return None
  return {"xla_backend_optimization_level": 0}
