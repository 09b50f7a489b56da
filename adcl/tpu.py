"""Cloud TPU slices by name ('v4-32', 'v5e-8', ...): their chips, hosts and memory, and their
devices for compiling on a host that has no TPU (`jax.experimental.topologies`, with libtpu
installed: `pip install -e ".[tpu-compile]"`).

A slice name counts what Cloud TPU counts: TensorCores for v4 and v5p (two per chip, which jax
runs as one device per chip, "megacore"), chips for v5e and v6e (one core each). So v4-32 is
16 chips on 4 hosts and v5e-8 is 8 chips on one host. Hosts hold 4 chips on multi-host slices;
v5e and v6e slices of up to 8 chips are one host.
"""

import dataclasses
import importlib.util
import math
import os
import sys

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Generation:
  """One TPU generation as libtpu names its topologies."""

  topology: str  # libtpu's prefix: 'v4' in 'v4:2x2x4'.
  device_kind: str  # What jax reports as device.device_kind.
  hbm_gib: float  # HBM per chip.
  peak_tflops: float  # Dense bfloat16 matrix FLOP/s per chip, in 1e12.
  cores_per_chip: int  # TensorCores a slice name counts per chip.
  chip_config: str  # 'megacore': one jax device per chip of 2 cores; 'default': 1 core.
  dims: int  # Torus dimensions: 3 (v4, v5p) or 2 (v5e, v6e).
  single_host_chips: int  # The largest slice on one host.


# The one place adcl states what a TPU chip has (Cloud TPU's system architecture pages).
GENERATIONS = {
    "v4": Generation("v4", "TPU v4", 32, 275, 2, "megacore", 3, 4),
    "v5p": Generation("v5", "TPU v5", 95, 459, 2, "megacore", 3, 4),
    "v5e": Generation("v5e", "TPU v5 lite", 16, 197, 1, "default", 2, 8),
    "v6e": Generation("v6e", "TPU v6 lite", 32, 918, 1, "default", 2, 8),
}
ALIASES = {"v5litepod": "v5e"}  # Cloud TPU's other name for v5e slices.
# Chip grids of the slices adcl knows, by chip count: the shapes Cloud TPU makes.
GRIDS_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4),
            128: (4, 4, 8), 256: (4, 8, 8), 512: (8, 8, 8)}
GRIDS_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8),
            128: (8, 16), 256: (16, 16)}
CHIPS_PER_HOST = 4  # On multi-host slices.


@dataclasses.dataclass(frozen=True)
class Slice:
  """A named slice: `name` as Cloud TPU writes it ('v4-32')."""

  name: str
  generation: Generation
  grid: tuple  # Chips along each torus dimension.

  @property
  def chips(self) -> int:
    return math.prod(self.grid)

  @property
  def hosts(self) -> int:
    single = self.chips <= self.generation.single_host_chips
    return 1 if single else self.chips // CHIPS_PER_HOST

  @property
  def topology_name(self) -> str:
    return f"{self.generation.topology}:{'x'.join(map(str, self.grid))}"

  @property
  def hbm_bytes(self) -> int:
    """HBM of one chip."""
    return int(self.generation.hbm_gib * GIB)

  def host_bounds(self) -> tuple:
    """Chips per host along each of the three dimensions libtpu takes."""
    if self.hosts == 1:
      return tuple(self.grid) + (1,) * (3 - len(self.grid))
    return (2, 2, 1)

  def wrap(self) -> tuple:
    """Which dimensions close into a torus: full v4/v5p cubes from 64 chips, v5e/v6e sides of
    16 chips."""
    if self.generation.dims == 3:
      return (self.chips >= 64,) * 3
    return tuple(side >= 16 for side in self.grid) + (False,)


def known_slices() -> list[str]:
  """Every slice name `get_slice` accepts, smallest first within each generation."""
  names = []
  for key, generation in GENERATIONS.items():
    grids = GRIDS_3D if generation.dims == 3 else GRIDS_2D
    names += [f"{key}-{chips * generation.cores_per_chip}" for chips in grids]
  return names


def get_slice(name: str) -> Slice:
  """The slice called `name` ('v4-32', 'v5e-8', 'v5litepod-8', 'v6e-256'); a ValueError listing
  the known names otherwise."""
  family, _, count = name.strip().lower().partition("-")
  family = ALIASES.get(family, family)
  generation = GENERATIONS.get(family)
  if generation is not None and count.isdigit():
    grids = GRIDS_3D if generation.dims == 3 else GRIDS_2D
    cores = int(count)
    if cores % generation.cores_per_chip == 0 and cores // generation.cores_per_chip in grids:
      return Slice(f"{family}-{cores}", generation, grids[cores // generation.cores_per_chip])
  raise ValueError(f"unknown TPU slice {name!r}; known: {', '.join(known_slices())}")


def compiler_available() -> bool:
  """Whether libtpu (the TPU compiler) is installed."""
  return importlib.util.find_spec("libtpu") is not None


INSTALL_HINT = ('the TPU compiler is not installed: pip install -e ".[tpu-compile]" (libtpu, '
                'for the installed jax)')


def devices(tpu_slice: Slice) -> list:
  """The slice's jax devices, one per chip, for compiling only (nothing runs on them).
  Raises errors.MissingDependency where libtpu is not installed."""
  from adcl import errors

  if not compiler_available():
    raise errors.MissingDependency(INSTALL_HINT)
  from jax.experimental import topologies

  if not attached_chips():
    # libtpu lets one process at a time load it (a lock file for the chips); a host without
    # chips has none to guard, and preflights may compile side by side. Its start-up also
    # looks for the slice it runs on and prints what it did not find: name this one.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", tpu_slice.name)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  topology = topologies.get_topology_desc(
      platform="tpu", topology_name=tpu_slice.topology_name,
      chip_config_name=tpu_slice.generation.chip_config,
      chips_per_host_bounds=tpu_slice.host_bounds(), num_slices=1, wrap=tpu_slice.wrap())
  return list(topology.devices)


GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips attach as PCI devices of Google's vendor id.


def attached_chips(pci_devices: str = "/sys/bus/pci/devices") -> int:
  """How many Google PCI devices (TPU chips) this host has; 0 where there is no such tree."""
  count = 0
  try:
    entries = os.listdir(pci_devices)
  except OSError:
    return 0
  for entry in entries:
    try:
      with open(os.path.join(pci_devices, entry, "vendor")) as f:
        count += f.read().strip() == GOOGLE_PCI_VENDOR
    except OSError:
      continue
  return count


def skip_absent_runtime(environ=os.environ, pci_devices: str = "/sys/bus/pci/devices") -> bool:
  """Where libtpu is installed (the preflight's compiler) on a host with no TPU chip, keep jax
  from starting the TPU runtime, which would print its failed search for chips at every
  command's start: JAX_PLATFORMS becomes the CPU (and CUDA where jax's CUDA plugin is
  installed). A JAX_PLATFORMS the caller set is left as it is. True when it set it."""
  if "JAX_PLATFORMS" in environ or not compiler_available() or attached_chips(pci_devices):
    return False
  cuda = any(importlib.util.find_spec(f"jax_cuda{v}_plugin") for v in (12, 13))
  environ["JAX_PLATFORMS"] = "cuda,cpu" if cuda else "cpu"
  if "jax" in sys.modules and environ is os.environ:  # jax read the variable on import.
    sys.modules["jax"].config.update("jax_platforms", environ["JAX_PLATFORMS"])
  return True
