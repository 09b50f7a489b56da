"""Step batches from converted shards (adcl/data/records.py): a function of (seed, step) alone,
the same bytes for any number of Grain workers and of processes, every record once per epoch."""

import io

import numpy as np
import jax.numpy as jnp
import pytest

from adcl.data import convert, decode_crop, order, records, shards, sources
from test_shards import write_image_folder


@pytest.fixture(scope="module")
def raw_shards(tmp_path_factory):
  """The tiny IDX training split (64 images of 12 px) as raw shards of 10 records."""
  from conftest import write_idx_dataset

  root = tmp_path_factory.mktemp("stream")
  idx = write_idx_dataset(str(root / "idx"))
  convert.convert_split("idx", idx, "train", str(root / "ar"), records_per_shard=10)
  return str(root / "ar"), sources.load_idx(idx, "train")


def test_core_count_works_where_there_is_no_cpu_affinity(monkeypatch):
  """macOS has no os.sched_getaffinity: data.threads=0 then uses every core."""
  import os
  assert records.usable_cores() >= 1
  monkeypatch.delattr(os, "sched_getaffinity", raising=False)
  assert records.usable_cores() == (os.cpu_count() or 1)


def test_each_epoch_visits_every_image_once_in_its_own_order():
  """The one data order (adcl/data/order.py) of records and of sources read whole."""
  steps = [order.batch_indices(3, t, 16, 64, range(16)) for t in range(8)]
  epochs = [np.concatenate(steps[:4]), np.concatenate(steps[4:])]
  for epoch in epochs:
    assert sorted(epoch) == list(range(64))
  assert not np.array_equal(*epochs)
  np.testing.assert_array_equal(order.batch_indices(3, 5, 16, 64, range(16)), steps[5])
  assert not np.array_equal(order.batch_indices(4, 5, 16, 64, range(16)), steps[5])
  # 70 records at batch 16: 4 steps an epoch, 6 records left out of each, as in memory.
  assert len(set(np.concatenate([order.batch_indices(0, t, 16, 70, range(16))
                                 for t in range(4)]))) == 64


def test_batches_are_the_same_bytes_for_any_workers_and_processes(raw_shards):
  directory, (images, labels) = raw_shards
  whole = records.StepBatches(directory, "train", seed=1, global_batch=16)
  # Steps 2-6 cross the boundary of epoch 0 (4 steps of 16).
  reference = list(records.step_batches(whole, 2, 7))
  for batch in reference:
    np.testing.assert_array_equal(batch["images"], images[batch["indices"]])
    np.testing.assert_array_equal(batch["labels"], labels[batch["indices"]])
  from absl import flags
  parsed = flags.FLAGS.is_parsed()
  for workers in (1, 2):
    for got, want in zip(records.step_batches(whole, 2, 7, workers=workers), reference,
                         strict=True):
      assert got["images"].tobytes() == want["images"].tobytes()
  # Grain's workers read Grain's flags; the program's own flags are left as they were (a
  # notebook's flags still parse later).
  assert flags.FLAGS.is_parsed() == parsed
  halves = [list(records.step_batches(
      records.StepBatches(directory, "train", 1, 16, process_index=p, process_count=2), 2, 7))
      for p in (0, 1)]
  for first, second, want in zip(*halves, reference, strict=True):
    assert not set(first["indices"]) & set(second["indices"])
    joined = np.concatenate([first["images"], second["images"]])
    assert joined.tobytes() == want["images"].tobytes()
  # Resuming at step 4 reads what an unbroken run reads there.
  resumed = list(records.step_batches(whole, 4, 7))
  assert [b["images"].tobytes() for b in resumed] == [
      b["images"].tobytes() for b in reference[2:]]


