"""Several hosts, simulated by local processes with gloo CPU collectives."""

import json
import os
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from adcl import checkpoints, configs
from conftest import cli_env, write_config
from test_views import ROUNDING, VIEW_IMAGES, draw_views

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_cover_eval_exactly_once_and_build_global_batches(tmp_path):
  port = str(free_port())
  env = cli_env()
  worker = os.path.join(REPO, "tests", "multiprocess_worker.py")
  procs = [subprocess.Popen([sys.executable, worker, str(i), "2", port, str(tmp_path / f"{i}.json")],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outputs[0][-2000:] + outputs[1][-2000:]
  for i in range(2):
    result = json.load(open(tmp_path / f"{i}.json"))
    assert result["process_count"] == 2 and result["device_count"] == 4
    # Every one of the 37 test images, once, in order, on every process.
    assert result["image_ids"] == list(range(37))
    # Global batch of 8 rows: process 0's 4 rows, then process 1's.
    assert result["global_shape"] == [8, 3]
    assert result["rows_by_process"] == [0.0] * 4 + [1.0] * 4
    # The device views of a global batch split over 2 processes: those of one process.
    np.testing.assert_allclose(np.asarray(result["views"], np.float32),
                               np.asarray(draw_views(VIEW_IMAGES)), rtol=0, atol=ROUNDING)


def read_metrics(workdir):
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def train_command(config, workdir, *flags):
  return [sys.executable, "-m", "adcl.train", "--config", config, "--workdir", str(workdir), *flags]


def test_two_processes_train_like_one_process_with_as_many_devices(tmp_path, idx_dir):
  """2 processes x 2 CPU devices (gloo) against 1 process x 4 devices, same global batches.

  The two differ only in the order of float reductions. The tiny test config's lr of 0.05 makes
  training chaotic (1 vs 4 devices in one process: loss 1e-5 apart at step 2, 6% at step 5), so
  this test trains at lr 0.01, where 1 and 4 devices stay within 1e-5 over 2 steps and 1e-2
  over 6.
  """
  config = write_config(tmp_path, idx_dir, **{"train.num_steps": 6, "train.log_every": 1,
                                              "train.checkpoint_every": 3, "eval.every": 3,
                                              "optim.lr": 0.01})
  one = subprocess.run(train_command(config, tmp_path / "one"), capture_output=True, text=True,
                       cwd=REPO, env=cli_env(devices=4), timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]
  port = str(free_port())
  procs = [subprocess.Popen(
      train_command(config, tmp_path / "two", "--coordinator", f"localhost:{port}",
                    "--num_processes", "2", "--process_id", str(i), "--join_timeout", "120"),
      cwd=REPO, env=cli_env(devices=2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outputs[0][-3000:] + outputs[1][-3000:]
  assert "on 4 devices" in outputs[0]  # One global mesh over both processes' devices.
  single, multi = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
  assert [r["step"] for r in single] == [r["step"] for r in multi] == [1, 2, 3, 4, 5, 6]
  assert all(r["loss_adv"] > 1 for r in multi)  # The adversarial branch ran.
  for key in ("loss", "loss_clean", "loss_adv", "loss_gen", "grad_norm"):
    ours, theirs = [r[key] for r in multi], [r[key] for r in single]
    # Steps 1-2: the same batches through the same weights, then through the weights of one
    # update from the same global gradient; only the reduction order differs.
    np.testing.assert_allclose(ours[:2], theirs[:2], rtol=1e-5, err_msg=key)
    # Later steps drift: FGSM takes the sign of the input gradient, and a component near 0 can
    # flip with the reduction order (that pixel moves by 2 eps). Seen on one CPU: 2e-4 in
    # loss_adv and 3e-3 in grad_norm at step 6. Other global batches would differ by percents.
    np.testing.assert_allclose(ours, theirs, rtol=1e-2, err_msg=key)
  # The evaluation at step 3, before the drift: at most 1 of the 40 test images differs (a
  # near-tie of the kNN vote). At step 6 the drift has moved 3 of them on one CPU.
  assert abs(single[2]["knn_top1"] - multi[2]["knn_top1"]) <= 2.5
  assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["3", "6"]
  # The weights at step 3, before the drift (Adam turns a flipped gradient sign into a step
  # of up to 2 lr: 1e-3 apart at step 6 on one CPU).
  params_one = checkpoints.Checkpoints(str(tmp_path / "one")).restore_raw(3)["params"]
  params_two = checkpoints.Checkpoints(str(tmp_path / "two")).restore_raw(3)["params"]
  for a, b in zip(jax.tree.leaves(params_one), jax.tree.leaves(params_two)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # Weights are O(0.1).


def test_sigterm_checkpoints_and_the_rerun_matches_an_uninterrupted_run(tmp_path, idx_dir):
  config = write_config(tmp_path, idx_dir, **{"train.num_steps": 60, "train.log_every": 1,
                                              "train.checkpoint_every": 100})
  straight = subprocess.run(train_command(config, tmp_path / "straight"), capture_output=True,
                            text=True, cwd=REPO, env=cli_env(devices=1), timeout=600)
  assert straight.returncode == 0, straight.stderr[-3000:]
  proc = subprocess.Popen(train_command(config, tmp_path / "stopped"), cwd=REPO, env=cli_env(devices=1),
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  seen = []
  for line in proc.stderr:  # Progress lines; stop the run once it is a few steps in.
    seen.append(line)
    if "step 5/60" in line:
      proc.send_signal(signal.SIGTERM)
      break
  rest = proc.communicate(timeout=300)[1]
  assert proc.returncode == 143, "".join(seen)[-2000:] + rest[-2000:]
  message = rest.strip().splitlines()[-1]
  assert message.startswith("adcl.train: stopped by SIGTERM after step ") and "rerun" in message
  stopped_at = int(message.split("after step ")[1].split("/")[0])
  assert 5 <= stopped_at < 60
  assert os.listdir(tmp_path / "stopped" / "checkpoints") == [str(stopped_at)]
  again = subprocess.run(train_command(config, tmp_path / "stopped"), capture_output=True,
                         text=True, cwd=REPO, env=cli_env(devices=1), timeout=600)
  assert again.returncode == 0 and f"at step {stopped_at}" in again.stderr, again.stderr[-3000:]
  a = checkpoints.Checkpoints(str(tmp_path / "straight")).restore_raw()
  b = checkpoints.Checkpoints(str(tmp_path / "stopped")).restore_raw()
  assert int(a["step"]) == int(b["step"]) == 60
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_bad_distributed_settings_are_named(tmp_path, idx_dir):
  config = write_config(tmp_path, idx_dir)
  silent = subprocess.run(
      train_command(config, tmp_path / "w", "--coordinator", f"localhost:{free_port()}",
                    "--num_processes", "2", "--process_id", "1", "--join_timeout", "3"),
      capture_output=True, text=True, cwd=REPO, env=cli_env(), timeout=120)
  assert silent.returncode == 1
  assert "did not answer within 3 s (process 1 of 2" in silent.stderr.strip().splitlines()[-1]
  no_count = subprocess.run(train_command(config, tmp_path / "w", "--coordinator", "localhost:1"),
                            capture_output=True, text=True, cwd=REPO, env=cli_env(), timeout=120)
  assert no_count.returncode == 1 and "without the process count and id" in no_count.stderr
  assert not (tmp_path / "w").exists()
  # A global batch that does not split evenly among the processes.
  tiny = configs.base()
  tiny.train.batch_size = 15
  with pytest.raises(ValueError, match="config.train.batch_size: 15 does not divide among the 2 "
                     "processes"):
    configs.validate(tiny, 2, 2)
