"""The benchmarks run and report what they claim (tiny sizes: this checks them, not speed)."""

import json
import subprocess
import sys

from conftest import REPO, cli_env, write_idx_dataset

TINY = ["--model", "resnet_small", "--width", "4", "--image-size", "8", "--channels", "1",
        "--batch", "8", "--steps", "1", "--rounds", "1"]


def run_benchmark(script, *extra):
  result = subprocess.run([sys.executable, f"benchmarks/{script}", *TINY, *extra], cwd=REPO,
                          env=cli_env(devices=1, compilation_cache=False), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout, json.loads(result.stdout.strip().splitlines()[-1])


def test_step_time_times_several_conv_impls_side_by_side():
  stdout, last = run_benchmark("step_time.py", "--conv-impl", "xla,batch_minor",
                               "--fractions", "0.5")
  xla, batch_minor = (json.loads(line) for line in stdout.strip().splitlines()[-2:])
  assert (xla["conv_impl"], batch_minor["conv_impl"]) == ("xla", "batch_minor") and last == batch_minor
  for result in (xla, batch_minor):
    assert result["plain_images_per_s"] > 0 and result["clae_images_per_s"] > 0
    assert result["clae_gflop_per_step"] > result["plain_gflop_per_step"] > 0
    # adv.fraction 0.5 attacks half the batch: a step between the plain and the full CLAE one.
    assert result["clae_fraction_0.5_images_per_s"] > 0
    assert (result["plain_gflop_per_step"] < result["clae_fraction_0.5_gflop_per_step"]
            < result["clae_gflop_per_step"])
  # batch_minor's identity matmuls are real work, and XLA's cost analysis counts them.
  assert batch_minor["plain_gflop_per_step"] > xla["plain_gflop_per_step"]


def test_profile_step_splits_the_step_into_its_passes():
  table, result = run_benchmark("profile_step.py")
  parts = ("forward", "generation", "objective_plain", "objective_clae", "step_plain", "step_clae")
  assert set(result["ms"]) == set(parts) and all(result["ms"][p] > 0 for p in parts)
  flops = result["gflop"]
  # The counts must add up the way the step is built: one more forward and its backward for
  # the adversarial term, a forward and an input gradient for the generation.
  assert flops["objective_clae"] > flops["objective_plain"] > 2 * flops["forward"]
  assert flops["step_clae"] > flops["step_plain"] >= flops["objective_plain"]
  assert flops["generation"] > flops["forward"]
  assert result["clae_over_plain_flops"] > 1.3
  assert "| generation |" in table


def test_conv_layers_times_every_pass_with_and_without_ynnpack_convolutions():
  result = subprocess.run([sys.executable, "benchmarks/conv_layers.py", "--batch", "1",
                           "--reps", "1"], cwd=REPO, env=cli_env(devices=1, compilation_cache=False),
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads(result.stdout.strip().splitlines()[-1])
  assert len(results) == 2  # adcl's default and jaxlib's, each from its own process.
  for rows in results.values():
    assert len(rows) == 7
    assert all(row[k] > 0 for row in rows
               for k in ("forward_ms", "input_grad_ms", "filter_grad_ms", "gflop"))
  assert result.stdout.count("| 32px 64->64 s1 |") == 1 and "| all |" in result.stdout


def test_gpu_check_runs_at_toy_size_and_writes_its_tables(tmp_path):
  """benchmarks/gpu_check.py --toy on CPU: every part runs (PyTorch's only where installed)
  and the JSON and markdown its header documents are written."""
  out = tmp_path / "out"
  result = subprocess.run(
      [sys.executable, "benchmarks/gpu_check.py", "--out", str(out), "--toy", "--fmnist",
       write_idx_dataset(tmp_path / "idx")], cwd=REPO, capture_output=True, text=True,
      env=cli_env(devices=1), timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((out / "gpu_check.json").read_text())
  assert set(report) >= {"device", "steps", "torch", "quickstart", "failures"}
  (step,) = report["steps"]
  assert (step["views"], step["dtype"], step["batch"]) == ("device", "bfloat16", 8)
  assert step["clae_images_per_s"] > 0 and step["compile_s"] > 0 and step["clae_mfu"] > 0
  quickstart = report["quickstart"]
  assert quickstart["steps"] == 4 and quickstart["views_on"] == "device"
  assert [s for s, _ in quickstart["knn_top1"]] == [4] and 0 <= quickstart["knn_top1"][0][1] <= 100
  torch_missing = [f for f in report["failures"] if "PyTorch is not installed" in f]
  assert len(report["torch"]) + len(torch_missing) == 1
  assert len(report["failures"]) == len(torch_missing)  # Nothing else failed.
  table = (out / "gpu_check.md").read_text()
  assert "| bfloat16 | 8 |" in table and "## Quickstart end to end" in table
