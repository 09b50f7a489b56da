"""Where images come from: TFDS by name, or MNIST-format IDX files on disk.

Every source returns `(images, labels)`: uint8 [N, H, W, C] and int32 [N], held in host
memory (CIFAR-10 is 150 MB, Fashion-MNIST 47 MB). Streaming sources for larger sets belong
to the data layer.
"""

import gzip
import os

import ml_collections
import numpy as np

# File names of the IDX distribution (MNIST, Fashion-MNIST), with or without '.gz'.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def read_idx(path: str) -> np.ndarray:
  """One IDX file (optionally gzipped) as a numpy array of its declared shape and dtype."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)):
    raise ValueError(f"{path}: header declares shape {shape} ({int(np.prod(shape))} bytes) "
                     f"but the file holds {body.size} bytes")
  return body.reshape(shape)


def _find(directory: str, stem: str) -> str:
  for name in (stem, stem + ".gz"):
    if os.path.exists(os.path.join(directory, name)):
      return os.path.join(directory, name)
  raise FileNotFoundError(f"{directory}: no {stem} or {stem}.gz (config.data.data_dir)")


def load_idx(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """The `split` ('train' or 'test') of an IDX directory as ([N, H, W, 1] uint8, [N] int32)."""
  if split not in IDX_FILES:
    raise ValueError(f"IDX split {split!r}; choose 'train' or 'test'")
  images_path, labels_path = (_find(directory, stem) for stem in IDX_FILES[split])
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.shape[0] != labels.shape[0]:
    raise ValueError(f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
                     f"{labels.shape[0]} labels")
  if images.ndim == 3:
    images = images[..., None]
  return images, labels.astype(np.int32)


def load_tfds(name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """A TFDS split, whole, as numpy ([N, H, W, C] uint8, [N] int32)."""
  import tensorflow_datasets as tfds  # Heavy; imported where used.

  dataset = tfds.load(name, split=split, data_dir=data_dir or None, as_supervised=True)
  # Batches of 4096 rather than batch_size=-1: the latter needs a known cardinality (it
  # aborts the process under tfds.testing.mock_data).
  parts = list(tfds.as_numpy(dataset.batch(4096)))
  if not parts:
    raise ValueError(f"TFDS {name!r} split {split!r} is empty")
  images = np.concatenate([p[0] for p in parts]).astype(np.uint8)
  return images, np.concatenate([p[1] for p in parts]).astype(np.int32)


def load(data_config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
  """`split` ('train' or 'test', mapped to the configured split names) of the configured source."""
  if data_config.source == "idx":
    return load_idx(data_config.data_dir, split)
  tfds_split = data_config.train_split if split == "train" else data_config.test_split
  return load_tfds(data_config.name, tfds_split, data_config.data_dir)
