"""Two augmented views per image, as torchvision's transforms in the official scripts.

Runs in tf.data on the host, vectorised over a batch (one op per batch, not per image), with
stateless randomness: the views of a batch are a pure function of its seed, so the same seed
gives the same views on every run and a resumed run sees what an uninterrupted one would.

Per image, in the official order: RandomResizedCrop(scale, ratio 3/4-4/3) -> horizontal flip
(p 0.5) -> ColorJitter(brightness, contrast, saturation, hue) applied with `jitter_prob`, its
four ops in a random order per image (as torchvision) -> grayscale with `gray_prob` ->
Gaussian blur with `blur_prob` (the >= 64 px recipe) -> normalise. One-channel images skip
saturation, hue and grayscale (they are no-ops there).
"""

import math
from typing import NamedTuple, Optional

import ml_collections
import tensorflow as tf

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert('L') used by torchvision.
_CROP_TRIES = 10  # torchvision tries 10 random boxes before falling back to the centre.


class Rows(NamedTuple):
  """This process's rows [offset, offset + count) of a global batch of `total` images.

  Every random draw is made for the whole global batch and sliced, so an image's views depend
  on its position in the global batch, not on how many processes share it.
  """
  offset: int
  count: int
  total: int


def _uniform(seed, shape, low, high):
  return tf.random.stateless_uniform(shape, seed, low, high, dtype=tf.float32)


def _per_image(seed, rows: Optional[Rows], batch, tail, low, high):
  """Uniform draws of shape [batch, *tail], one row per image (sliced from the global batch)."""
  if rows is None:
    return _uniform(seed, [batch, *tail], low, high)
  return _uniform(seed, [rows.total, *tail], low, high)[rows.offset:rows.offset + rows.count]


def random_resized_crop_boxes(seed, batch: int, scale, ratio=(3 / 4, 4 / 3),
                              rows: Optional[Rows] = None) -> tf.Tensor:
  """[batch, 4] boxes (y0, x0, y1, x1) in [0, 1], sampled as torchvision's RandomResizedCrop
  (for a square image): area ~ U(scale), log aspect ~ U(log ratio), up to 10 tries, else the
  whole image."""
  s = tf.random.experimental.stateless_split(seed, 4)
  area = _per_image(s[0], rows, batch, [_CROP_TRIES], scale[0], scale[1])
  log_ratio = _per_image(s[1], rows, batch, [_CROP_TRIES], math.log(ratio[0]), math.log(ratio[1]))
  aspect = tf.exp(log_ratio)
  width, height = tf.sqrt(area * aspect), tf.sqrt(area / aspect)
  fits = (width <= 1.0) & (height <= 1.0)
  first = tf.argmax(tf.cast(fits, tf.int32), axis=1)
  any_fits = tf.reduce_any(fits, axis=1)
  width = tf.where(any_fits, tf.gather(width, first, batch_dims=1), 1.0)
  height = tf.where(any_fits, tf.gather(height, first, batch_dims=1), 1.0)
  y0 = _per_image(s[2], rows, batch, [], 0.0, 1.0) * (1.0 - height)
  x0 = _per_image(s[3], rows, batch, [], 0.0, 1.0) * (1.0 - width)
  return tf.stack([y0, x0, y0 + height, x0 + width], axis=1)


def _grayscale(x):
  """[B, H, W, 3] -> [B, H, W, 1] luminance."""
  return tf.reduce_sum(x * tf.constant(_LUMA), axis=-1, keepdims=True)


def _blend(x, other, factor):
  """torchvision's _blend: factor * x + (1 - factor) * other, clipped to [0, 1]."""
  return tf.clip_by_value(factor * x + (1.0 - factor) * other, 0.0, 1.0)


def _jitter_ops(channels: int):
  """The ColorJitter ops as functions (x [B,H,W,C] in [0,1], factor [B,1,1,1]) -> x."""
  gray = (lambda x: x) if channels == 1 else _grayscale

  def brightness(x, f):
    return _blend(x, tf.zeros_like(x), f)

  def contrast(x, f):
    return _blend(x, tf.reduce_mean(gray(x), axis=[1, 2, 3], keepdims=True), f)

  def saturation(x, f):
    return _blend(x, gray(x), f)

  def hue(x, shift):
    hsv = tf.image.rgb_to_hsv(x)
    h = tf.math.floormod(hsv[..., :1] + shift, 1.0)
    return tf.image.hsv_to_rgb(tf.concat([h, hsv[..., 1:]], axis=-1))

  return [brightness, contrast, saturation, hue]


