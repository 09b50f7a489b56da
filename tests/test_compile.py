"""The TPU preflight (adcl.compile): the real steps compiled by the TPU compiler for slices
that are not here, what it reports, and its one-line refusals."""

import json
import os
import subprocess
import sys

import jax
import pytest

from adcl import build, compile as preflight, configs, errors, tpu
from adcl.step import data_mesh
from conftest import REPO, cli_env


def test_slice_names_give_chips_hosts_and_libtpu_topologies():
  v4 = tpu.get_slice("v4-32")  # v4 names count TensorCores: 2 a chip.
  assert (v4.chips, v4.hosts, v4.topology_name, v4.host_bounds()) == (16, 4, "v4:2x2x4",
                                                                      (2, 2, 1))
  v5e = tpu.get_slice("v5litepod-8")  # v5e names count chips; up to 8 on one host.
  assert (v5e.name, v5e.chips, v5e.hosts, v5e.topology_name) == ("v5e-8", 8, 1, "v5e:2x4")
  assert tpu.get_slice("v6e-256").wrap() == (True, True, False)
  assert tpu.get_slice("v5p-8").hbm_bytes == 95 * 2**30
  for bad in ("v4-6", "v7-8", "v4", "tpu"):
    with pytest.raises(ValueError, match="unknown TPU slice .* known: v4-8, v4-16"):
      tpu.get_slice(bad)
  assert all(tpu.get_slice(name).name == name for name in tpu.known_slices())


def test_a_host_without_chips_keeps_jax_off_the_tpu_runtime(tmp_path):
  """libtpu is installed here (the suite compiles with it) and this host has no TPU chip."""
  assert tpu.compiler_available()
  pci = tmp_path / "pci"
  (pci / "0000:00:04.0").mkdir(parents=True)
  (pci / "0000:00:04.0" / "vendor").write_text("0x1af4\n")  # Not Google's.
  environ = {}
  assert tpu.skip_absent_runtime(environ, str(pci)) and environ["JAX_PLATFORMS"] in (
      "cpu", "cuda,cpu")
  chosen = {"JAX_PLATFORMS": "tpu"}
  assert not tpu.skip_absent_runtime(chosen, str(pci)) and chosen["JAX_PLATFORMS"] == "tpu"
  (pci / "0000:00:05.0").mkdir()
  (pci / "0000:00:05.0" / "vendor").write_text("0x1ae0\n")  # A TPU chip.
  assert tpu.attached_chips(str(pci)) == 1 and not tpu.skip_absent_runtime({}, str(pci))


def quickstart():
  from configs import quickstart as recipe
  return recipe.get_config()


def test_the_quickstart_clae_step_compiles_for_a_tpu_slice_as_the_cpu_counts_it():
  """The step adcl.train runs, compiled for 4 v4 chips: memory fields positive and within a
  chip, and per chip the FLOPs that XLA counts for the same step at the chip's share of the
  batch on one CPU device (the TPU compiler fuses and pads differently: within 25%)."""
  config = quickstart()
  config.train.batch_size = 256
  report = preflight.compile_program(config, tpu.get_slice("v4-8"))
  assert (report.chips, report.global_batch, report.batch_per_chip) == (4, 256, 64)
  assert report.batch_form == "images uint8[256, 28, 28, 1]"
  assert min(report.argument_bytes, report.output_bytes, report.temp_bytes,
             report.alias_bytes) > 0 and report.fits
  assert report.alias_bytes <= report.argument_bytes  # The donated state.
  assert report.optimal_seconds > 0 and report.images_per_s_bound > 0

  cpu = build.trainer(config, (20, 20, 1), 100, 1000, mesh=data_mesh(jax.devices()[:1]))
  batch = build.step_batch_shapes(config, (28, 28, 1), 64, cpu.data_sharding)
  cpu_flops = cpu.train_step.lower(cpu.abstract_state(), batch).cost_analysis()["flops"]
  assert 0.75 < report.flops / cpu_flops < 1.25, (report.flops, cpu_flops)


def run_preflight(*args):
  return subprocess.run([sys.executable, "-m", "adcl.compile", *args], capture_output=True,
                        text=True, cwd=REPO, env=cli_env(), timeout=600)


