"""adcl on a host without TensorFlow (a managed GPU image): the prepared GPU check at toy size,
which trains and times the step with the views drawn on the device, and the one-line refusals
of what needs TensorFlow."""

import json
import os
import subprocess
import sys

import pytest

from adcl import errors, train
from conftest import REPO, cli_env, tiny_config, write_idx_dataset

WITHOUT_TENSORFLOW = os.path.join(REPO, "tests", "without_tensorflow")  # Its sitecustomize.py.


def test_gpu_check_runs_without_tensorflow_at_toy_size(tmp_path):
  """benchmarks/gpu_check.py --toy on 2 CPU devices, TensorFlow hidden from it and its
  subprocesses: every part runs (PyTorch's only where installed), the quickstart trains from
  IDX with the views on the device ('auto' without TensorFlow), and the JSON and markdown its
  header documents are written. Also the check of benchmarks/step_time.py, which it runs."""
  out = tmp_path / "out"
  path = os.pathsep.join(filter(None, [WITHOUT_TENSORFLOW, os.environ.get("PYTHONPATH")]))
  result = subprocess.run(
      [sys.executable, "benchmarks/gpu_check.py", "--out", str(out), "--toy", "--fmnist",
       write_idx_dataset(tmp_path / "idx")], cwd=REPO, capture_output=True, text=True,
      env=cli_env(devices=2, PYTHONPATH=path), timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((out / "gpu_check.json").read_text())
  assert set(report) >= {"device", "steps", "torch", "quickstart", "failures"}
  (step,) = report["steps"]
  assert (step["views"], step["dtype"], step["batch"]) == ("device", "bfloat16", 8)
  assert step["clae_images_per_s"] > 0 and step["compile_s"] > 0 and step["clae_mfu"] > 0
  # adv.fraction 0.5 attacks half the batch: a step between the plain and the full CLAE one.
  assert step["clae_fraction_0.5_images_per_s"] > 0
  assert (step["plain_gflop_per_step"] < step["clae_fraction_0.5_gflop_per_step"]
          < step["clae_gflop_per_step"])
  quickstart = report["quickstart"]
  assert quickstart["steps"] == 4
  assert sorted(os.listdir(out / "quickstart_workdir" / "checkpoints")) == ["4"]
  assert [s for s, _ in quickstart["knn_top1"]] == [4] and 0 <= quickstart["knn_top1"][0][1] <= 100
  torch_missing = [f for f in report["failures"] if "PyTorch is not installed" in f]
  assert len(report["torch"]) + len(torch_missing) == 1
  assert len(report["failures"]) == len(torch_missing)  # Nothing else failed.
  # One line per measurement, with the machine; 32 px steps with their 100 CIFAR-10 epochs.
  records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
  assert [r["part"] for r in records] == ["step_time toy bfloat16 batch 8", "quickstart"]
  assert all(r["device"] == report["device"] and r["jaxlib"] for r in records)
  assert records[0]["clae_cifar10_100_epochs_min"] == pytest.approx(
      100 * 50_000 / records[0]["clae_images_per_s"] / 60, rel=1e-2)
  table = (out / "gpu_check.md").read_text()
  assert ("| resnet_tiny | 32 | simclr | bfloat16 | 8 |" in table
          and "## Quickstart end to end" in table)
  assert "adv.fraction at bfloat16, batch 8: step time / plain 0.5: " in table


def test_tfds_without_tensorflow_is_refused_in_one_line_before_the_workdir(
    tmp_path, monkeypatch, idx_dir):
  monkeypatch.setitem(sys.modules, "tensorflow", None)
  config = tiny_config(str(idx_dir))
  config.data.source = "tfds"
  with pytest.raises(errors.MissingDependency, match="^data.source='tfds' needs TensorFlow, "
                     "which is not installed here: pip install"):
    train.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
