"""Where images come from: TFDS by name, MNIST-format IDX files, NPZ arrays, image folders.

Every source returns `(images, labels)`: uint8 [N, H, W, C] and int32 [N], held in host
memory (CIFAR-10 is 150 MB, Fashion-MNIST 47 MB): the fastest path for data that fits.
`python -m adcl.data.convert` writes any of these sources as ArrayRecord shards
(adcl/data/shards.py) for data that does not.
"""

import gzip
import os
import zlib
from typing import Optional, Sequence

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
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (gzip.BadGzipFile, EOFError, zlib.error) as error:  # Damaged or not gzip at all.
    raise ValueError(f"{path}: not a readable gzipped IDX file ({error})") from None
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


def load_tfds(name: str, split: str, data_dir: str, size: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """A TFDS split, whole, as numpy ([N, H, W, C] uint8, [N] int32); images resized to
  size x size when size > 0 (datasets of varying image sizes, e.g. imagenette, need it)."""
  from adcl import errors

  tf = errors.import_tensorflow("data.source='tfds'")
  import tensorflow_datasets as tfds  # Heavy; imported where used.

  # TensorFlow only reads the files: kept off accelerators, so it never takes their memory
  # (possible only before its first op; a second load in one process finds it done).
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    pass
  dataset = tfds.load(name, split=split, data_dir=data_dir or None, as_supervised=True)
  if size:
    resize = lambda x: tf.cast(tf.round(tf.image.resize(x, (size, size), antialias=True)), tf.uint8)
    dataset = dataset.map(lambda x, y: (resize(x), y), num_parallel_calls=tf.data.AUTOTUNE)
  elif dataset.element_spec[0].shape[:2].num_elements() is None:
    raise ValueError(f"TFDS {name!r} has images of varying size; set config.data.load_size")
  # Batches of 4096 rather than batch_size=-1: the latter needs a known cardinality (it
  # aborts the process under tfds.testing.mock_data).
  parts = list(tfds.as_numpy(dataset.batch(4096)))
  if not parts:
    raise ValueError(f"TFDS {name!r} split {split!r} is empty")
  images = np.concatenate([p[0] for p in parts]).astype(np.uint8)
  return images, np.concatenate([p[1] for p in parts]).astype(np.int32)


def load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
  """An NPZ file with `x` (uint8 [N, H, W] or [N, H, W, C]) and `y` ([N] integer labels)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such NPZ file (config.data.data_dir)")
  with np.load(path) as arrays:
    missing = [k for k in ("x", "y") if k not in arrays.files]
    if missing:
      raise ValueError(f"{path}: no array {missing[0]!r} (it holds {sorted(arrays.files)}); "
                       "an NPZ source needs 'x' (images) and 'y' (labels)")
    images, labels = arrays["x"], arrays["y"]
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[0] != labels.shape[0]:
    raise ValueError(f"{path}: x has shape {images.shape} and y {labels.shape}; expected "
                     "[N, H, W(, C)] and [N]")
  if images.dtype != np.uint8:
    raise ValueError(f"{path}: x is {images.dtype}; store uint8 pixels in [0, 255]")
  return images, labels.astype(np.int32)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def _read_image(path: str, size: int) -> np.ndarray:
  """RGB uint8 [H, W, 3] (resized to size x size if size > 0); a clear error if corrupt."""
  from PIL import Image, UnidentifiedImageError  # Pillow comes with matplotlib.

  try:
    with Image.open(path) as image:
      image = image.convert("RGB")
      if size:
        image = image.resize((size, size), Image.BILINEAR)
      return np.asarray(image, np.uint8)
  except (UnidentifiedImageError, OSError, SyntaxError) as error:
    raise ValueError(f"{path}: not a readable image ({error})") from error


def _images_under(directory: str) -> list[str]:
  paths = [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names
           if name.lower().endswith(IMAGE_SUFFIXES)]
  return sorted(paths)


def _stack(paths: list[str], size: int, where: str) -> np.ndarray:
  images = [_read_image(p, size) for p in paths]
  shapes = {im.shape for im in images}
  if len(shapes) > 1:
    raise ValueError(f"{where}: images of several sizes {sorted(shapes)[:3]}...; set "
                     "config.data.load_size to resize them on loading")
  return np.stack(images)


def load_folder(directory: str, split: str, size: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """An image folder (folder_listing's layouts), decoded whole: ([N, H, W, 3] uint8, [N] int32);
  images resized to size x size when size > 0."""
  paths, labels, _ = folder_listing(directory, split)
  return _stack(paths, size, os.path.join(directory, split)), np.asarray(labels, np.int32)


def folder_listing(directory: str, split: str,
                   only: Optional[Sequence[str]] = None) -> tuple[list, list, list]:
  """(image paths, labels, class names) of `split` of an image folder: `directory/train/<class>/
  **/image` (ImageNet's layout; tiny ImageNet's `<class>/images/` too), and for the other splits
  either the same layout or tiny ImageNet's `directory/val/images/*` with
  `val/val_annotations.txt` (file name, tab, class). Classes are the sorted sub-folders of
  `train`, or the sorted classes `only` (a subset such as ImageNet-100), each of which must be
  one of them."""
  train_dir = os.path.join(directory, "train")
  if not os.path.isdir(train_dir):
    raise FileNotFoundError(f"{directory}: no 'train' folder (config.data.data_dir)")
  classes = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
  if not classes:
    raise ValueError(f"{train_dir}: no class sub-folders")
  if only is not None:
    missing = sorted(set(only) - set(classes))
    if missing:
      raise ValueError(f"{train_dir}: no folder for class {missing[0]!r} ({len(missing)} of the "
                       f"{len(set(only))} classes asked for are missing)")
    classes = sorted(set(only))
  split_dir = os.path.join(directory, split)
  annotations = os.path.join(split_dir, "val_annotations.txt")
  if os.path.exists(annotations):
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    with open(annotations) as f:
      for line_number, line in enumerate(f, 1):
        fields = line.rstrip("\n").split("\t")
        if only is not None and len(fields) >= 2 and fields[1] not in index:
          continue  # A class outside the subset.
        if len(fields) < 2 or fields[1] not in index:
          raise ValueError(f"{annotations}:{line_number}: expected 'file<TAB>class' with a class "
                           f"of {train_dir}, got {line.strip()!r}")
        paths.append(os.path.join(split_dir, "images", fields[0]))
        labels.append(index[fields[1]])
  else:
    if not os.path.isdir(split_dir):
      raise FileNotFoundError(f"{directory}: no {split!r} folder")
    paths, labels = [], []
    for label, name in enumerate(classes):
      found = _images_under(os.path.join(split_dir, name))
      paths += found
      labels += [label] * len(found)
  if not paths:
    raise ValueError(f"{split_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
  return paths, labels, classes


def load(data_config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
  """`split` of the configured source: 'train', 'test', or 'val' (a seeded `val_fraction` of
  the training split, which 'train' then excludes)."""
  if split not in ("train", "val", "test"):
    raise ValueError(f"split {split!r}; choose 'train', 'val' or 'test'")
  if split == "test" or (split == "train" and not data_config.val_fraction):
    return _load_split(data_config, split)
  if not 0 < data_config.val_fraction < 1:
    raise ValueError(f"config.data.val_fraction={data_config.val_fraction}: a 'val' split needs "
                     "0 < val_fraction < 1")
  images, labels = _load_split(data_config, "train")
  order = np.random.default_rng(data_config.val_seed).permutation(len(images))
  num_val = int(round(len(images) * data_config.val_fraction))
  keep = np.sort(order[:num_val] if split == "val" else order[num_val:])
  return images[keep], labels[keep]


def _load_split(data_config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
  split_name = data_config.train_split if split == "train" else data_config.test_split
  if data_config.source == "idx":
    return load_idx(data_config.data_dir, split)
  if data_config.source == "npz":
    return load_npz(os.path.join(data_config.data_dir, f"{split_name}.npz"))
  if data_config.source == "folder":
    return load_folder(data_config.data_dir, split_name, data_config.load_size)
  return load_tfds(data_config.name, split_name, data_config.data_dir, data_config.load_size)
