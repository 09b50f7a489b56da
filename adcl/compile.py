"""`python -m adcl.compile --config configs/X.py --topology v4-32 [--config.KEY=VALUE ...]`:
the TPU preflight.

Compiles the training step that `adcl.train` would run for the config (the same build: model,
attack, views, loss, optimiser and batch form) for a Cloud TPU slice that is not here, with the
TPU compiler (libtpu) on any host, and prints what a paid slice would otherwise tell: whether it
fits in each chip's HBM, the FLOPs of a step, the compiler's own roofline bound on its time,
and how long the compile took. `--embed` does the same for the evaluation's embedding
function, `--max_batch` finds the largest global batch that fits, `--out FILE` writes the
report as JSON. Nothing runs: no data is read and no TPU is needed.

A separate command rather than a mode of adcl.train: it needs neither the data nor a workdir,
and what it reports is a table, not a run.
"""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Optional

from absl import flags, logging

from adcl import cli, errors, tpu

# What the preflight asks of the TPU compiler by default: its least effort at minimising the
# step's run time, which compiles the ResNet-50 224 px steps several times faster with the same
# arguments, outputs and FLOPs but a smaller program and up to 2% fewer temporaries than a full
# compile (docs/launching.md has the measurements). So a quick compile counts as fitting only
# with QUICK_MARGIN of the chip's HBM to spare; `full=True` compiles as training does.
QUICK_OPTIONS = {"exec_time_optimization_effort": -1.0}
QUICK_MARGIN = 0.08

# Per-chip batches the --max_batch search tries are multiples of this (the TPU's tiles: a batch
# of 8k fills them; a finer answer would not be used).
BATCH_GRANULE = 8


@dataclasses.dataclass
class Report:
  """One compiled program on one slice. Bytes and FLOPs are per chip: the program is the same
  on each (SPMD), each with its share of the batch."""

  program: str  # 'train_step' or 'embed'.
  topology: str
  libtpu_topology: str
  device_kind: str
  chips: int
  hosts: int
  global_batch: int
  batch_per_chip: int
  batch_form: str  # What the step is fed ('images', 'crops', 'views'), with its shape.
  hbm_bytes: int
  peak_flops: float  # The chip's dense bfloat16 FLOP/s.
  argument_bytes: int
  output_bytes: int
  alias_bytes: int  # Outputs that reuse their argument's buffer (the donated state).
  temp_bytes: int
  code_bytes: int
  flops: float  # Per chip, per step.
  # The compiler's roofline estimate of one step; 0 where it gives none (it gives a negative
  # number for programs it cannot cost, as for the ResNet-50 steps).
  optimal_seconds: float
  compile_seconds: float
  full_compile: bool  # Compiled as training compiles (else QUICK_OPTIONS).

  @property
  def in_use_bytes(self) -> int:
    """HBM a chip holds while the step runs: arguments, outputs not aliased to them, temporaries
    and the program itself."""
    return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
            + self.code_bytes)

  @property
  def usable_bytes(self) -> int:
    """The HBM a program may use and count as fitting: all of it for a full compile; less
    QUICK_MARGIN for a quick one, whose figures run a little low."""
    return int(self.hbm_bytes * (1 if self.full_compile else 1 - QUICK_MARGIN))

  @property
  def fits(self) -> bool:
    return self.in_use_bytes <= self.usable_bytes

  @property
  def compute_seconds(self) -> float:
    """One step's FLOPs at the chip's peak rate: the least time any schedule can take."""
    return self.flops / self.peak_flops

  @property
  def bound_seconds(self) -> float:
    """The larger of the compiler's estimate and the compute time."""
    return max(self.optimal_seconds, self.compute_seconds)

  @property
  def images_per_s_bound(self) -> float:
    """Source images a second at bound_seconds a step: a bound, not a forecast."""
    return self.global_batch / self.bound_seconds if self.bound_seconds > 0 else 0.0

  @classmethod
  def from_dict(cls, record: dict) -> "Report":
    """A Report from its as_dict() (extra keys ignored): to print a table of a saved record."""
    return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls)})

  def as_dict(self) -> dict:
    return {**dataclasses.asdict(self), "in_use_bytes": self.in_use_bytes,
            "usable_bytes": self.usable_bytes, "fits": self.fits,
            "compute_seconds": self.compute_seconds,
            "images_per_s_bound": self.images_per_s_bound}


