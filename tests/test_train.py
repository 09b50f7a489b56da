"""The training loop: exact resume, the CLI end to end, bad input that loses nothing."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from adcl import build, checkpoints, configs, errors, train
from adcl.data import memory
from conftest import cli_env, write_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def final_params(workdir):
  state = checkpoints.Checkpoints(workdir).restore_raw()
  return state["params"], int(state["step"])


def test_resume_gives_the_same_parameters_as_one_run(tiny, tmp_path):
  tiny.train.num_steps = 6
  tiny.train.checkpoint_every = 3
  # 4 steps per epoch (64 images, batch 16): the rate drops tenfold from update 4 (step 5) on.
  tiny.optim.decay_epochs, tiny.optim.decay_factors = (1,), (0.1,)
  train.run(tiny, str(tmp_path / "straight"))
  # Stop after 3 steps (a shorter schedule whose end is the checkpoint), then resume to 6.
  stopped = tiny.copy_and_resolve_references()
  stopped.train.num_steps = 3
  train.run(stopped, str(tmp_path / "resumed"))
  train.run(tiny, str(tmp_path / "resumed"))
  straight, step_a = final_params(str(tmp_path / "straight"))
  resumed, step_b = final_params(str(tmp_path / "resumed"))
  assert step_a == step_b == 6
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  lines = [json.loads(l) for l in open(tmp_path / "resumed" / "metrics.jsonl")]
  assert [l["step"] for l in lines] == [2, 3, 4, 6]  # Both runs' lines are kept.
  # Each logged step's learning rate is the one its update used, in metrics and TensorBoard.
  np.testing.assert_allclose([l["learning_rate"] for l in lines], [0.05, 0.05, 0.05, 0.005],
                             rtol=1e-6)
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(str(tmp_path / "straight" / "tensorboard"))
  events.Reload()
  np.testing.assert_allclose([e.value for e in events.Scalars("learning_rate")],
                             [0.05, 0.05, 0.05, 0.005], rtol=1e-6)  # Steps 2, 3, 4, 6.


def test_uint8_batches_are_a_function_of_the_step(tiny):
  """The device-views path (memory.train_images): a run resumed at step 3 gets the batches an
  uninterrupted one gets, each process its rows, and each epoch every image once."""
  images = np.random.default_rng(0).permutation(64 * 144).reshape(64, 12, 12, 1).astype(np.uint8)
  full = [b["images"] for b in memory.train_images(images, tiny, 0, 6)]
  resumed = [b["images"] for b in memory.train_images(images, tiny, 3, 6)]
  for a, b in zip(full[3:], resumed):
    np.testing.assert_array_equal(a, b)
  halves = [[b["images"] for b in memory.train_images(images, tiny, 0, 6, p, 2)] for p in (0, 1)]
  for step in range(6):
    np.testing.assert_array_equal(np.concatenate([halves[0][step], halves[1][step]]), full[step])
  epoch = np.concatenate(full[:4])  # 4 batches of 16: one epoch of 64.
  assert sorted(map(bytes, epoch)) == sorted(map(bytes, images))
  assert not np.array_equal(full[0], full[4])  # The next epoch is shuffled anew.


def run_cli(*args, env_extra=None):
  return subprocess.run([sys.executable, "-m", "adcl.train", *args], capture_output=True,
                        text=True, cwd=REPO, env=cli_env(**(env_extra or {})), timeout=600)


def test_cli_end_to_end(tmp_path, idx_dir):
  workdir = tmp_path / "run"
  result = run_cli("--config", write_config(tmp_path, idx_dir), "--workdir", str(workdir),
                   "--config.train.num_steps=4", "--config.eval.every=2")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert [l["step"] for l in lines] == [2, 4]
  assert all({"step", "loss", "loss_clean", "loss_adv", "knn_top1", "images_per_s",
              "input_wait_s", "input_wait_fraction"} <= set(l) for l in lines)
  assert all(0 <= l["input_wait_fraction"] <= 1 for l in lines)
  assert 0 <= lines[-1]["knn_top1"] <= 100
  assert os.listdir(workdir / "tensorboard")
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  # Starting again on the same workdir resumes (and, at the end already, trains no step).
  again = run_cli("--config", write_config(tmp_path, idx_dir), "--workdir", str(workdir),
                  "--config.train.num_steps=4")
  assert again.returncode == 0 and "Resuming from" in again.stderr


def test_the_monitor_reports_the_time_the_loop_waited_for_its_input():
  """A source that takes 50 ms a batch and a loop that does nothing else: the loop waited for
  its input nearly all the time; a ready source and a loop busy 20 ms: nearly none of it."""
  import time

  from adcl.monitor import Monitor

  def slow():
    while True:
      time.sleep(0.05)
      yield {}

  def interval(batches, busy_s):
    monitor = Monitor("unused", 10, 8, 0, enabled=False)
    for _ in range(4):
      monitor.next_batch(batches)
    time.sleep(busy_s)
    return monitor.throughput(4)

  starved = interval(slow(), 0.0)
  assert 0.19 < starved["input_wait_s"] < 0.5 and starved["input_wait_fraction"] > 0.8
  fed = interval(iter([{}] * 4), 0.02)
  assert fed["input_wait_s"] < 0.005 and fed["input_wait_fraction"] < 0.25


def test_unknown_config_key_is_named(tmp_path, idx_dir):
  result = run_cli("--config", write_config(tmp_path, idx_dir), "--workdir", str(tmp_path / "w"),
                   "--config.train.batchsize=8")
  assert result.returncode != 0
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("adcl.train: error:") and "batchsize" in last_line
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "w").exists()
  missing = run_cli("--config", str(tmp_path / "missing.py"), "--workdir", str(tmp_path / "w"))
  assert missing.returncode != 0 and "missing.py" in missing.stderr.strip().splitlines()[-1]
  assert "Traceback" not in missing.stderr


def test_a_retired_key_is_dropped_from_saved_configs_and_refused_in_new_ones(tiny, caplog):
  """data.views_on (the retired host views): a run's saved config still loads, the log
  saying where the views are now drawn; a config file that sets it is refused in one line."""
  import logging
  with caplog.at_level(logging.INFO, logger="absl"):
    saved = configs.from_saved({**tiny.to_dict(), "data": {**tiny.data.to_dict(),
                                                            "views_on": "host"}})
  assert "views_on" not in saved.data and saved.data.image_size == tiny.data.image_size
  assert "data.views_on='host' is retired: the views are drawn on the device" in caplog.text
  tiny.data.views_on = "host"
  with pytest.raises(ValueError, match="config.data.views_on: retired: the views are drawn on "
                     "the device .*; delete it from the config$"):
    configs.validate(tiny, 8)


@pytest.mark.parametrize("key,value,message", [
    ("data.source", "tfds", "config.data.name: 'tiny' is not a TFDS dataset"),
    ("train.batch_size", 12, "config.train.batch_size: 12 is not a positive multiple of the 8 devices"),
    ("adv.eps", -0.1, "config.adv.eps: must be >= 0"),
    ("data.data_dir", "/nonexistent/fmnist", "IDX directory '/nonexistent/fmnist' does not exist"),
])
def test_bad_values_fail_before_compiling(tiny, tmp_path, key, value, message):
  section, name = key.split(".")
  tiny[section][name] = value
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    train.run(tiny, str(tmp_path / "w"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny, tmp_path, monkeypatch):
  workdir = str(tmp_path / "w")
  tiny.train.num_steps = 8
  tiny.train.checkpoint_every = 2
  tiny.train.log_every = 1
  real_trainer = build.trainer

  def trainer_diverging_at_step_5(*args, **kwargs):
    trainer = real_trainer(*args, **kwargs)
    real_step, calls = trainer.train_step, []

    def train_step(state, batch):  # Step 5 (steps count from 1) diverges: NaN weights.
      state, metrics = real_step(state, batch)
      calls.append(len(calls) + 1)
      if calls[-1] == 5:
        state = state.replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
        metrics = {**metrics, "loss": metrics["loss"] * np.nan}
      return state, metrics

    trainer.train_step = train_step
    return trainer

  monkeypatch.setattr(build, "trainer", trainer_diverging_at_step_5)
  with pytest.raises(errors.NonFiniteLoss, match="at step 5: stopped; the last good checkpoint "
                     "is step 4"):
    train.run(tiny, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  params, step = final_params(workdir)
  assert step == 4 and all(np.isfinite(p).all() for p in jax.tree.leaves(params))


def test_paper_recipes_are_valid():
  for dataset in ("cifar10", "cifar100"):
    for method in ("plain", "uel", "simclr"):
      c = configs.paper_recipe(dataset, method)
      configs.validate(c, 8)
      assert c.loss.temperature == {"plain": 0.1, "uel": 0.1, "simclr": 0.5}[method]


def test_a_saved_config_is_read_into_todays_schema():
  saved = configs.base().to_dict()
  del saved["adv"]["fraction"]  # Added after the run that saved it.
  saved["model"]["retired_switch"] = "auto"  # Retired since.
  saved["model"]["width"] = 8
  saved["data"]["mean"] = [0.5]  # JSON has lists where the schema has tuples.
  config = configs.from_saved(saved)
  assert config.adv.fraction == 1.0 and "retired_switch" not in config.model
  assert config.model.width == 8 and config.data.mean == (0.5,)
  assert configs.incompatible_keys(config, configs.base()) == [
      "model.width (checkpoint 8, config 64)"]
