"""Batches for the compiled step from a source read whole (IDX, NPZ, folder, TFDS): a seeded
epoch order, uint8 images, global arrays. The step draws the views (adcl/data/views.py).

The batch of step t is a pure function of (seed, t): epoch e = t // steps_per_epoch is a
permutation of the training set seeded by (seed, e), step t takes its slice, and the step
draws its views from a key folded from (seed, t). So the data position *is* the step: a run
resumed at step t sees exactly the batches an uninterrupted run sees from t on, with no epoch
restart. Each process reads only its slice of each global batch (`global_batch //
process_count` images) and the step receives global arrays built from every process's slice;
an image's views do not depend on the number of processes.
"""

from typing import Iterator

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding


def steps_per_epoch(num_images: int, global_batch: int) -> int:
  """Full batches per epoch (the last partial batch is dropped, as the official loaders)."""
  if num_images < global_batch:
    raise ValueError(f"config.train.batch_size={global_batch} is larger than the "
                     f"{num_images} training images")
  return num_images // global_batch


def epoch_order(seed: int, epoch: int, num_images: int) -> np.ndarray:
  """The permutation of the training set for `epoch`, seeded by
  (seed, epoch): the same on every process and after every resume."""
  return np.random.default_rng([seed, epoch]).permutation(num_images)


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
  per_epoch = steps_per_epoch(len(images), global_batch)
  order, order_epoch = None, None
  for step in range(start_step, num_steps):
    epoch = step // per_epoch
    if epoch != order_epoch:
      order, order_epoch = epoch_order(config.seed, epoch, len(images)), epoch
    start = (step % per_epoch) * global_batch + process_index * local_batch
    yield {"images": images[order[start:start + local_batch]]}


def to_global(local_batch: dict, sharding: NamedSharding) -> dict:
  """Global arrays, sharded on the batch axis, from every process's slice."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
