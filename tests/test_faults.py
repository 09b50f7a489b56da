"""Faults and bad input: one line, a non-zero exit, nothing already written lost.

Each case of the table in the README's *Faults* section, and a crash-consistency test: a run
SIGKILLed at seeded random moments and rerun each time ends bit for bit where an uninterrupted
run does, with every logged step once in metrics.jsonl.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from adcl import checkpoints, inspect, train
from adcl.lock import WorkdirLock
from adcl.data import sources
from conftest import REPO, cli_env, tiny_config, write_config, write_idx


def run_cli(*args, devices=1):
  return subprocess.run([sys.executable, "-m", "adcl.train", *args], capture_output=True,
                        text=True, cwd=REPO, env=cli_env(devices=devices), timeout=600)


def files_of(directory) -> dict:
  """{relative path: bytes} of every file under `directory`."""
  found = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      found[os.path.relpath(path, directory)] = open(path, "rb").read()
  return found


def assert_one_line_error(result, *fragments):
  lines = result.stderr.strip().splitlines()
  assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert lines[-1].startswith("adcl.train: error:"), lines[-1]
  for fragment in fragments:
    assert fragment in lines[-1], lines[-1]


def test_the_error_line_stays_last_when_a_library_thread_logs_later(tmp_path):
  """Orbax's metadata writer can log its own error after adcl's line (a full disk; CI saw it
  once): here a thread that logs 0.3 s after the failure, every time."""
  script = tmp_path / "late.py"
  script.write_text(
      "import threading, time\n"
      "from absl import logging\n"
      "from adcl import cli\n"
      "def main(argv):\n"
      "  threading.Thread(target=lambda: (time.sleep(0.3), logging.error('late'))).start()\n"
      "  raise ValueError('disk full')\n"
      "cli.run(main, 'adcl.late')\n")
  result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=REPO, env=cli_env(), timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == "adcl.late: error: disk full", result.stderr


def test_adcl_debug_shows_the_traceback_behind_the_one_line(tmp_path):
  script = tmp_path / "deep.py"
  script.write_text(
      "from adcl import cli\n"
      "def read_shard():\n"
      "  raise OSError('shard 3 is unreadable')\n"
      "cli.run(lambda argv: read_shard(), 'adcl.deep')\n")
  for debug in ("0", "1"):
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            cwd=REPO, env=cli_env(ADCL_DEBUG=debug), timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "adcl.deep: error: shard 3 is unreadable"
    assert ("Traceback" in result.stderr and "in read_shard" in result.stderr) == (debug == "1")


def test_a_config_file_with_a_syntax_error_is_one_line(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def get_config(:\n  pass\n")
  result = run_cli("--config", str(bad), "--workdir", str(tmp_path / "w"))
  assert_one_line_error(result, "bad.py:1", "invalid syntax")
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("key, value, message", [
    ("adv.alpha", -1.0, "config.adv.alpha: must be >= 0, got -1.0"),
    ("optim.lr", float("nan"), "config.optim.lr: must be > 0, got nan"),
    ("train.num_steps", -5, "config.train.num_steps: must be an integer >= 0, got -5"),
    ("adv.pgd_steps", 0, "config.adv.pgd_steps: must be a positive integer, got 0"),
    ("data.image_size", 0, "config.data.image_size: must be a positive integer, got 0"),
])
def test_values_outside_their_domain_fail_before_anything_runs(tiny, tmp_path, key, value,
                                                               message):
  section, name = key.split(".")
  tiny[section][name] = value
  if key == "adv.pgd_steps":
    tiny.adv.method = "pgd"
  with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
    train.run(tiny, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_a_bad_value_on_the_command_line_is_one_line(tmp_path, idx_dir):
  result = run_cli("--config", write_config(tmp_path, idx_dir), "--workdir", str(tmp_path / "w"),
                   "--config.adv.alpha=-1")
  assert_one_line_error(result, "config.adv.alpha: must be >= 0, got -1.0")
  assert not (tmp_path / "w").exists()


def test_an_idx_file_that_is_not_gzip_is_named(tmp_path):
  write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.zeros(4))
  (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip data at all")
  with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: not a readable gzipped "
                     r"IDX file"):
    sources.load_idx(str(tmp_path), "train")


def test_one_run_per_workdir(tiny, tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  lock = workdir / "lock"
  lock.write_text(f"{socket.gethostname()} {os.getpid()}\n")  # This process: alive.
  before = files_of(workdir)
  with pytest.raises(ValueError, match=f"is in use by process {os.getpid()} on "):
    train.run(tiny, str(workdir))
  assert files_of(workdir) == before
  # A lock whose process is gone (killed) is taken over, and released at the end.
  gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True).stdout.strip()
  lock.write_text(f"{socket.gethostname()} {gone}\n")
  with WorkdirLock(str(workdir)):
    assert lock.read_text().split()[:2] == [socket.gethostname(), str(os.getpid())]
  assert not lock.exists()
  lock.write_text("another-host 123\n")  # Cannot be checked from here: refused, kept.
  with pytest.raises(ValueError, match="in use by process 123 on another-host.*delete"):
    train.run(tiny, str(workdir))
  assert lock.read_text() == "another-host 123\n"


def damage(checkpoint_dir) -> None:
  """Cut every array data file of a checkpoint in half: which file holds the parameters (all
  that the notebook API reads) depends on the model's size."""
  for root, _, names in os.walk(checkpoint_dir):
    for name in names:
      if os.sep + "d" + os.sep in os.path.join(root, name):
        path = os.path.join(root, name)
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 2])