def records_config(tmp_path, **overrides) -> str:
  """The ImageNet-100 recipe (encoded records: host-cut crops, views with blur, LARS,
  bfloat16) at toy size, as a config file."""
  lines = ["from adcl import configs", "def get_config():",
           "  c = configs.imagenet_recipe('imagenet100')",
           "  c.data.image_size, c.model.architecture, c.model.width = 16, 'resnet_tiny', 8",
           "  c.model.projector = (32, 16)"]
  lines += [f"  c.{key} = {value!r}" for key, value in overrides.items()]
  path = tmp_path / "records_config.py"
  path.write_text("\n".join(lines + ["  return c"]) + "\n")
  return str(path)


def test_the_preflight_command_compiles_a_records_crops_step_and_refuses_what_cannot_fit(
    tmp_path):
  out = tmp_path / "preflight.json"
  ok = run_preflight("--config", records_config(tmp_path), "--topology", "v5e-4",
                     "--config.train.batch_size=64", "--out", str(out))
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert "HBM per chip in use" in ok.stdout and "images/s bound" in ok.stdout
  (report,) = json.loads(out.read_text())["reports"]
  assert report["batch_form"] == ("crops uint8[64, 2, 32, 32, 3] crop_sizes int32[64, 2, 2]")
  assert report["chips"] == 4 and report["hbm_bytes"] == 16 * 2**30 and report["fits"]
  assert 0 < report["in_use_bytes"] < report["hbm_bytes"] and report["flops"] > 0

  # 2^20 images of 64 px a chip: far beyond a v5e's 16 GiB.
  big = run_preflight("--config", records_config(tmp_path, **{"data.image_size": 64}),
                      "--topology", "v5e-1", f"--config.train.batch_size={2**20}")
  lines = big.stderr.strip().splitlines()
  assert big.returncode == 1 and "Traceback" not in big.stderr, big.stderr[-3000:]
  assert lines[-1].startswith("adcl.compile: error: train_step at global batch 1048576"), lines
  for fragment in ("needs more than", "GiB of HBM per chip (the compiler's count)",
                   "TPU v5 lite chip has 16 GiB", "--max_batch"):
    assert fragment in lines[-1], lines[-1]

  unknown = run_preflight("--config", records_config(tmp_path), "--topology", "v4-6")
  assert unknown.returncode == 1 and unknown.stderr.strip().splitlines()[-1] == (
      "adcl.compile: error: unknown TPU slice 'v4-6'; known: " + ", ".join(tpu.known_slices()))


