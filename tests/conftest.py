"""Test setup: 8 simulated CPU devices (set before jax is imported) and tiny data on disk."""

import gzip
import os
import shutil
import tempfile

# Test-only: the suite's programs are tiny and run for a few steps, so compiling them is most
# of their cost. LLVM's -O1 compiles them faster than XLA:CPU's default (-O2), and runs them
# about as fast; -O0 compiles faster still but runs the evaluation's longer loops (the probe,
# the attacks) several times slower (docs/performance.md). Every process the tests start gets
# it too (cli_env).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=1"
# Unless the caller chose a count (a CLI test's subprocess, whose config file imports this).
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " " + TEST_XLA_FLAGS
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite runs on the CPU; libtpu is installed for the TPU preflight's compiles only
# (tests/test_compile.py), which need no TPU runtime.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache for the whole test run, shared by the xdist workers and the
# command-line processes the tests start: many processes compile the same tiny programs (a run
# and its resumed rerun, three killed runs), and a hit returns the executable XLA made for the
# same program, flags and devices. It halves a CLI run's time (32 -> 14 s for 4 tiny steps).
# Tests that read the compiled program itself (HLO text, FLOP counts) run without it
# (cli_env(compilation_cache=False)). The controller removes it at the end of the run.
_RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"local-{os.getpid()}"
COMPILATION_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": os.path.join(tempfile.gettempdir(),
                                              f"adcl-test-jax-cache-{_RUN_ID}"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
for _key, _value in COMPILATION_CACHE.items():
  os.environ.setdefault(_key, _value)
# Cached raw-pixel baselines (adcl.evaluation.pixels) of this run only, never the user's.
os.environ.setdefault("ADCL_CACHE_DIR", os.path.join(tempfile.gettempdir(),
                                                     f"adcl-test-cache-{_RUN_ID}"))


def pytest_sessionfinish(session):
  if not hasattr(session.config, "workerinput"):  # The controller (or a run without xdist).
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
    shutil.rmtree(os.environ["ADCL_CACHE_DIR"], ignore_errors=True)


from adcl import xla_cpu

# What every command does at start (adcl/cli.py): the tests run the code as the commands do.
xla_cpu.apply_defaults()


def _write_small_replicated_arrays_whole() -> None:
  """A test-only speed-up: Orbax splits each replicated array across its replicas so that
  they write in parallel, and on the tests' 8 simulated devices every (shape, slice) of the
  tiny models' arrays is a compiled slice op of its own. Arrays under 1 MiB per slice are
  written whole by one replica here; the files are the same."""
  import logging
  import jax
  import orbax.checkpoint as ocp

  absl_logger = logging.getLogger("absl")
  absl_logger.disabled = True  # Orbax warns about any override; this one is intended.
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=2**20),
        override=True)
  finally:
    absl_logger.disabled = False


_write_small_replicated_arrays_whole()

import numpy as np
import pytest

from adcl import configs


def torchvision_crops(count: int, scale, seed: int = 0):
  """(area, aspect) [count] of torchvision's RandomResizedCrop sampler simulated in numpy (a
  square image): area ~ U(scale), log aspect ~ U(log 3/4, log 4/3), the first of 10 tries that
  fits, else the whole image. Rejection favours small areas."""
  rng = np.random.default_rng(seed)
  a = rng.uniform(scale[0], scale[1], (count, 10))
  r = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), (count, 10)))
  fits = (np.sqrt(a * r) <= 1) & (np.sqrt(a / r) <= 1)
  first = fits.argmax(1)
  return (np.where(fits.any(1), a[np.arange(count), first], 1.0),
          np.where(fits.any(1), r[np.arange(count), first], 1.0))


def write_idx(path: str, array: np.ndarray, compress: bool = True) -> None:
  """An unsigned-byte IDX file (MNIST format) holding `array`."""
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  opener = gzip.open if compress else open
  with opener(path + (".gz" if compress else ""), "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def write_idx_dataset(directory, num_train=64, num_test=40, size=12, seed=0) -> str:
  """A tiny 10-class IDX dataset whose classes differ in brightness pattern."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  for split, n, stems in (("train", num_train, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")),
                          ("test", num_test, ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))):
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, size, size)) + (labels * 19)[:, None, None]
    write_idx(os.path.join(directory, stems[0]), images)
    write_idx(os.path.join(directory, stems[1]), labels)
  return str(directory)


@pytest.fixture
def idx_dir(tmp_path):
  return write_idx_dataset(tmp_path / "idx")


def tiny_config(data_dir: str) -> "ml_collections.ConfigDict":
  """A config that trains a 4-channel two-block ResNet on 8 px crops of the tiny IDX set in
  seconds."""
  c = configs.base()
  c.data.source = "idx"
  c.data.name = "tiny"
  c.data.data_dir = data_dir
  c.data.image_size = 8
  c.data.mean, c.data.std = (0.3,), (0.3,)
  c.model.architecture = "resnet_tiny"
  c.model.width = 4
  c.model.projector = (16, 8)
  c.loss.name = "simclr"
  c.loss.temperature = 0.5
  c.optim.name = "sgd"
  c.optim.lr = 0.05
  c.train.batch_size = 16
  c.train.num_steps = 4
  c.train.log_every = 2
  c.train.checkpoint_every = 2
  c.eval.every = 0
  c.eval.knn_k = 10
  c.eval.batch_size = 16
  return c


@pytest.fixture
def tiny(idx_dir):
  return tiny_config(idx_dir)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_env(devices: int = 0, compilation_cache: bool = True, **extra) -> dict:
  """The environment for a CLI subprocess: this one without the forced 8 devices (`devices`
  forces that many instead), with or without the shared compilation cache, plus `extra`."""
  drop = set() if compilation_cache else set(COMPILATION_CACHE)
  env = {k: v for k, v in os.environ.items() if k not in drop}
  env["XLA_FLAGS"] = TEST_XLA_FLAGS + (
      f" --xla_force_host_platform_device_count={devices}" if devices else "")
  env.update(extra)
  return env


def write_config(tmp_path, idx_dir, **overrides) -> str:
  """A config file for the CLI: the tiny test config with `overrides` (dotted keys)."""
  lines = ["import sys", f"sys.path.insert(0, {os.path.join(REPO, 'tests')!r})",
           "from conftest import tiny_config", "def get_config():",
           f"  c = tiny_config({str(idx_dir)!r})"]
  lines += [f"  c.{key} = {value!r}" for key, value in overrides.items()]
  lines.append("  return c")
  path = tmp_path / "config.py"
  path.write_text("\n".join(lines) + "\n")
  return str(path)