class DoesNotFit(ValueError):
  """The compiled program needs more HBM than the chip has."""

  def __init__(self, message: str, needed_bytes: Optional[int]):
    super().__init__(message)
    self.needed_bytes = needed_bytes
    self.compiler_message = ""  # The TPU compiler's own out-of-memory line, where it said one.


def source_shape(config) -> tuple[tuple, bool]:
  """((H, W, C) of the source's images, whether they are encoded records the host crops).

  Records: their manifest where DATA_DIR has one, else encoded RGB (converted image folders,
  as the ImageNet recipes read). Other sources: data.load_size where set, else the dataset's
  known shape (configs.IMAGE_SHAPES).
  """
  from adcl import configs
  from adcl.data import shards

  data = config.data
  if data.source == "records":
    try:
      manifest = shards.read_manifest(data.data_dir, data.train_split)
    except (OSError, ValueError):
      return (data.image_size, data.image_size, 3), True
    if manifest["encoding"] == "encoded":
      return (data.image_size, data.image_size, manifest["channels"]), True
    return tuple(manifest["shape"]), False
  known = configs.IMAGE_SHAPES.get(data.name)
  if data.load_size and known:
    return (data.load_size, data.load_size, known[-1]), False
  if known is None:
    raise ValueError(f"config.data.name: {data.name!r} has no known image shape; the preflight "
                     f"knows {', '.join(sorted(configs.IMAGE_SHAPES))} and converted records")
  return known, False


# The TPU compiler's out-of-memory messages, in the forms libtpu has used: 'the total memory
# required for HLO temporaries (16.35T) exceeds available HBM (15.75G)' and 'Used 40.52G of
# 31.25G hbm'.
_HBM_NEEDED = (re.compile(r"\(([\d.]+)([KMGT]?)\) exceeds available HBM"),
               re.compile(r"Used ([\d.]+)([KMGT]?) of [\d.]+[KMGT]? hbm"))
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def needed_bytes(message: str) -> Optional[int]:
  """The HBM a program needed, from the TPU compiler's out-of-memory message; None if the
  message does not say."""
  for pattern in _HBM_NEEDED:
    match = pattern.search(message)
    if match:
      return int(float(match.group(1)) * _UNITS[match.group(2)])
  return None


def gib(count: float) -> str:
  return f"{count / tpu.GIB:.2f} GiB"


def _too_large(config, tpu_slice: tpu.Slice, program: str, batch: int,
               needed: Optional[int], full: bool, compiler_said: bool = False) -> DoesNotFit:
  chip = tpu_slice.generation
  if not needed:
    need = "does not fit in HBM"
  elif compiler_said:  # Its temporaries alone, as far as the compiler counted before it gave up.
    need = f"needs more than {gib(needed)} of HBM per chip (the compiler's count)"
  else:
    need = f"needs {gib(needed)} of HBM per chip"
  margin = "" if full else (f" (a quick compile counts {100 * (1 - QUICK_MARGIN):.0f}% of it; "
                            "--full_compile counts all)")
  return DoesNotFit(
      f"{program} at global batch {batch} ({batch // tpu_slice.chips} a chip) on "
      f"{tpu_slice.name} {need}; a {chip.device_kind} chip has {chip.hbm_gib:g} GiB{margin}: "
      f"lower train.batch_size (--max_batch finds the largest that fits), use a larger slice"
      + ("" if config.model.remat else ", or set model.remat=True"), needed)