def make_tmpfs(path, size: str) -> bool:
  os.makedirs(path, exist_ok=True)
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
  if result.returncode != 0:
    print(f"cannot mount a tmpfs here ({result.stderr.strip()}): the full-disk part of this "
          "test does not run")
  return result.returncode == 0


# Orbax's read callbacks find their event loop closed once a read of a damaged checkpoint has
# failed: Python reports each as unraisable. The commands send them to the debug log
# (adcl.cli); here the notebook API's reads leave them to Python's hook, which pytest turns
# into this warning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_damaged_checkpoints_and_a_full_disk_lose_nothing(tiny, tmp_path, idx_dir):
  """One workdir through the faults a long run meets (each rerun is a process of its own):
  its latest checkpoint damaged, then the disk full during the next checkpoint write, then
  every checkpoint damaged."""
  disk = tmp_path / "disk"
  full_disk = make_tmpfs(disk, "3m")
  try:
    config = write_config(tmp_path, idx_dir, **{"train.checkpoint_every": 2,
                                                "train.log_every": 1})
    workdir = disk / "w"
    first = run_cli("--config", config, "--workdir", str(workdir), "--config.train.num_steps=6")
    assert first.returncode == 0, first.stderr[-3000:]
    damage(workdir / "checkpoints" / "6")
    # Evaluation and the notebook API name the damaged checkpoint, and move nothing.
    with pytest.raises(ValueError, match=r"checkpoints/6 is damaged"):
      inspect.load(str(workdir))
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]
    if full_disk:  # Leave 20 kB: metrics fit, the next checkpoint does not.
      stat = os.statvfs(disk)
      (disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 20_000))
    second = run_cli("--config", config, "--workdir", str(workdir),
                     "--config.train.num_steps=10")
    # The damaged checkpoint: one warning line, moved aside (kept), the previous one restored.
    assert "checkpoint 6 in" in second.stderr and "is damaged" in second.stderr
    assert "Resuming from" in second.stderr and "at step 4" in second.stderr
    aside = os.listdir(workdir / "damaged_checkpoints")
    assert len(aside) == 1 and aside[0].startswith("6-")
    if full_disk:
      assert_one_line_error(second, "disk full (No space left on device) while writing "
                            "checkpoint 6", "checkpoint 4 is intact", "rerun the same command")
      assert int(checkpoints.Checkpoints(str(workdir)).restore_raw()["step"]) == 4
      os.remove(disk / "filler")
      third = run_cli("--config", config, "--workdir", str(workdir),
                      "--config.train.num_steps=10")
      assert third.returncode == 0 and "at step 4" in third.stderr, third.stderr[-3000:]
    else:
      assert second.returncode == 0 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert int(checkpoints.Checkpoints(str(workdir)).restore_raw()["step"]) == 10
    steps = [json.loads(l)["step"] for l in open(workdir / "metrics.jsonl")]
    assert steps == list(range(1, 11))  # Steps trained again are logged once.
    # Every checkpoint damaged: the run refuses, and keeps them all aside.
    for step in os.listdir(workdir / "checkpoints"):
      damage(workdir / "checkpoints" / step)
    tiny.train.num_steps = 12
    with pytest.raises(ValueError, match="no intact checkpoint left"):
      train.run(tiny, str(workdir))
    assert len(os.listdir(workdir / "damaged_checkpoints")) == 4
  finally:
    if full_disk:
      subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_sigkilled_runs_end_bit_for_bit_like_an_uninterrupted_run(tmp_path, idx_dir):
  """SIGKILL (the out-of-memory killer, a host crash) at 3 seeded moments, one of them inside a
  checkpoint write; each rerun resumes. Final parameters and metrics.jsonl as uninterrupted."""
  steps = 12
  config = write_config(tmp_path, idx_dir, **{"train.num_steps": steps, "train.log_every": 1,
                                              "train.checkpoint_every": 2})
  straight = run_cli("--config", config, "--workdir", str(tmp_path / "straight"))
  assert straight.returncode == 0, straight.stderr[-3000:]
  rng = np.random.default_rng(0)
  workdir = tmp_path / "killed"
  # Step 4 is a checkpoint step, killed right after it is logged: its write is under way.
  others = [s for s in range(2, steps) if s != 4]
  kills = sorted([4] + rng.choice(others, size=2, replace=False).tolist())
  for kill_after in kills:
    process = subprocess.Popen(
        [sys.executable, "-m", "adcl.train", "--config", config, "--workdir", str(workdir)],
        cwd=REPO, env=cli_env(devices=1), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        text=True)
    for line in process.stderr:
      if f"step {kill_after}/{steps}" in line:
        time.sleep(rng.uniform(0, 0.05))
        break
    else:
      pytest.fail(f"the run ended before step {kill_after}")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
  final = run_cli("--config", config, "--workdir", str(workdir))
  assert final.returncode == 0, final.stderr[-3000:]
  a = checkpoints.Checkpoints(str(tmp_path / "straight")).restore_raw()
  b = checkpoints.Checkpoints(str(workdir)).restore_raw()
  assert int(a["step"]) == int(b["step"]) == steps
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  logged = [json.loads(l)["step"] for l in open(workdir / "metrics.jsonl")]
  assert logged == list(range(1, steps + 1))
  # TensorBoard, as it reads the event files (purging at each resumed run's START): each once.
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(str(workdir / "tensorboard"))
  events.Reload()
  assert [e.step for e in events.Scalars("loss")] == list(range(1, steps + 1))
