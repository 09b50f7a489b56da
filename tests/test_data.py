"""Sources read whole: IDX, NPZ, folders and TFDS (through mock data), their errors, the
validation split, normalisation. (The views are tests/test_views.py's, the epoch order
tests/test_train.py's.)"""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from adcl.data import normalize, sources
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


def test_validation_split_is_seeded_and_disjoint_from_train(tiny):
  tiny.data.val_fraction = 0.25
  train_x, train_y = sources.load(tiny.data, "train")
  val_x, val_y = sources.load(tiny.data, "val")
  assert len(train_x) == 48 and len(val_x) == 16
  full = sources.load_idx(tiny.data.data_dir, "train")[0].reshape(64, -1)
  rows = lambda x: {r.tobytes() for r in x.reshape(len(x), -1)}
  assert rows(train_x) | rows(val_x) == rows(full) and not rows(train_x) & rows(val_x)
  np.testing.assert_array_equal(sources.load(tiny.data, "val")[0], val_x)


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