def test_max_batch_ends_between_a_batch_that_fits_and_one_a_granule_larger(monkeypatch):
  """The search on a stand-in compiler whose need is linear in the batch (2 GiB + 60 MiB an
  image; a quick compile fits below 92% of a v5e's 16 GiB: 217 a chip): the largest multiple
  of 8 a chip, in few compiles, also where the need is far from a line; a search cut off goes
  on from the compiles it answered."""
  v5e = tpu.get_slice("v5e-4")
  usable = v5e.hbm_bytes * (1 - preflight.QUICK_MARGIN)

  def fake_compile(config, tpu_slice, batch, program, full=False):
    need = 2 * 2**30 + (batch // tpu_slice.chips) * 60 * 2**20
    if need > usable:
      raise preflight.DoesNotFit("too large", need)
    return type("R", (), {"in_use_bytes": need})()

  monkeypatch.setattr(preflight, "compile_program", fake_compile)
  config = configs.base()
  config.train.batch_size = 256
  largest, history = preflight.max_batch(config, v5e, progress=lambda *a: None)
  assert largest == 216 * 4 and len(history) <= 4, history
  assert (216 * 4, True) in [h[:2] for h in history] and (224 * 4, False) in [
      h[:2] for h in history]

  # A need that curves up near the edge (as the real ones do); at a resolution of 1/16 the
  # search stops within 1/16 of the largest, in no more compiles than the exact one.
  def curving_compile(config, tpu_slice, batch, program, full=False):
    per_chip = batch // tpu_slice.chips
    need = 2 * 2**30 + per_chip * 20 * 2**20 + per_chip ** 2 * 2**17
    if need > usable:
      raise preflight.DoesNotFit("too large", need)
    return type("R", (), {"in_use_bytes": need})()

  monkeypatch.setattr(preflight, "compile_program", curving_compile)
  exact, exact_history = preflight.max_batch(config, v5e, progress=lambda *a: None)
  rough, rough_history = preflight.max_batch(config, v5e, progress=lambda *a: None,
                                             resolution=1 / 16)
  assert exact == 248 * 4 and exact * (1 - 1 / 16) <= rough <= exact
  assert len(rough_history) <= len(exact_history)

  # A need that flattens short of the capacity (the compiler recomputes rather than keeps)
  # and refusals whose counted need grows from the edge, as the survey's v5e-8 searches meet
  # them: the line's guesses alone crept down to the edge in 18 compiles.
  def flattening_compile(config, tpu_slice, batch, program, full=False):
    per_chip = batch // tpu_slice.chips
    if per_chip > 2488:
      raise preflight.DoesNotFit("too large", int((14.77 + (per_chip - 2496) * 0.0067) * 2**30))
    need = min(0.69 + per_chip * 0.0017, 14.2 + (per_chip % 7) * 0.05)
    return type("R", (), {"in_use_bytes": int(need * 2**30)})()

  v5e8 = tpu.get_slice("v5e-8")
  monkeypatch.setattr(preflight, "compile_program", flattening_compile)
  found, found_history = preflight.max_batch(config, v5e8, progress=lambda *a: None,
                                             resolution=1 / 16)
  assert 2488 * 8 * (1 - 1 / 16) <= found <= 2488 * 8 and len(found_history) <= 12

  monkeypatch.setattr(preflight, "compile_program", curving_compile)
  # Cut off after two compiles (the process killed), then resumed from the answers it kept:
  # the same answer, and only the compiles it had not made.
  class Killed(Exception):
    pass

  def killed_after_two(*_):
    if len(kept) == 2:
      raise Killed
  kept = {}
  with pytest.raises(Killed):
    preflight.max_batch(config, v5e, progress=killed_after_two, tried=kept)
  compiled = []
  monkeypatch.setattr(preflight, "compile_program",
                      lambda *args, **kwargs: compiled.append(args[2]) or curving_compile(
                          *args, **kwargs))
  resumed, resumed_history = preflight.max_batch(config, v5e, progress=lambda *a: None,
                                                 tried=dict(kept))
  assert (resumed, resumed_history) == (exact, exact_history)
  assert len(compiled) == len(exact_history) - 2 and not set(compiled) & {4 * b for b in kept}


def test_a_compiler_crash_ends_in_one_line():
  """libtpu can kill the process it compiles in (a segfault); the preflight compiles in a
  child process and turns its death into one line naming the signal."""
  suicide = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
  with pytest.raises(errors.ChildCrashed, match=r"^the TPU compiler crashed \(SIGSEGV\) "
                     r"compiling resnet50 for v4-8: a libtpu fault"):
    preflight.run_isolated(suicide, "resnet50 for v4-8")
  with pytest.raises(SystemExit) as failed:  # The child's own error: its exit code, as is.
    preflight.run_isolated([sys.executable, "-c", "raise SystemExit(3)"], "x")
  assert failed.value.code == 3


def test_without_libtpu_only_the_preflight_needs_it_and_it_says_how_to_install_it():
  env = cli_env(PYTHONPATH=os.path.join(REPO, "tests", "without_libtpu"))
  result = subprocess.run([sys.executable, "-m", "adcl.compile", "--config",
                           "configs/quickstart.py", "--topology", "v4-8"], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
      'adcl.compile: error: the TPU compiler is not installed: pip install -e ".[tpu-compile]" '
      "(libtpu, for the installed jax)"), result.stderr[-2000:]
  others = subprocess.run([sys.executable, "-c", "import adcl.train, adcl.evaluate, adcl.tpu; "
                           "from adcl import tpu; print(tpu.compiler_available())"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
  assert others.returncode == 0 and others.stdout.strip() == "False", others.stderr[-2000:]
