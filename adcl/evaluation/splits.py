"""What evaluation reads: a split whole in memory, or a split of records a chunk at a time.

A split is either (uint8 images [N, H, W, C], labels [N]) or an adcl.data.stream.EvalSplit;
evaluation goes through `split_chunks` and `split_head`, so it reads both the same way.
"""

from typing import Iterator

import ml_collections
import numpy as np


def load_split(config: ml_collections.ConfigDict, split: str):
  """`split` ('train' or 'test') of config.data as evaluation reads it: (uint8 images
  [N, H, W, C], labels [N]) whole for the in-memory sources, an adcl.data.stream.EvalSplit
  (read 4 x eval.batch_size images at a time) for data.source 'records'."""
  data = config.data
  if data.source != "records":
    from adcl.data import sources
    return sources.load(data, split)
  from adcl.data import stream
  return stream.EvalSplit(data.data_dir, data.train_split if split == "train" else
                          data.test_split, data.image_size, 4 * config.eval.batch_size)


def split_chunks(split) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(uint8 images, labels) chunks that cover `split` (load_split's) once, in order."""
  if isinstance(split, tuple):
    yield split
  else:
    yield from split.chunks()


def split_head(split, count: int) -> tuple[np.ndarray, np.ndarray]:
  """The first `count` (uint8 images, labels) of `split` (load_split's)."""
  if isinstance(split, tuple):
    return split[0][:count], split[1][:count]
  return split.head(count)
