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
  (read chunk_rows images at a time) for data.source 'records'."""
  data = config.data
  if data.source != "records":
    from adcl.data import sources
    return sources.load(data, split)
  from adcl.data import stream
  return stream.EvalSplit(data.data_dir, data.train_split if split == "train" else
                          data.test_split, data.image_size, chunk_rows(config))


def chunk_rows(config: ml_collections.ConfigDict) -> int:
  """Images evaluation reads, normalises and embeds at a time: 4 x eval.batch_size. Their
  float32 copy, not the whole split's (4 bytes per uint8 pixel), is what evaluation holds."""
  return 4 * config.eval.batch_size


def split_chunks(split, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(uint8 images, labels) chunks of `rows` images that cover `split` (load_split's) once,
  in order (records: their own chunk size, chunk_rows of the config that loaded them)."""
  if isinstance(split, tuple):
    images, labels = split
    for start in range(0, len(labels), rows):
      yield images[start:start + rows], labels[start:start + rows]
  else:
    yield from split.chunks()


def split_head(split, count: int) -> tuple[np.ndarray, np.ndarray]:
  """The first `count` (uint8 images, labels) of `split` (load_split's)."""
  if isinstance(split, tuple):
    return split[0][:count], split[1][:count]
  return split.head(count)