def color_jitter(x, seed, strengths, prob: float, rows: Optional[Rows] = None) -> tf.Tensor:
  """ColorJitter(*strengths) with probability `prob` per image; x: [B, H, W, C] in [0, 1]."""
  batch, channels = tf.shape(x)[0], x.shape[-1]
  s = tf.random.experimental.stateless_split(seed, 6)
  # Factor ranges as torchvision: [max(0, 1 - s), 1 + s] for the first three, [-h, h] for hue.
  ranges = [(max(0.0, 1 - v), 1 + v) for v in strengths[:3]] + [(-strengths[3], strengths[3])]
  factors = [_per_image(s[i], rows, batch, [1, 1, 1], lo, hi) for i, (lo, hi) in enumerate(ranges)]
  ops = _jitter_ops(channels)
  active = [i for i, v in enumerate(strengths) if v > 0 and (channels == 3 or i < 2)]
  # A random order of the active ops per image: argsort of uniform keys.
  order = tf.argsort(_per_image(s[4], rows, batch, [len(active)], 0.0, 1.0), axis=1)
  out = x
  for position in range(len(active)):
    chosen = order[:, position]
    candidates = [ops[op](out, factors[op]) for op in active]
    out = tf.gather(tf.stack(candidates, axis=1), chosen[:, None], batch_dims=1)[:, 0]
  apply = _per_image(s[5], rows, batch, [1, 1, 1], 0.0, 1.0) < prob
  return tf.where(apply, out, x)


def gaussian_blur(x, seed, prob: float, sigma_range=(0.1, 2.0), kernel_fraction=0.1,
                  rows: Optional[Rows] = None):
  """SimCLR's blur: with `prob` per image, a Gaussian of sigma ~ U(sigma_range) pixels and a
  kernel of `kernel_fraction` of the image side (odd). Separable, vectorised over the batch
  (one sigma per image). x: [B, H, W, C] in [0, 1]."""
  batch, size = tf.shape(x)[0], x.shape[1]
  radius = max(1, int(size * kernel_fraction) // 2)
  s = tf.random.experimental.stateless_split(seed, 2)
  sigma = _per_image(s[0], rows, batch, [1], sigma_range[0], sigma_range[1])
  offsets = tf.range(-radius, radius + 1, dtype=tf.float32)[None, :]
  kernel = tf.exp(-0.5 * tf.square(offsets / sigma))
  kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)  # [B, 2r+1]

  def blur_axis(y, axis):
    paddings = [[0, 0]] * 4
    paddings[axis] = [radius, radius]
    padded = tf.pad(y, paddings, mode="REFLECT")
    length = tf.shape(y)[axis]
    taps = [tf.gather(padded, tf.range(i, i + length), axis=axis) for i in range(2 * radius + 1)]
    return tf.einsum("kbhwc,bk->bhwc", tf.stack(taps), kernel)

  blurred = blur_axis(blur_axis(x, 1), 2)
  apply = _per_image(s[1], rows, batch, [1, 1, 1], 0.0, 1.0) < prob
  return tf.where(apply, blurred, x)


def one_view(images: tf.Tensor, seed, views: ml_collections.ConfigDict, size: int,
             rows: Optional[Rows] = None) -> tf.Tensor:
  """One augmented view in [0, 1]: images uint8 [B, H, W, C] -> float32 [B, size, size, C]."""
  batch, channels = tf.shape(images)[0], images.shape[-1]
  s = tf.random.experimental.stateless_split(seed, 5)
  x = tf.cast(images, tf.float32) / 255.0
  boxes = random_resized_crop_boxes(s[0], batch, tuple(views.crop_scale), rows=rows)
  x = tf.image.crop_and_resize(x, boxes, tf.range(batch), (size, size), method="bilinear")
  if views.flip:
    flip = _per_image(s[1], rows, batch, [1, 1, 1], 0.0, 1.0) < 0.5
    x = tf.where(flip, tf.reverse(x, axis=[2]), x)
  if max(views.jitter) > 0 and views.jitter_prob > 0:
    x = color_jitter(x, s[2], tuple(views.jitter), views.jitter_prob, rows)
  if channels == 3 and views.gray_prob > 0:
    to_gray = _per_image(s[3], rows, batch, [1, 1, 1], 0.0, 1.0) < views.gray_prob
    x = tf.where(to_gray, tf.tile(_grayscale(x), [1, 1, 1, 3]), x)
  if views.blur_prob > 0:
    x = gaussian_blur(x, s[4], views.blur_prob, rows=rows)
  return x


def normalize(x: tf.Tensor, mean, std) -> tf.Tensor:
  """(x - mean) / std per channel; x in [0, 1], mean/std of length C or 1."""
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def two_views(images: tf.Tensor, seed, data_config: ml_collections.ConfigDict, mean, std,
              rows: Optional[Rows] = None):
  """Two independent normalised views of each image: uint8 [B,H,W,C] -> 2 x [B,S,S,C].

  mean, std: [C] normalisation of the dataset's channel count (see adcl.data.normalize.normalization).
  rows: where these B images sit in the global batch (None: they are the whole batch).
  """
  s = tf.random.experimental.stateless_split(seed, 2)
  size, views = data_config.image_size, data_config.views
  return tuple(normalize(one_view(images, s[i], views, size, rows), mean, std) for i in range(2))
