"""The data order: which images make step t's global batch, for every source.

Epoch e = t // steps_per_epoch is a permutation of the split seeded by (seed, e), and step t
takes its slice of it; process p of P takes rows [p * B / P, (p + 1) * B / P) of the global
batch B. So the batch of step t is a function of (seed, t) alone: a run resumed at step t
reads what an unbroken run reads from t on, on any number of processes, with no iterator
state. The permutation is numpy's, one array per epoch (8 bytes an image: 10 MB for
ImageNet-1k), computed once per epoch and process.
"""

import functools

import numpy as np


def steps_per_epoch(num_images: int, global_batch: int) -> int:
  """Full batches per epoch (the last partial batch is dropped, as the official loaders)."""
  if num_images < global_batch:
    raise ValueError(f"config.train.batch_size={global_batch} is larger than the "
                     f"{num_images} training images")
  return num_images // global_batch


@functools.lru_cache(maxsize=2)  # This epoch's, and the last one's across its boundary.
def epoch_order(seed: int, epoch: int, num_images: int) -> np.ndarray:
  """int64 [num_images]: the permutation of the split for `epoch`, seeded by (seed, epoch)."""
  order = np.random.default_rng([seed, epoch]).permutation(num_images)
  order.flags.writeable = False  # Shared by every caller of the cache.
  return order


def batch_indices(seed: int, step: int, global_batch: int, num_images: int,
                  rows: range) -> np.ndarray:
  """int64 [len(rows)]: the images at `rows` of step `step`'s global batch."""
  per_epoch = steps_per_epoch(num_images, global_batch)
  epoch, first = step // per_epoch, (step % per_epoch) * global_batch
  return epoch_order(seed, epoch, num_images)[first + rows.start:first + rows.stop]
