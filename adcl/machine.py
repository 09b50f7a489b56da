"""What identifies a run's numerics: the processor and its vector extensions, the jax and
jaxlib versions, the backend's device kind. Two machines that differ in any of these may round
floats differently (XLA:CPU picks its kernels by the vector extensions), and a long training run
carries that rounding into its final accuracy, so a study compares runs from one machine where
it can and says where it cannot."""

import os
import platform

# The extensions that change which kernels XLA:CPU and oneDNN run, when /proc/cpuinfo has them.
_VECTOR_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                 "amx_tile", "neon", "asimd", "sve")


def _cpu() -> tuple:
  """(model name, [vector extensions]) from /proc/cpuinfo; platform's words elsewhere."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model name") and model in ("", platform.machine()):
          model = value.strip()
        elif key in ("flags", "Features"):
          flags.update(value.split())
  except OSError:
    pass
  return model, [flag for flag in _VECTOR_FLAGS if flag in flags]


def identity() -> dict:
  """This process's machine, as recorded in a study run's study_run.json."""
  import jax
  import jaxlib
  model, vector = _cpu()
  return {"cpu": model, "vector": vector, "cores": os.cpu_count(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
          "device_kind": jax.devices()[0].device_kind}


def label(machine: dict) -> str:
  """One line naming what decides the numerics (not the core count, which does not)."""
  vector = "+".join(machine.get("vector") or []) or "no vector flags"
  return (f"{machine.get('cpu', '?')} ({vector}), jax {machine.get('jax', '?')}, "
          f"{machine.get('backend', '?')} {machine.get('device_kind', '?')}")
