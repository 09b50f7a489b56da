"""Bilinear resampling in jax: the device views' crops and the evaluation images' resize. Both
sample where TensorFlow's tf.image.resize does (no TensorFlow needed), and both are gathers and
elementwise blends, never a reduction, so an image's result does not depend on how its batch is
sharded."""

import jax.numpy as jnp
import numpy as np


def sample_axis(x, positions, axis: int):
  """x read at fractional `positions` (pixel units, clamped into the image, as TensorFlow
  clamps) along `axis`, each from its two neighbouring pixels."""
  extent = x.shape[axis]
  positions = jnp.clip(positions, 0.0, extent - 1.0)
  low = jnp.floor(positions)
  weight = (positions - low).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
  low = low.astype(jnp.int32)
  high = jnp.minimum(low + 1, extent - 1)
  below, above = jnp.take(x, low, axis=axis), jnp.take(x, high, axis=axis)
  return below + (above - below) * weight


def resized_crop(image, box, size: int):
  """The box (y0, x0, y1, x1 in [0, 1]) of image [H, W, C] resized to [size, size, C].

  Positions as tf.image.crop_and_resize: the box's corners map to the centres of pixels 0 and
  H - 1, and the outputs are spaced evenly between them.
  """
  height, width = image.shape[:2]
  steps = jnp.arange(size) / max(size - 1, 1)

  def positions(start, end, extent):
    if size == 1:
      return jnp.full((1,), 0.5 * (start + end) * (extent - 1))
    return (start + steps * (end - start)) * (extent - 1)

  rows = sample_axis(image, positions(box[0], box[2], height), 0)
  return sample_axis(rows, positions(box[1], box[3], width), 1)


def resize(images: np.ndarray, size: int) -> np.ndarray:
  """float [N, H, W, C] -> float32 [N, size, size, C], as tf.image.resize(method='bilinear')
  (half-pixel centres, no antialiasing)."""
  _, height, width, _ = images.shape
  centres = lambda extent: (np.arange(size) + 0.5) * (extent / size) - 0.5
  x = sample_axis(jnp.asarray(images, jnp.float32), jnp.asarray(centres(height), jnp.float32), 1)
  return np.asarray(sample_axis(x, jnp.asarray(centres(width), jnp.float32), 2))
