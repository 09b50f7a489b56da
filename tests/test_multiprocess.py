"""Several hosts, simulated by local processes with gloo CPU collectives."""

import json
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_cover_eval_exactly_once_and_build_global_batches(tmp_path):
  port = str(free_port())
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
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
