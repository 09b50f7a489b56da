"""The benchmarks run and report what they claim (tiny sizes: this checks them, not speed).
benchmarks/step_time.py is checked by the GPU check's toy run, which runs it
(tests/test_without_tensorflow.py)."""

import json
import subprocess
import sys

from conftest import REPO, cli_env

TINY = ["--model", "resnet_tiny", "--width", "4", "--image-size", "8", "--channels", "1",
        "--batch", "8", "--steps", "1", "--rounds", "1"]


def run_benchmark(script, *extra):
  result = subprocess.run([sys.executable, f"benchmarks/{script}", *TINY, *extra], cwd=REPO,
                          env=cli_env(devices=1, compilation_cache=False), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout, json.loads(result.stdout.strip().splitlines()[-1])


def test_init_time_compiles_the_initial_state_both_ways_with_the_same_values():
  _, result = run_benchmark("init_time.py")
  assert result["default_s"] > 0 and result["unoptimised_s"] > 0 and result["speedup"] > 0
  assert 0 <= result["max_ulp_difference"] < 64  # Rounding, not another initialisation.


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



def test_decode_crop_times_each_decoder_against_a_full_decode():
  result = subprocess.run([sys.executable, "benchmarks/decode_crop.py", "--images", "4",
                           "--rounds", "1", "--size", "32", "--sizes", "64x48,80x60"],
                          cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(result.stdout.strip().splitlines()[-1])
  ways = {"full_decode", "pillow_draft", "pillow_full", "pillow_resize", "tf_decode_crop",
          "step_batches", "grain_threads", "grain_workers"}
  assert set(record["images_per_s_per_core"]) == ways
  assert record["over_full_decode"]["full_decode"] == 1.0
  assert record["sizes"] == [[64, 48], [80, 60]]
  assert record["grain_threads_wall_images_per_s"] > 0 and record["cores"] >= 1
  assert all(record["cores_for_target"][w] > 0 for w in ways)


def test_memory_of_training_on_records_does_not_grow_with_the_dataset(tmp_path):
  """The memory benchmark at toy size: 150 and 1,500 JPEGs, trained and evaluated from records
  with a Grain worker. Held decoded, the 1,500 would add 1 GB (uint8 at their size) or 4 GB
  (float32 evaluation copies); the larger run's peak may exceed the smaller's by 150 MB at
  most. Only growth is bounded: the peaks of two runs differ by up to +-100 MB from run to run
  while the rest of the suite runs beside them (the compiler and the allocator), so a smaller
  second peak says nothing about the data."""
  result = subprocess.run([sys.executable, "benchmarks/memory.py", "--images", "150",
                           "--small", "64,48", "--large", "800,600", "--test-images", "50",
                           "--workers", "1", "--steps", "2", "--architecture", "resnet_tiny",
                           "--dir", str(tmp_path)],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(result.stdout.strip().splitlines()[-1])
  assert record["images"] == [150, 1500]
  assert record["peak_rss_mb_150"] > 100  # The sampler saw the training process.
  assert record["difference_mb"] < 150, {k: v for k, v in record.items() if "mb" in k}


def test_input_pipeline_times_raw_records():
  """benchmarks/input_pipeline.py's records part runs: the images written as raw records to a
  temporary folder and read back by StepBatches (whose bytes tests/test_records.py checks)."""
  import os

  import numpy as np

  sys.path.insert(0, os.path.join(REPO, "benchmarks"))
  import input_pipeline

  config, shape = input_pipeline.setting_config("quickstart")
  config.train.batch_size = 16
  images = np.random.default_rng(0).integers(0, 256, (64, *shape), dtype=np.uint8)
  assert input_pipeline.raw_records_images_per_s(images, config, 2) > 0


def test_shard_memory_measures_one_more_shard_at_each_record_size():
  """benchmarks/shard_memory.py at toy size: two record sizes, each read at two shard counts in
  a process of its own; the per-shard figure is the difference over the shards added."""
  result = subprocess.run([sys.executable, "benchmarks/shard_memory.py", "--record-kb", "1,4",
                           "--shards", "2,6", "--records", "8", "--batches", "2", "--batch",
                           "16"], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(result.stdout.strip().splitlines()[-1])
  assert record["shards"] == [2, 6] and set(record["mb_per_shard"]) == {"1", "4"}
  for kb in ("1", "4"):
    grown, per_shard = record["mb"][kb], record["mb_per_shard"][kb]
    assert grown["6"]["read"] > 0  # Opening and reading the split took memory.
    assert per_shard["read"] == round((grown["6"]["read"] - grown["2"]["read"]) / 4, 3)
