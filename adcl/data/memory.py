"""Batches for the compiled step from a source read whole (IDX, NPZ, folder, TFDS): uint8
images in the data order (adcl/data/order.py), as global arrays. The step draws the views
(adcl/data/views.py), from a key folded from (seed, t), so a process's batch and its views
depend on (seed, t) and its rows only.
"""

from typing import Iterator

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

from adcl.data import order


def train_images(images: np.ndarray, config: ml_collections.ConfigDict, start_step: int,
                 num_steps: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
  """This process's part of the uint8 images of steps [start_step, num_steps).

  Args:
    images: uint8 [N, H, W, C], the whole training set.
  Yields:
    {'images'}: uint8 numpy [global_batch // process_count, H, W, C]; rows
    [process_index * local, (process_index + 1) * local) of the step's global batch.
  """
  global_batch = config.train.batch_size
  local_batch = global_batch // process_count
  rows = range(process_index * local_batch, (process_index + 1) * local_batch)
  for step in range(start_step, num_steps):
    yield {"images": images[order.batch_indices(config.seed, step, global_batch, len(images),
                                                rows)]}


def to_global(local_batch: dict, sharding: NamedSharding) -> dict:
  """Global arrays, sharded on the batch axis, from every process's slice."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
