"""adcl on a host without TensorFlow (a managed GPU image): training, the step benchmark with
the views drawn in the step, and the prepared GPU check at toy size."""

import json
import os
import subprocess
import sys

from conftest import REPO, cli_env, write_config, write_idx_dataset


def test_training_and_step_time_without_tensorflow(tmp_path, idx_dir):
  """A host without TensorFlow (the managed GPU image): IDX training with device views and
  the step benchmark run; TFDS and host views say in one line what is missing."""
  without = [sys.executable, os.path.join(REPO, "tests", "without_tensorflow.py")]
  config = write_config(tmp_path, idx_dir)
  run = lambda *args: subprocess.run([*without, *args], capture_output=True, text=True,
                                     cwd=REPO, env=cli_env(devices=2), timeout=600)
  trained = run("adcl.train", "--config", config, "--workdir", str(tmp_path / "run"),
                "--config.train.num_steps=2")
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert "views drawn on the device" in trained.stderr  # 'auto' without TensorFlow.
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2"]
  for flag, what in (("--config.data.views_on=host", "data.views_on='host'"),
                     ("--config.data.source=tfds", "data.source='tfds'")):
    refused = run("adcl.train", "--config", config, "--workdir", str(tmp_path / "no"), flag)
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 1 and f"{what} (tf.data views) needs TensorFlow" in last or (
        f"{what} needs TensorFlow" in last), refused.stderr[-2000:]
    assert not (tmp_path / "no").exists()
  timed = run("benchmarks/step_time.py", "--model", "resnet_small", "--width", "4",
              "--image-size", "8", "--channels", "1", "--batch", "8", "--steps", "1",
              "--rounds", "1", "--views", "device", "--fractions", "0.5")
  assert timed.returncode == 0, timed.stderr[-3000:]
  result = json.loads(timed.stdout.strip().splitlines()[-1])
  assert result["views"] == "device" and result["clae_images_per_s"] > 0
  # adv.fraction 0.5 attacks half the batch: a step between the plain and the full CLAE one.
  assert result["clae_fraction_0.5_images_per_s"] > 0
  assert (result["plain_gflop_per_step"] < result["clae_fraction_0.5_gflop_per_step"]
          < result["clae_gflop_per_step"])


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
