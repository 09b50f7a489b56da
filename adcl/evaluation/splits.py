"""What evaluation reads: a split of labelled images, whole in memory or records a chunk at a
time, behind one interface.

A split has `len(split)` images of `split.channels` channels; `split.chunks(rows)` covers it
once, in order, `rows` (uint8 images [n, H, W, C], int labels [n]) at a time; `split.head(count)`
is its first `count` whole; `split.fingerprint` names its bytes (the pixel-baseline cache's
key); `split.in_memory` says whether it is held whole (its features are then kept in memory
too). ArraySplit is the in-memory one; adcl.data.records.EvalSplit reads converted records.
"""

import functools
import hashlib
from typing import Iterator

import ml_collections
import numpy as np


class ArraySplit:
  """A split held whole: uint8 images [N, H, W, C] and int labels [N]."""

  in_memory = True

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    if len(images) != len(labels):
      raise ValueError(f"{len(images)} images but {len(labels)} labels")
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def channels(self) -> int:
    return self.images.shape[-1]

  def chunks(self, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(self), rows):
      yield self.images[start:start + rows], self.labels[start:start + rows]

  def head(self, count: int) -> tuple[np.ndarray, np.ndarray]:
    return self.images[:count], self.labels[:count]

  @functools.cached_property
  def fingerprint(self) -> str:
    """SHA-256 of the images' and labels' shapes, types and bytes."""
    digest = hashlib.sha256()
    for array in (self.images, self.labels):
      array = np.ascontiguousarray(array)
      digest.update(f"{array.shape}{array.dtype}".encode())
      digest.update(array.data)
    return digest.hexdigest()


def load_split(config: ml_collections.ConfigDict, split: str):
  """`split` ('train' or 'test') of config.data as evaluation reads it: an ArraySplit for the
  in-memory sources, an adcl.data.records.EvalSplit for data.source 'records'."""
  data = config.data
  if data.source != "records":
    from adcl.data import sources
    return ArraySplit(*sources.load(data, split))
  from adcl.data import records
  return records.EvalSplit(data.data_dir, data.train_split if split == "train" else
                           data.test_split, data.image_size)


def chunk_rows(config: ml_collections.ConfigDict) -> int:
  """Images evaluation reads, normalises and embeds at a time: 4 x eval.batch_size. Their
  float32 copy, not the whole split's (4 bytes per uint8 pixel), is what evaluation holds."""
  return 4 * config.eval.batch_size