def test_bad_setups_are_refused_in_one_line(raw_shards, tmp_path):
  directory, _ = raw_shards
  with pytest.raises(ValueError, match=r"batch_size=128 is larger than the 64 training images"):
    records.StepBatches(directory, "train", 0, 128)
  write_image_folder(tmp_path / "src", 2)
  convert.convert_split("folder", str(tmp_path / "src"), "train", str(tmp_path / "ar"))
  with pytest.raises(ValueError, match="encoded images are cropped on the host; give the crop"):
    records.StepBatches(str(tmp_path / "ar"), "train", 0, 2)
  with pytest.raises(FileNotFoundError, match="no manifest"):
    records.StepBatches(str(tmp_path), "train", 0, 2)


def test_crop_boxes_follow_torchvisions_sampler():
  from conftest import torchvision_crops

  rng = np.random.default_rng(0)
  boxes = np.array([decode_crop.crop_box(rng, 600, 600, (0.2, 1.0)) for _ in range(20000)])
  area, aspect = boxes[:, 2] * boxes[:, 3] / 600**2, boxes[:, 3] / boxes[:, 2]
  expected_area, expected_aspect = torchvision_crops(20000, (0.2, 1.0))
  assert abs(area.mean() - expected_area.mean()) < 0.01
  assert abs(np.median(area) - np.median(expected_area)) < 0.015
  assert abs(np.log(aspect).mean() - np.log(expected_aspect).mean()) < 0.01
  assert aspect.min() >= 3 / 4 - 0.01 and aspect.max() <= 4 / 3 + 0.01
  # Inside the image, also a very wide one, whose tries may all fail: then a centre crop at the
  # widest allowed aspect.
  for top, left, h, w in (decode_crop.crop_box(rng, 40, 400, (0.9, 1.0)) for _ in range(200)):
    assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 400
  assert decode_crop.crop_box(rng, 10, 400, (0.99, 1.0)) == (0, 193, 10, 13)


def finished_crops(canvases, crop_sizes, size):
  """float [V, size, size, C] in [0, 255]: host crop regions resized as the step resizes them."""
  from adcl.data import resize, views

  return np.stack([np.asarray(resize.resized_crop(
      jnp.asarray(canvas, jnp.float32), views.region_box(jnp.asarray(hw), canvas.shape[0]), size))
      for canvas, hw in zip(canvases, crop_sizes)])


def smooth_image(height=1200, width=1600, format="JPEG") -> bytes:
  from PIL import Image

  y, x = np.mgrid[0:height, 0:width] / 1600.0
  pixels = (np.stack([np.sin(6 * x), np.cos(5 * y), np.sin(3 * (x + y))], -1) * 100 + 128)
  buffer = io.BytesIO()
  Image.fromarray(pixels.astype(np.uint8)).save(buffer, format, quality=95)
  return buffer.getvalue()


def test_a_drafted_decode_crops_like_a_full_one():
  """The same boxes cut from a JPEG decoded at 1/4 scale and at full scale and resized as the
  step does: the same picture (a smooth image, so the difference is the decoder's and the
  region's whole-pixel edges, a few levels of 255)."""
  data = smooth_image()
  draws = [decode_crop.decode_crops(data, np.random.default_rng(7), 2, 64, (0.3, 1.0),
                                    draft=draft) for draft in (True, False)]
  boxes = [decode_crop.crop_box(np.random.default_rng(7), 1200, 1600, (0.3, 1.0))
           for _ in range(1)]
  assert decode_crop.draft_reduction(boxes, 64) >= 4
  for canvases, crop_sizes in draws:
    assert canvases.shape == (2, 128, 128, 3) and canvases.dtype == np.uint8
    assert crop_sizes.dtype == np.int32 and (crop_sizes >= 64).all() and (crop_sizes < 128).all()
    for canvas, (h, w) in zip(canvases, crop_sizes):  # Zeros outside the region.
      assert not canvas[h:].any() and not canvas[:, w:].any()
  drafted, full = (finished_crops(*d, 64) for d in draws)
  assert np.abs(drafted - full).mean() < 2.0


