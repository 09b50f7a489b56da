"""XLA:CPU options the commands set before jax starts (adcl.cli.run, the benchmarks).

jaxlib 0.10 hands three kinds of CPU op to YNNPACK: matrix products, reductions and
convolutions (`--xla_cpu_experimental_ynn_fusion_type` defaults to `individual_dot`,
`reduce`, `individual_convolution`). For a ResNet's convolutions YNNPACK is much slower than
XLA's own (Eigen) kernels, the filter gradient most of all. ms per pass, batch 64, 3x3,
this project's 2-core CPU, jax 0.10.2, YNNPACK / Eigen (`python benchmarks/conv_layers.py`):

    layer                  forward    input grad   filter grad
    32x32, 64->64          83 / 32     81 / 40     1199 / 79
    16x16, 128->128        46 / 33     42 / 36      118 / 40
    8x8, 256->256          48 / 32     46 / 36       70 / 33
    4x4, 512->512          44 / 55     52 / 38       62 / 35
    all 7 layer shapes    308 / 205   323 / 251    1636 / 255

So adcl sets `--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce`: jaxlib's default
without convolutions. (Dropping `reduce` as well makes XLA split batch-norm statistics into
unfused reduce-windows, 4 ms instead of 0.5 ms for a [64, 32, 32, 64] sum; adding `eltwise`
halved the ResNet-18 step's speed.) ResNet-18 step, 32 px, batch 64, with `ADCL_XLA_DEFAULTS=0`
and without, one after the other (`python benchmarks/step_time.py --model resnet18 --steps 2
--rounds 2`): plain 9.18 -> 13.98 img/s, CLAE 5.02 -> 7.52 img/s (1.5x).

Rules: a flag the user's `XLA_FLAGS` already names is left as it is; `ADCL_XLA_DEFAULTS=0`
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
                  f"ResNet steps 1.5x faster on CPU) is not in effect; call it before the first "
                  f"jax computation or set XLA_FLAGS yourself.", stacklevel=2)
    return False
  environ["XLA_FLAGS"] = updated
  return True


def ynn_convolutions_enabled(environ=os.environ) -> bool:
  """Whether XLA:CPU sends convolutions to YNNPACK under `environ`'s XLA_FLAGS (jaxlib 0.10's
  default when the flag is not named)."""
  named = named_flags(environ.get("XLA_FLAGS", ""))
  if YNN_FUSION_FLAG not in named:
    return _jaxlib_supported()
  return "convolution" in named[YNN_FUSION_FLAG]
