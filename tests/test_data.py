"""Sources and views: IDX reading and its errors, TFDS through mock data, view statistics,
determinism, per-process shards."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from adcl.data import augment, normalize, pipeline, sources
from conftest import torchvision_crops, write_idx


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
  mean, std = normalize.normalization(config.data, images.shape[-1])
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
  expected, _ = torchvision_crops(20000, (0.2, 1.0))
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
  mean, std = normalize.normalization(tiny.data, 3)
  assert mean.shape == (3,)
  tiny.data.mean, tiny.data.std = (0.1, 0.2, 0.3), (0.2, 0.2, 0.2)
  with pytest.raises(ValueError, match="config.data.mean has 3 entries but the images have 1"):
    normalize.normalization(tiny.data, 1)


def test_npz_source_and_its_errors(tmp_path, tiny):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "train.npz", x=rng.integers(0, 255, (20, 10, 10, 3), dtype=np.uint8),
           y=rng.integers(0, 4, 20))
  tiny.data.source, tiny.data.data_dir = "npz", str(tmp_path)
  images, labels = sources.load(tiny.data, "train")
  assert images.shape == (20, 10, 10, 3) and labels.dtype == np.int32
  np.savez(tmp_path / "test.npz", images=np.zeros((2, 4, 4), np.uint8), y=np.zeros(2))
  with pytest.raises(ValueError, match="test.npz: no array 'x'"):
    sources.load(tiny.data, "test")
  tiny.data.test_split = "missing"
  with pytest.raises(FileNotFoundError, match="missing.npz: no such NPZ file"):
    sources.load(tiny.data, "test")


def write_tiny_imagenet(root, classes=("n01", "n02", "n03"), per_class=4, val=5, size=8):
  """The tiny ImageNet layout: train/<wnid>/images/*.JPEG, val/images + val_annotations.txt."""
  from PIL import Image
  rng = np.random.default_rng(0)
  for c in classes:
    os.makedirs(root / "train" / c / "images")
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
          root / "train" / c / "images" / f"{c}_{i}.JPEG")
  os.makedirs(root / "val" / "images")
  with open(root / "val" / "val_annotations.txt", "w") as f:
    for i in range(val):
      Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
          root / "val" / "images" / f"val_{i}.JPEG")
      f.write(f"val_{i}.JPEG\t{classes[i % len(classes)]}\t0\t0\t8\t8\n")


def test_folder_source_in_the_tiny_imagenet_layout(tmp_path):
  write_tiny_imagenet(tmp_path)
  images, labels = sources.load_folder(str(tmp_path), "train")
  assert images.shape == (12, 8, 8, 3) and sorted(set(labels)) == [0, 1, 2]
  val_images, val_labels = sources.load_folder(str(tmp_path), "val")
  assert val_images.shape == (5, 8, 8, 3) and list(val_labels) == [0, 1, 2, 0, 1]
  resized, _ = sources.load_folder(str(tmp_path), "val", size=6)
  assert resized.shape == (5, 6, 6, 3)


def test_folder_source_errors_name_the_file(tmp_path):
  write_tiny_imagenet(tmp_path)
  (tmp_path / "train" / "n02" / "images" / "n02_1.JPEG").write_bytes(b"not an image")
  with pytest.raises(ValueError, match="n02_1.JPEG: not a readable image"):
    sources.load_folder(str(tmp_path), "train")
  os.makedirs(tmp_path / "empty" / "train" / "a")
  with pytest.raises(ValueError, match="no images"):
    sources.load_folder(str(tmp_path / "empty"), "train")
  with pytest.raises(FileNotFoundError, match="no 'train' folder"):
    sources.load_folder(str(tmp_path / "nowhere"), "train")


def test_blur_probability_and_that_it_smooths():
  rng = np.random.default_rng(0)
  x = tf.constant(rng.uniform(size=(2000, 16, 16, 1)), tf.float32)
  out = augment.gaussian_blur(x, tf.constant([5, 6]), prob=0.5).numpy()
  blurred = np.abs(out - x.numpy()).max(axis=(1, 2, 3)) > 1e-6
  assert 0.46 < blurred.mean() < 0.54
  # Blur lowers the pixel variance and keeps the mean (a normalised kernel).
  assert out[blurred].var() < x.numpy()[blurred].var()
  np.testing.assert_allclose(out[blurred].mean(), x.numpy()[blurred].mean(), atol=5e-3)


def test_validation_split_is_seeded_and_disjoint_from_train(tiny):
  tiny.data.val_fraction = 0.25
  train_x, train_y = sources.load(tiny.data, "train")
  val_x, val_y = sources.load(tiny.data, "val")
  assert len(train_x) == 48 and len(val_x) == 16
  full = sources.load_idx(tiny.data.data_dir, "train")[0].reshape(64, -1)
  rows = lambda x: {r.tobytes() for r in x.reshape(len(x), -1)}
  assert rows(train_x) | rows(val_x) == rows(full) and not rows(train_x) & rows(val_x)
  np.testing.assert_array_equal(sources.load(tiny.data, "val")[0], val_x)


def test_process_shards_are_disjoint_and_cover_each_epoch(tiny):
  # Identity views (no crop randomness): each batch row is an input image, recognisable.
  tiny.data.views.crop_scale, tiny.data.views.flip = (1.0, 1.0), False
  tiny.data.views.jitter_prob, tiny.data.image_size = 0.0, 12
  tiny.data.mean, tiny.data.std = (0.0,), (1 / 255,)
  images = np.random.default_rng(0).permutation(64 * 144).reshape(64, 12, 12, 1) % 251
  images = images.astype(np.uint8)
  seen = []
  for process in (0, 1):
    for batch in pipeline.train_batches(images, tiny, 0, 4, process, 2):  # One epoch.
      seen += [np.rint(v).astype(np.uint8).tobytes() for v in batch["view1"]]
  assert len(seen) == 64 and set(seen) == {im.tobytes() for im in images}


def test_views_do_not_depend_on_the_process_count(tiny):
  images = np.random.default_rng(0).integers(0, 255, (64, 12, 12, 1), dtype=np.uint8)
  whole = list(pipeline.train_batches(images, tiny, 0, 2))
  halves = [list(pipeline.train_batches(images, tiny, 0, 2, p, 2)) for p in (0, 1)]
  for step in range(2):
    joined = np.concatenate([halves[0][step]["view1"], halves[1][step]["view1"]])
    np.testing.assert_array_equal(joined, whole[step]["view1"])


def test_tfds_dataset_missing_from_an_offline_data_dir(tiny, tmp_path):
  from adcl import configs
  tiny.data.source, tiny.data.name, tiny.data.data_dir = "tfds", "cifar10", str(tmp_path)
  with pytest.raises(ValueError, match=r"'cifar10' is not prepared in"):
    configs.validate_dataset_name(tiny)


def test_tfds_resize_on_loading(tiny):
  tiny.data.source, tiny.data.name, tiny.data.load_size = "tfds", "fashion_mnist", 10
  with tfds.testing.mock_data(num_examples=6):
    images, _ = sources.load(tiny.data, "train")
  assert images.shape == (6, 10, 10, 1) and images.dtype == np.uint8


def test_flip_and_grayscale_probabilities_over_many_draws(tiny):
  # A left-right gradient in red only: flips reverse it, grayscale equalises the channels.
  ramp = np.linspace(0, 255, 12, dtype=np.float32)
  image = np.zeros((12, 12, 3), np.float32)
  image[..., 0] = ramp[None, :]
  images = np.repeat(image[None].astype(np.uint8), 4000, axis=0)
  tiny.data.image_size = 12
  tiny.data.views.crop_scale, tiny.data.views.jitter_prob = (1.0, 1.0), 0.0
  tiny.data.mean, tiny.data.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
  view = augment.one_view(tf.constant(images), tf.constant([7, 8]), tiny.data.views, 12).numpy()
  flipped = view[:, 0, 0, 0] > view[:, 0, -1, 0] + 1e-3
  flipped |= view[:, 0, 0, 1] > view[:, 0, -1, 1] + 1e-3  # Grey images flip in every channel.
  gray = np.abs(view[..., 0] - view[..., 1]).max(axis=(1, 2)) < 1e-5
  assert 0.47 < flipped.mean() < 0.53
  assert 0.18 < gray.mean() < 0.22
