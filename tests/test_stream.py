"""Step batches from converted shards (adcl/data/stream.py): a function of (seed, step) alone,
the same bytes for any number of Grain workers and of processes, every record once per epoch."""

import numpy as np
import pytest

from adcl.data import convert, records, sources, stream
from test_records import write_image_folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """The tiny IDX training split (64 images of 12 px) as raw shards of 10 records."""
  from conftest import write_idx_dataset

  root = tmp_path_factory.mktemp("stream")
  idx = write_idx_dataset(str(root / "idx"))
  convert.convert_split("idx", idx, "train", str(root / "ar"), records_per_shard=10)
  return str(root / "ar"), sources.load_idx(idx, "train")


def test_each_epoch_visits_every_record_once_in_its_own_order():
  steps = [stream.record_indices(3, t, 16, 64, range(16)) for t in range(8)]
  epochs = [np.concatenate(steps[:4]), np.concatenate(steps[4:])]
  for order in epochs:
    assert sorted(order) == list(range(64))
  assert not np.array_equal(*epochs)
  np.testing.assert_array_equal(stream.record_indices(3, 5, 16, 64, range(16)), steps[5])
  assert not np.array_equal(stream.record_indices(4, 5, 16, 64, range(16)), steps[5])
  # 70 records at batch 16: 4 steps an epoch, 6 records left out of each, as in memory.
  assert len(set(np.concatenate([stream.record_indices(0, t, 16, 70, range(16))
                                 for t in range(4)]))) == 64


def test_batches_are_the_same_bytes_for_any_workers_and_processes(shards):
  directory, (images, labels) = shards
  whole = stream.StepBatches(directory, "train", seed=1, global_batch=16)
  # Steps 2-6 cross the boundary of epoch 0 (4 steps of 16).
  reference = list(stream.step_batches(whole, 2, 7))
  for batch in reference:
    np.testing.assert_array_equal(batch["images"], images[batch["indices"]])
    np.testing.assert_array_equal(batch["labels"], labels[batch["indices"]])
  for workers in (1, 2):
    for got, want in zip(stream.step_batches(whole, 2, 7, workers=workers), reference,
                         strict=True):
      assert got["images"].tobytes() == want["images"].tobytes()
  halves = [list(stream.step_batches(
      stream.StepBatches(directory, "train", 1, 16, process_index=p, process_count=2), 2, 7))
      for p in (0, 1)]
  for first, second, want in zip(*halves, reference, strict=True):
    assert not set(first["indices"]) & set(second["indices"])
    joined = np.concatenate([first["images"], second["images"]])
    assert joined.tobytes() == want["images"].tobytes()
  # Resuming at step 4 reads what an unbroken run reads there.
  resumed = list(stream.step_batches(whole, 4, 7))
  assert [b["images"].tobytes() for b in resumed] == [
      b["images"].tobytes() for b in reference[2:]]


def test_encoded_records_and_oversized_batches_are_refused_in_one_line(shards, tmp_path):
  directory, _ = shards
  with pytest.raises(ValueError, match=r"batch_size=128 is larger than the 64 training images"):
    stream.StepBatches(directory, "train", 0, 128)
  write_image_folder(tmp_path / "src", 2)
  convert.convert_split("folder", str(tmp_path / "src"), "train", str(tmp_path / "ar"))
  with pytest.raises(ValueError, match="encoded images need the host decode-and-crop"):
    stream.StepBatches(str(tmp_path / "ar"), "train", 0, 2)
  with pytest.raises(FileNotFoundError, match="no manifest"):
    stream.StepBatches(str(tmp_path), "train", 0, 2)