def test_host_regions_resized_on_the_device_match_pillows_resize_of_the_box():
  """The crops the step finishes (a draft decode, a whole-factor box-filter reduce, then the
  device's bilinear resize) against torchvision's own: Pillow's antialiased bilinear resize of
  the same box of the full decode. JPEG at 224 and 448 px (boxes between 1x and 2x the output,
  and smaller: upsampled) and PNG at 96 (no draft: boxes over 2x, reduced on the host)."""
  from PIL import Image

  for format, size in (("JPEG", 224), ("JPEG", 448), ("PNG", 96)):
    data = smooth_image(375, 500, format)
    with Image.open(io.BytesIO(data)) as image:
      full = image.convert("RGB")
    canvases, crop_sizes = decode_crop.decode_crops(data, np.random.default_rng(size), 2, size,
                                                    (0.3, 1.0))
    box_rng = np.random.default_rng(size)  # The same draws as decode_crops'.
    boxes = [decode_crop.crop_box(box_rng, 375, 500, (0.3, 1.0)) for _ in range(2)]
    if format == "PNG":
      assert (crop_sizes < np.array([[h, w] for _, _, h, w in boxes])).all()  # Reduced.
    reference = np.stack([np.asarray(full.resize((size, size), Image.BILINEAR,
                                                 box=(l, t, l + w, t + h)), np.float32)
                          for t, l, h, w in boxes])
    difference = np.abs(finished_crops(canvases, crop_sizes, size) - reference)
    assert difference.mean() < 1.0, (format, size, difference.mean())


def test_encoded_batches_are_two_crops_the_same_for_any_workers_and_processes(tmp_path):
  write_image_folder(tmp_path / "src", 6)
  convert.convert_split("folder", str(tmp_path / "src"), "train", str(tmp_path / "ar"),
                        records_per_shard=5)
  make = lambda p, n, threads=1: records.StepBatches(str(tmp_path / "ar"), "train", 3, 4, p, n,
                                                    crop=(16, (0.2, 1.0)), threads=threads)
  reference = list(records.step_batches(make(0, 1), 0, 4))
  assert reference[0]["crops"].shape == (4, 2, 32, 32, 3)
  assert reference[0]["crop_sizes"].shape == (4, 2, 2)
  assert not np.array_equal(reference[0]["crops"][:, 0], reference[0]["crops"][:, 1])
  two_workers = list(records.step_batches(make(0, 1), 0, 4, workers=2))
  three_threads = list(records.step_batches(make(0, 1, threads=3), 0, 4))
  halves = [list(records.step_batches(make(p, 2), 0, 4)) for p in (0, 1)]
  for want, got, threaded, first, second in zip(reference, two_workers, three_threads, *halves,
                                                strict=True):
    for key in ("crops", "crop_sizes"):
      assert got[key].tobytes() == want[key].tobytes()
      assert threaded[key].tobytes() == want[key].tobytes()
      assert np.concatenate([first[key], second[key]]).tobytes() == want[key].tobytes()


def test_a_corrupt_jpeg_stops_the_step_that_reads_it_naming_the_record(tmp_path):
  write_image_folder(tmp_path / "src", 4)
  bad = tmp_path / "src" / "train" / "dog" / "00002.jpg"
  bad.write_bytes(bad.read_bytes()[:300])
  convert.convert_split("folder", str(tmp_path / "src"), "train", str(tmp_path / "ar"))
  for threads in (1, 3):  # A decode thread's error reaches the step that reads the batch.
    batches = records.StepBatches(str(tmp_path / "ar"), "train", 0, 8, crop=(16, (0.2, 1.0)),
                                 threads=threads)
    with pytest.raises(ValueError, match=r"record 6 of .*/train \(train/dog/00002.jpg\): not "
                       "a readable image"):
      batches(0)