def compile_program(config, tpu_slice: tpu.Slice, batch: Optional[int] = None,
                    program: str = "train_step", full: bool = False) -> Report:
  """Compile `program` of `config` for `tpu_slice` at global batch `batch` (default: the
  config's train.batch_size, or eval.batch_size for 'embed'): its Report, or DoesNotFit.
  `full`: with the compiler's default effort, as training compiles (else QUICK_OPTIONS)."""
  import jax
  from adcl import build, configs, step

  is_step = program == "train_step"
  batch = int(batch or (config.train.batch_size if is_step else config.eval.batch_size))
  config = config.copy_and_resolve_references()
  config.train.batch_size = batch if is_step else config.train.batch_size
  config.eval.batch_size = config.eval.batch_size if is_step else batch
  configs.validate(config, tpu_slice.chips, tpu_slice.hosts, check_data=False)
  shape, encoded = source_shape(config)
  size = config.data.image_size
  per_epoch = max(1, configs.TRAIN_IMAGES.get(config.data.name, 100 * batch) // batch)
  steps = config.train.num_steps or config.train.num_epochs * per_epoch
  mesh = step.data_mesh(tpu.devices(tpu_slice))
  trainer = build.trainer(config, (size, size, shape[-1]), per_epoch, steps, mesh=mesh)
  state = trainer.abstract_state()
  if is_step:
    inputs = build.step_batch_shapes(config, shape, batch, trainer.data_sharding, encoded)
    function, arguments = trainer.train_step, (state, inputs)
    form = " ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in inputs.items())
  else:
    images = jax.ShapeDtypeStruct((batch, size, size, shape[-1]), jax.numpy.float32,
                                  sharding=trainer.data_sharding)
    function, arguments = trainer.embed_fn(), (state.params, state.batch_stats, images)
    form = f"images float32{list(images.shape)}"
  start = time.perf_counter()
  try:
    compiled = function.lower(*arguments).compile(None if full else dict(QUICK_OPTIONS))
  except Exception as error:  # The TPU compiler's out-of-memory is a runtime error.
    if "RESOURCE_EXHAUSTED" not in str(error) and "hbm" not in str(error).lower():
      raise
    too_large = _too_large(config, tpu_slice, program, batch, needed_bytes(str(error)), full,
                           compiler_said=True)
    too_large.compiler_message = str(error).strip().splitlines()[0][:500]
    raise too_large from None
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  report = Report(
      program=program, topology=tpu_slice.name, libtpu_topology=tpu_slice.topology_name,
      device_kind=tpu_slice.generation.device_kind, chips=tpu_slice.chips,
      hosts=tpu_slice.hosts, global_batch=batch, batch_per_chip=batch // tpu_slice.chips,
      batch_form=form, hbm_bytes=tpu_slice.hbm_bytes,
      peak_flops=tpu_slice.generation.peak_tflops * 1e12,
      argument_bytes=int(memory.argument_size_in_bytes),
      output_bytes=int(memory.output_size_in_bytes),
      alias_bytes=int(memory.alias_size_in_bytes), temp_bytes=int(memory.temp_size_in_bytes),
      code_bytes=int(memory.generated_code_size_in_bytes), flops=float(cost.get("flops", 0.0)),
      optimal_seconds=max(0.0, float(cost.get("optimal_seconds", 0.0))),
      compile_seconds=seconds, full_compile=full)
  if not report.fits:
    raise _too_large(config, tpu_slice, program, batch, report.in_use_bytes, full)
  return report


def max_batch(config, tpu_slice: tpu.Slice, program: str = "train_step", full: bool = False,
              progress=logging.info, resolution: float = 0.0,
              tried: Optional[dict] = None) -> tuple[int, list]:
  """The largest global batch of `program` that fits in the slice's HBM, a multiple of
  BATCH_GRANULE images per chip (0 if not even that fits), and [(batch, fits, bytes needed or
  None)] of each compile it took.

  HBM grows about linearly with the batch, so each compile's need (from the report, or the
  compiler's out-of-memory message) gives a line through the two nearest batches, and the next
  batch tried is where that line meets the chip's HBM; a bisection step (a doubling while
  nothing failed) where the line says nothing new, and after a guess that landed on the same
  side as the compile before it. It ends when a fitting batch and one a granule larger that
  does not are known, or, with `resolution` r > 0, one at most r x the fitting batch larger
  (fewer compiles for a survey of many recipes; the answer is then within that fraction of the
  largest).

  `tried` ({batch per chip: (fits, bytes needed or None)}) holds the compiles of this search
  made before, and gets each new one as it ends: a caller that saves it at each `progress` can
  resume a search that was cut off without compiling again what it answered.
  """
  chips, granule = tpu_slice.chips, BATCH_GRANULE
  default = config.train.batch_size if program == "train_step" else config.eval.batch_size
  tried = {} if tried is None else tried
  fits_at = max((b for b, (ok, _) in tried.items() if ok), default=0)
  fails_at = min((b for b, (ok, _) in tried.items() if not ok), default=None)

  def attempt(per_chip: int) -> None:
    nonlocal fits_at, fails_at
    try:
      report = compile_program(config, tpu_slice, per_chip * chips, program, full)
      tried[per_chip] = (True, report.in_use_bytes)
      fits_at = max(fits_at, per_chip)
    except DoesNotFit as error:
      tried[per_chip] = (False, error.needed_bytes)
      fails_at = per_chip if fails_at is None else min(fails_at, per_chip)
    progress("%s on %s: batch %d (%d a chip) %s", program, tpu_slice.name, per_chip * chips,
             per_chip, "fits" if tried[per_chip][0] else "does not fit")

  def predicted() -> Optional[int]:
    """Where the line through the two nearest known needs meets the usable HBM."""
    known = {b: need for b, (_, need) in tried.items() if need}
    fitting = sorted(b for b in known if tried[b][0])
    failing = sorted(b for b in known if not tried[b][0])
    pair = fitting[-1:] + failing[:1] if fitting and failing else sorted(known)[-2:]
    if len(pair) < 2 or known[pair[0]] == known[pair[1]]:
      return None
    (b0, b1), (n0, n1) = pair, (known[pair[0]], known[pair[1]])
    usable = tpu_slice.hbm_bytes * (1 if full else 1 - QUICK_MARGIN)
    return int(b0 + (usable - n0) * (b1 - b0) / (n1 - n0)) // granule * granule

  if not tried:
    attempt(max(granule, default // chips // granule * granule))

  def settled() -> bool:
    return fails_at is not None and fails_at - fits_at <= max(granule, resolution * fits_at)

  sides, guessed = [], False  # Whether each compile fitted; whether the last was a guess.
  while not settled():
    low, guess = fits_at, predicted()
    # Near the chip's capacity the need is far from a line (the compiler trades recomputation
    # for memory; past it, it counts only what it reached), and the line's guesses can creep
    # toward the edge a few granules at a time from one side: a guess that landed on the side
    # of the compile before it is followed by a bisection (a doubling while nothing failed).
    creeping = guessed and len(sides) > 1 and sides[-1] == sides[-2]
    if fails_at is None:  # Grow: to the line's answer, at least a granule; else double.
      candidate = max(guess, low + granule) if guess and not creeping else 2 * low
    elif guess is not None and low < guess < fails_at and not creeping:
      candidate = guess
    else:
      candidate = (low + fails_at) // 2 // granule * granule
    if guess is not None and guess <= low and fails_at is None:
      candidate = low + granule  # The line says the largest is found: check one granule up.
    candidate = max(candidate, low + granule)
    if fails_at is not None:
      candidate = min(candidate, fails_at - granule)
    guessed = candidate == guess
    attempt(candidate)
    sides.append(tried[candidate][0])
  history = [(b * chips, ok, need) for b, (ok, need) in sorted(tried.items())]
  return fits_at * chips, history


ROWS = (("topology", lambda r: f"{r.topology} ({r.libtpu_topology}, {r.device_kind})"),
        ("chips / hosts", lambda r: f"{r.chips} / {r.hosts}"),
        ("global batch (per chip)", lambda r: f"{r.global_batch} ({r.batch_per_chip})"),
        ("program input", lambda r: r.batch_form),
        ("HBM per chip in use", lambda r: f"{gib(r.in_use_bytes)} of {gib(r.hbm_bytes)} "
                                          f"({100 * r.in_use_bytes / r.hbm_bytes:.0f}%; "
                                          f"fits below {gib(r.usable_bytes)})"),
        ("  arguments / outputs", lambda r: f"{gib(r.argument_bytes)} / {gib(r.output_bytes)} "
                                            f"({gib(r.alias_bytes)} aliased)"),
        ("  temporaries / program", lambda r: f"{gib(r.temp_bytes)} / {gib(r.code_bytes)}"),
        ("GFLOP per chip per step", lambda r: f"{r.flops / 1e9:.1f}"),
        ("step at peak FLOP/s", lambda r: f"{r.compute_seconds * 1e3:.2f} ms "
                                          f"({r.peak_flops / 1e12:g} TFLOP/s)"),
        ("compiler's optimal step", lambda r: f"{r.optimal_seconds * 1e3:.2f} ms"
         if r.optimal_seconds else "not given"),
        ("images/s bound", lambda r: f"{r.images_per_s_bound:,.0f}"),
        ("compile time", lambda r: f"{r.compile_seconds:.1f} s "
                                   f"({'full' if r.full_compile else 'quick'})"))


def table(report: Report) -> str:
  """The report as two aligned columns, headed by the program."""
  width = max(len(name) for name, _ in ROWS)
  lines = [f"{report.program} on {report.topology}"]
  lines += [f"  {name:<{width}}  {value(report)}" for name, value in ROWS]
  return "\n".join(lines)


# Set in the child process that does the compiles (run_isolated).
CHILD = "ADCL_COMPILE_CHILD"


def run_isolated(command: list, what: str) -> None:
  """`command` (this command again, as the child that compiles) in a process of its own.

  libtpu can die while compiling (a segfault deep in the TPU compiler: seen compiling the
  quickstart's step for v6e-8 with libtpu 0.0.42), which no Python handler sees. The child's
  stdout (the tables) passes through as it comes; its stderr is shown when it exits, or, if a
  signal killed it, replaced by one line (the native trace with ADCL_DEBUG=1)."""
  child = subprocess.run(command, env={**os.environ, CHILD: "1"}, stderr=subprocess.PIPE,
                         text=True)
  if child.returncode >= 0 or os.environ.get("ADCL_DEBUG") == "1":
    sys.stderr.write(child.stderr)
  if child.returncode > 0:
    raise SystemExit(child.returncode)  # The child printed its own one-line error.
  if child.returncode < 0:
    raise errors.ChildCrashed(
        f"the TPU compiler crashed ({signal.Signals(-child.returncode).name}) compiling "
        f"{what}: a libtpu fault, not a verdict on memory; ADCL_DEBUG=1 shows its trace. "
        "Try --full_compile, another libtpu version, or report it with that trace")


def main(argv):
  if len(argv) > 1:
    raise errors.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  tpu_slice = tpu.get_slice(f.topology)
  if not tpu.compiler_available():
    raise errors.MissingDependency(tpu.INSTALL_HINT)
  if os.environ.get(CHILD) != "1":
    run_isolated([sys.executable, "-m", "adcl.compile", *sys.argv[1:]],
                 f"{f.config.model.architecture} for {tpu_slice.name}")
    return
  programs = ["train_step"] + (["embed"] if f.embed else [])
  from ml_collections import config_flags

  result = {"config": config_flags.get_config_filename(f["config"]),
            "overrides": config_flags.get_override_values(f["config"]), "reports": []}
  for program in programs:
    if f.max_batch:
      largest, history = max_batch(f.config, tpu_slice, program, f.full_compile)
      print(f"{program} on {tpu_slice.name}: the largest global batch that fits is {largest} "
            f"({largest // tpu_slice.chips} a chip; {len(history)} compiles)")
      result.setdefault("max_batch", {})[program] = {"batch": largest, "tried": history}
      if not largest:
        continue
      report = compile_program(f.config, tpu_slice, largest, program, f.full_compile)
    else:
      report = compile_program(f.config, tpu_slice, program=program, full=f.full_compile)
    print(table(report))
    result["reports"].append(report.as_dict())
  if f.out:
    from adcl import paths
    paths.write_atomic(paths.resolve(f.out), json.dumps(result, indent=1))
    print(f"wrote {f.out}")


def define_flags(flag_values=None) -> None:
  from ml_collections import config_flags

  fv = flags.FLAGS if flag_values is None else flag_values
  config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True,
                                  flag_values=fv)
  flags.DEFINE_string("topology", "v4-8", "Cloud TPU slice name: " + ", ".join(
      tpu.known_slices()) + ".", flag_values=fv)
  flags.DEFINE_bool("embed", False, "Also compile the evaluation's embedding function at "
                    "eval.batch_size.", flag_values=fv)
  flags.DEFINE_bool("max_batch", False, "Find the largest global batch that fits (a few "
                    "compiles), then report at that batch.", flag_values=fv)
  flags.DEFINE_bool("full_compile", False, "Compile with the TPU compiler's default effort, "
                    "as training does (minutes for ResNet-50 on a small host), instead of its "
                    "least run-time optimisation effort (the same buffers within 0.2%).",
                    flag_values=fv)
  flags.DEFINE_string("out", None, "Also write the report here as JSON.", flag_values=fv)
  flags.mark_flags_as_required(["config"], flag_values=fv)


if __name__ == "__main__":
  define_flags()
  cli.run(main, "adcl.compile")
