"""Sources and views: IDX reading and its errors, TFDS through mock data, view statistics,
determinism, per-process shards."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from adcl.data import augment, pipeline, sources
from conftest import write_idx


def test_idx_roundtrip_and_shapes(idx_dir):
  images, labels = sources.load_idx(idx_dir, "train")
  assert images.shape == (64, 12, 12, 1) and images.dtype == np.uint8
  assert labels.dtype == np.int32 and 0 <= labels.min() and labels.max() <= 9


def test_idx_count_mismatch_names_both_files(tmp_path):
  write_idx(str(tmp_path / "train-images-idx3-ubyte"), np.zeros((5, 4, 4)), compress=False)
  write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.zeros(4), compress=False)
  with pytest.raises(ValueError, match="holds 5 images but .*train-labels-idx1-ubyte holds 4"):
    sources.load_idx(str(tmp_path), "train")


def test_idx_truncated_file_and_missing_file(tmp_path):
  path = tmp_path / "t10k-images-idx3-ubyte"
  write_idx(str(path), np.zeros((5, 4, 4)), compress=False)
  path.write_bytes(path.read_bytes()[:-7])
  with pytest.raises(ValueError, match="declares shape"):
    sources.read_idx(str(path))
  with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
    sources.load_idx(str(tmp_path), "test")


def test_tfds_source_with_mock_data(tiny):
  tiny.data.source, tiny.data.name = "tfds", "fashion_mnist"
  with tfds.testing.mock_data(num_examples=12):
    images, labels = sources.load(tiny.data, "train")
  assert images.shape == (12, 28, 28, 1) and images.dtype == np.uint8 and labels.shape == (12,)


def views_of(images, config, seed=(1, 2)):
  mean, std = pipeline.normalization(config.data, images.shape[-1])
  return [v.numpy() for v in augment.two_views(tf.constant(images), tf.constant(seed),
                                               config.data, mean, std)]


def test_views_shapes_determinism_and_difference(tiny):
  images = np.random.default_rng(0).integers(0, 255, (16, 12, 12, 3), dtype=np.uint8)
  tiny.data.mean, tiny.data.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
  v1, v2 = views_of(images, tiny)
  assert v1.shape == v2.shape == (16, 8, 8, 3) and v1.dtype == np.float32
  assert not np.allclose(v1, v2)
  again = views_of(images, tiny)
  np.testing.assert_array_equal(v1, again[0])
  other_seed = views_of(images, tiny, seed=(1, 3))
  assert not np.allclose(v1, other_seed[0])
  # Values stay in the normalised image of [0, 1].
  assert v1.min() >= -1 - 1e-5 and v1.max() <= 1 + 1e-5


def test_grayscale_images_keep_one_channel(tiny):
  images = np.random.default_rng(0).integers(0, 255, (4, 12, 12, 1), dtype=np.uint8)
  v1, _ = views_of(images, tiny)
  assert v1.shape == (4, 8, 8, 1)


def test_crop_boxes_follow_the_scale_range():
  boxes = augment.random_resized_crop_boxes(tf.constant([0, 1]), 20000, (0.2, 1.0)).numpy()
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  assert area.min() >= 0.2 - 1e-4 and area.max() <= 1.0 + 1e-6
  assert boxes.min() >= 0 and boxes.max() <= 1 + 1e-6
  # torchvision's sampler, simulated in numpy: area ~ U(scale), log aspect ~ U(log 3/4, log 4/3),
  # the first of 10 tries that fits, else the whole image.  Rejection favours small areas.
  rng = np.random.default_rng(0)
  a = rng.uniform(0.2, 1.0, (20000, 10))
  r = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), (20000, 10)))
  fits = (np.sqrt(a * r) <= 1) & (np.sqrt(a / r) <= 1)
  expected = np.where(fits.any(1), a[np.arange(20000), fits.argmax(1)], 1.0)
  assert abs(area.mean() - expected.mean()) < 0.01
  assert abs(np.median(area) - np.median(expected)) < 0.015


def test_jitter_probability_over_many_draws():
  x = tf.fill([4000, 2, 2, 3], 0.5)
  out = augment.color_jitter(x, tf.constant([3, 4]), (0.4, 0.0, 0.0, 0.0), prob=0.8).numpy()
  changed = np.abs(out - 0.5).max(axis=(1, 2, 3)) > 1e-6
  assert 0.77 < changed.mean() < 0.83
  factors = out[changed, 0, 0, 0] / 0.5
  assert factors.min() >= 0.6 - 1e-5 and factors.max() <= 1.4 + 1e-5


def test_batches_resume_and_process_shards(tiny):
  images = np.random.default_rng(0).integers(0, 255, (64, 12, 12, 1), dtype=np.uint8)
  full = list(pipeline.train_batches(images, tiny, 0, 6))
  resumed = list(pipeline.train_batches(images, tiny, 3, 6))
  for a, b in zip(full[3:], resumed):
    np.testing.assert_array_equal(a["view1"], b["view1"])
  halves = [list(pipeline.train_batches(images, tiny, 0, 1, p, 2))[0] for p in (0, 1)]
  assert halves[0]["view1"].shape == (8, 8, 8, 1)
  assert not np.allclose(halves[0]["view1"], halves[1]["view1"])


def test_normalization_broadcast_and_mismatch(tiny):
  mean, std = pipeline.normalization(tiny.data, 3)
  assert mean.shape == (3,)
  tiny.data.mean, tiny.data.std = (0.1, 0.2, 0.3), (0.2, 0.2, 0.2)
  with pytest.raises(ValueError, match="config.data.mean has 3 entries but the images have 1"):
    pipeline.normalization(tiny.data, 1)