@pytest.fixture(scope="module")
def raw_records(tmp_path_factory):
  """The tiny IDX set (64 train, 40 test images of 12 px) converted to raw shards."""
  from conftest import write_idx_dataset

  root = tmp_path_factory.mktemp("records_train")
  idx = write_idx_dataset(str(root / "idx"))
  for split in ("train", "test"):
    convert.convert_split("idx", idx, split, str(root / "ar"), records_per_shard=16)
  return str(root / "ar")


def records_config(directory):
  from conftest import tiny_config

  config = tiny_config(directory)
  config.data.source = "records"
  return config


def test_training_on_records_resumes_exactly_and_refuses_other_records(raw_records, tmp_path):
  """data.source 'records' end to end: a run stopped at step 3 and resumed ends with the
  parameters of one that ran straight to 6; the checkpoint keeps the records' fingerprint, and
  a resume on other records refuses in one line, the checkpoint untouched."""
  import jax

  from adcl import checkpoints, train
  from conftest import write_idx_dataset

  config = records_config(raw_records)
  config.train.num_steps, config.train.checkpoint_every, config.eval.every = 6, 3, 6
  straight = train.run(config, str(tmp_path / "straight"))
  assert 0 <= straight["knn_top1"] <= 100
  stopped = config.copy_and_resolve_references()
  stopped.train.num_steps = 3
  train.run(stopped, str(tmp_path / "resumed"))
  train.run(config, str(tmp_path / "resumed"))
  finals = [checkpoints.Checkpoints(str(tmp_path / name)).restore_raw()
            for name in ("straight", "resumed")]
  assert int(finals[0]["step"]) == int(finals[1]["step"]) == 6
  for a, b in zip(jax.tree.leaves(finals[0]["params"]), jax.tree.leaves(finals[1]["params"])):
    np.testing.assert_array_equal(a, b)
  saved = checkpoints.Checkpoints(str(tmp_path / "straight")).saved_config()
  assert saved.data.fingerprint == shards.read_manifest(raw_records, "train")["fingerprint"]

  other = str(tmp_path / "other")
  idx = write_idx_dataset(str(tmp_path / "idx_other"), seed=1)
  for split in ("train", "test"):
    convert.convert_split("idx", idx, split, other)
  moved = records_config(other)
  moved.train.num_steps = 9
  with pytest.raises(ValueError, match=r"was trained on other data: its records' fingerprint "
                     r"is [0-9a-f]{12}, config.data.data_dir '.*other' has [0-9a-f]{12}"):
    train.run(moved, str(tmp_path / "straight"))
  assert checkpoints.Checkpoints(str(tmp_path / "straight")).latest_step() == 6


def test_training_on_encoded_records_feeds_the_step_host_crops(tmp_path):
  """JPEG/PNG records: the host cuts two crops per image at the training size and the step
  finishes the views; evaluation decodes each record's centre crop."""
  from adcl import train

  write_image_folder(tmp_path / "src", 8)
  convert.convert_split("folder", str(tmp_path / "src"), "train", str(tmp_path / "ar"))
  config = records_config(str(tmp_path / "ar"))
  config.data.test_split = "train"
  config.data.image_size, config.data.mean, config.data.std = 16, (0.5,) * 3, (0.25,) * 3
  config.train.num_steps, config.eval.every = 2, 2
  metrics = train.run(config, str(tmp_path / "run"))
  assert np.isfinite(metrics["loss"]) and 0 <= metrics["knn_top1"] <= 100


def test_evaluation_reads_every_record_once_in_order(tmp_path):
  write_image_folder(tmp_path / "src", 7)
  convert.convert_split("folder", str(tmp_path / "src"), "train", str(tmp_path / "ar"))
  chunks = list(records.EvalSplit(str(tmp_path / "ar"), "train", 20).chunks(4))
  assert [len(labels) for _, labels in chunks] == [4, 4, 4, 2]
  labels = np.concatenate([labels for _, labels in chunks])
  split = shards.Split(str(tmp_path / "ar"), "train")
  np.testing.assert_array_equal(labels,
                                [label for label, _, _ in split.read(range(len(split)))])
  assert chunks[0][0].shape == (4, 20, 20, 3) and chunks[0][0].dtype == np.uint8


