"""Batches for the compiled step: a seeded epoch order, two views per image, global arrays.

Two kinds, by where the views are drawn (adcl.build.views_on): `train_batches` draws them on
the host with tf.data (adcl/data/augment.py); `train_images` hands the step uint8 images and
the step draws them (adcl/data/views.py), with numpy only: no TensorFlow.

The batch of step t is a pure function of (seed, t): epoch e = t // steps_per_epoch is a
permutation of the training set seeded by (seed, e), step t takes its slice, and its views
are drawn with the seed (t, seed) for the whole global batch. So the data position *is* the step: a run resumed
at step t sees exactly the batches an uninterrupted run sees from t on, with no epoch restart.
Each process reads only its slice of each global batch (`global_batch // process_count`
images) and the step receives global arrays built from every process's slice; an image's
views do not depend on the number of processes.
"""

from typing import Iterator

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

from adcl import errors
from adcl.data.normalize import normalization


def keep_tensorflow_on_host() -> None:
  """TensorFlow only feeds data: keep it off accelerators so it never takes their memory.
  Called before TensorFlow's first op (after it, TensorFlow refuses, and it is too late)."""
  tf = errors.import_tensorflow("data.views_on='host' (tf.data views)")

  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # Already initialised (a second run in one process): left as it is.
    pass


def steps_per_epoch(num_images: int, global_batch: int) -> int:
  """Full batches per epoch (the last partial batch is dropped, as the official loaders)."""
  if num_images < global_batch:
    raise ValueError(f"config.train.batch_size={global_batch} is larger than the "
                     f"{num_images} training images")
  return num_images // global_batch


def train_batches(images: np.ndarray, config: ml_collections.ConfigDict, start_step: int,
                  num_steps: int, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict]:
  """This process's part of the batches of steps [start_step, num_steps).

  Args:
    images: uint8 [N, H, W, C], the whole training set.
  Yields:
    {'view1', 'view2'}: float32 numpy [global_batch // process_count, S, S, C].
  """
  tf = errors.import_tensorflow("data.views_on='host' (tf.data views)")

  from adcl.data import augment

  global_batch = config.train.batch_size
  local_batch = global_batch // process_count
  per_epoch = steps_per_epoch(len(images), global_batch)
  mean, std = normalization(config.data, images.shape[-1])
  seed = config.seed
  rows = augment.Rows(process_index * local_batch, local_batch, global_batch)
  all_images = tf.constant(images)
  n = len(images)

  def local_indices(step):
    epoch = step // per_epoch
    order = tf.argsort(tf.random.stateless_uniform([n], tf.stack([seed, tf.cast(epoch, tf.int32)])))
    start = (step % per_epoch) * global_batch + process_index * local_batch
    return order[start:start + local_batch]

  def make_views(step):
    batch = tf.gather(all_images, local_indices(step))
    view_seed = tf.stack([tf.cast(step, tf.int32), tf.constant(seed, tf.int32)])
    view1, view2 = augment.two_views(batch, view_seed, config.data, mean, std, rows)
    return {"view1": view1, "view2": view2}

  dataset = tf.data.Dataset.range(start_step, num_steps)
  dataset = dataset.map(make_views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  dataset = dataset.prefetch(2)
  return dataset.as_numpy_iterator()


def epoch_order(seed: int, epoch: int, num_images: int) -> np.ndarray:
  """The device-views path's permutation of the training set for `epoch`, seeded by
  (seed, epoch): the same on every process and after every resume."""
  return np.random.default_rng([seed, epoch]).permutation(num_images)


def train_images(images: np.ndarray, config: ml_collections.ConfigDict, start_step: int,
                 num_steps: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
  """This process's part of the uint8 images of steps [start_step, num_steps), for a step that
  draws the views itself.

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