def test_a_corrupt_jpeg_stops_training_naming_its_record_and_keeps_the_checkpoints(tmp_path):
  """A record that does not decode stops the run at the batch that reads it, in one line
  naming the record and its source file; the checkpoints before it stay."""
  from adcl import checkpoints, train

  write_image_folder(tmp_path / "src", 8)
  bad = tmp_path / "src" / "train" / "dog" / "00006.jpg"  # Record 14: step 2 reads it.
  bad.write_bytes(bad.read_bytes()[:300])
  convert.convert_split("folder", str(tmp_path / "src"), "train", str(tmp_path / "ar"))
  config = records_config(str(tmp_path / "ar"))
  config.data.test_split = "train"
  config.data.image_size, config.data.mean, config.data.std = 16, (0.5,) * 3, (0.25,) * 3
  config.train.batch_size, config.train.num_steps, config.train.checkpoint_every = 8, 4, 1
  with pytest.raises(ValueError, match=r"record 14 of .*/train \(train/dog/00006.jpg\): not a "
                     "readable image"):
    train.run(config, str(tmp_path / "run"))
  assert 14 in order.batch_indices(config.seed, 1, 8, 16, range(8))  # Step 2's batch.
  assert checkpoints.Checkpoints(str(tmp_path / "run")).latest_step() == 1


def test_evaluation_of_records_a_chunk_at_a_time_equals_evaluation_in_memory(raw_records,
                                                                            monkeypatch):
  """Every metric of adcl.evaluate (kNN, probe, pixel baselines, attacks) on records read in
  chunks of 16, their features stored on disk and read by the probe 24 rows at a time, equals
  the same on the images loaded whole (the records hold the IDX images in order)."""
  from adcl import build
  from adcl.data import sources
  from adcl.evaluation import linear, protocol, splits

  chunked_dims = []
  monkeypatch.setattr(linear, "rows_per_chunk", lambda dim: chunked_dims.append(dim) or 24)
  monkeypatch.setattr(splits, "chunk_rows", lambda config: 16)

  config = records_config(raw_records)
  trainer = build.trainer(config, (8, 8, 1), 4, 4)
  state = trainer.init_state()
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  streamed = {split: records.EvalSplit(raw_records, split, 8) for split in ("train", "test")}
  idx = raw_records.replace("/ar", "/idx")  # What raw_records was converted from.
  whole = {split: splits.ArraySplit(*sources.load_idx(idx, split)) for split in ("train", "test")}
  np.testing.assert_array_equal(streamed["train"].head(64)[0], whole["train"].images)
  results = [protocol.evaluate(trainer.model, variables, config, data, robust_examples=24,
                               mesh=trainer.mesh) for data in (streamed, whole)]
  assert results[0].keys() == results[1].keys() and "pixels_knn_top1" in results[0]
  assert len(chunked_dims) == 1  # Only the records' evaluation read its features in chunks.
  for key in results[0]:
    np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-5, err_msg=key)


def test_a_pixel_baseline_over_its_budget_is_skipped_saying_why(raw_records, monkeypatch):
  from adcl.evaluation import pixels

  data = {split: records.EvalSplit(raw_records, split, 8) for split in ("train", "test")}
  config = records_config(raw_records)
  assert pixels.too_large(data, config.data) is None  # 104 images of 64 floats.
  monkeypatch.setattr(pixels, "PIXEL_BUDGET_BYTES", 1000)
  assert pixels.baseline(data, config.data, 10, 0.5) == {
      "pixels_skipped": "the pixel features would take 2.48e-05 GB (budget 9.31e-07 GB)"}
