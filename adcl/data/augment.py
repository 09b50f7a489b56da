"""Two augmented views per image, as torchvision's transforms in the official scripts.

Runs in tf.data on the host, vectorised over a batch (one op per batch, not per image), with
stateless randomness: the views of a batch are a pure function of its seed, so the same seed
gives the same views on every run and a resumed run sees what an uninterrupted one would.

Per image, in the official order: RandomResizedCrop(scale, ratio 3/4-4/3) -> horizontal flip
(p 0.5) -> ColorJitter(brightness, contrast, saturation, hue) applied with `jitter_prob`, its
four ops in a random order per image (as torchvision) -> grayscale with `gray_prob` ->
Gaussian blur with `blur_prob` (the >= 64 px recipe) -> normalise. One-channel images skip
saturation, hue and grayscale (they are no-ops there). Each view is its random draws
(`draw_view`, adcl.data.draws.ViewDraws) applied to the pixels (`apply_view`), with the device
views' arithmetic (adcl/data/views.py).
"""

import math
from typing import NamedTuple, Optional

import ml_collections
import tensorflow as tf

from adcl.data.draws import (BLUR_KERNEL_FRACTION, CROP_TRIES, LUMA, ViewDraws,
                             active_jitter_ops, jitter_ranges)



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
  area = _per_image(s[0], rows, batch, [CROP_TRIES], scale[0], scale[1])
  log_ratio = _per_image(s[1], rows, batch, [CROP_TRIES], math.log(ratio[0]), math.log(ratio[1]))
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


def _per_pixel(values):
  """[B] per-image values -> [B, 1, 1, 1], to broadcast over an image batch."""
  return tf.reshape(values, [-1, 1, 1, 1])


def _grayscale(x):
  """[B, H, W, 3] -> [B, H, W, 1] luminance."""
  return tf.reduce_sum(x * tf.constant(LUMA), axis=-1, keepdims=True)


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


def draw_jitter(seed, strengths, prob: float, batch, channels: int,
                rows: Optional[Rows] = None):
  """ColorJitter(*strengths)'s draws per image: (factors [B, 4] in draws.jitter_ranges, order
  [B, A] of the active ops, applies bool [B] with `prob`)."""
  s = tf.random.experimental.stateless_split(seed, 6)
  factors = tf.concat([_per_image(s[i], rows, batch, [1], low, high)
                       for i, (low, high) in enumerate(jitter_ranges(strengths))], axis=1)
  # A uniformly random order of the active ops per image: argsort of uniform keys.
  count = len(active_jitter_ops(strengths, channels))
  order = tf.argsort(_per_image(s[4], rows, batch, [count], 0.0, 1.0), axis=1)
  return factors, order, _per_image(s[5], rows, batch, [], 0.0, 1.0) < prob


def jitter(x, factors, order, strengths) -> tf.Tensor:
  """The active jitter ops on x [B, H, W, C] in [0, 1], per image in `order` [B, A], with
  `factors` [B, 4]."""
  ops = _jitter_ops(x.shape[-1])
  active = active_jitter_ops(strengths, x.shape[-1])
  for position in range(len(active)):
    candidates = [ops[op](x, _per_pixel(factors[:, op])) for op in active]
    x = tf.gather(tf.stack(candidates, axis=1), order[:, position][:, None], batch_dims=1)[:, 0]
  return x


def color_jitter(x, seed, strengths, prob: float, rows: Optional[Rows] = None) -> tf.Tensor:
  """ColorJitter(*strengths) with probability `prob` per image; x: [B, H, W, C] in [0, 1]."""
  factors, order, applies = draw_jitter(seed, strengths, prob, tf.shape(x)[0], x.shape[-1],
                                        rows)
  return tf.where(_per_pixel(applies), jitter(x, factors, order, strengths), x)


def draw_blur(seed, prob: float, batch, sigma_range=(0.1, 2.0), rows: Optional[Rows] = None):
  """SimCLR's blur draws per image: (sigma [B] ~ U(sigma_range) pixels, applies bool [B])."""
  s = tf.random.experimental.stateless_split(seed, 2)
  sigma = _per_image(s[0], rows, batch, [], sigma_range[0], sigma_range[1])
  return sigma, _per_image(s[1], rows, batch, [], 0.0, 1.0) < prob


def blur(x, sigma, kernel_fraction=BLUR_KERNEL_FRACTION) -> tf.Tensor:
  """A Gaussian of sigma [B] pixels per image over a kernel of `kernel_fraction` of the side
  (odd); separable, reflect padding, vectorised over the batch. x: [B, H, W, C]."""
  radius = max(1, int(x.shape[1] * kernel_fraction) // 2)
  offsets = tf.range(-radius, radius + 1, dtype=tf.float32)[None, :]
  kernel = tf.exp(-0.5 * tf.square(offsets / sigma[:, None]))
  kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)  # [B, 2r+1]

  def blur_axis(y, axis):
    paddings = [[0, 0]] * 4
    paddings[axis] = [radius, radius]
    padded = tf.pad(y, paddings, mode="REFLECT")
    length = tf.shape(y)[axis]
    taps = [tf.gather(padded, tf.range(i, i + length), axis=axis) for i in range(2 * radius + 1)]
    return tf.einsum("kbhwc,bk->bhwc", tf.stack(taps), kernel)

  return blur_axis(blur_axis(x, 1), 2)


def gaussian_blur(x, seed, prob: float, sigma_range=(0.1, 2.0),
                  kernel_fraction=BLUR_KERNEL_FRACTION, rows: Optional[Rows] = None):
  """SimCLR's blur: with `prob` per image, a Gaussian of sigma ~ U(sigma_range) pixels.
  x: [B, H, W, C] in [0, 1]."""
  sigma, applies = draw_blur(seed, prob, tf.shape(x)[0], sigma_range, rows)
  return tf.where(_per_pixel(applies), blur(x, sigma, kernel_fraction), x)


def draw_view(seed, views: ml_collections.ConfigDict, batch, channels: int,
              rows: Optional[Rows] = None) -> ViewDraws:
  """The draws of one view of each of `batch` images (adcl.data.draws, with a batch axis)."""
  s = tf.random.experimental.stateless_split(seed, 5)
  factors, order, jitters = draw_jitter(s[2], tuple(views.jitter), views.jitter_prob, batch,
                                        channels, rows)
  sigma, blurs = draw_blur(s[4], views.blur_prob, batch, rows=rows)
  return ViewDraws(
      box=random_resized_crop_boxes(s[0], batch, tuple(views.crop_scale), rows=rows),
      flip=tf.logical_and(bool(views.flip), _per_image(s[1], rows, batch, [], 0.0, 1.0) < 0.5),
      jitter_factors=factors, jitter_order=order, jitter=jitters,
      gray=tf.logical_and(channels == 3,
                          _per_image(s[3], rows, batch, [], 0.0, 1.0) < views.gray_prob),
      blur_sigma=sigma, blur=blurs)


def _sample_axis(x, positions, axis: int) -> tf.Tensor:
  """x [B, H, W, C] read at per-image fractional `positions` [B, S] (pixel units, clamped into the
  image) along `axis` (1 or 2), each from its two neighbouring pixels: adcl.data.resize.sample_axis."""
  extent = tf.cast(tf.shape(x)[axis], tf.float32)
  positions = tf.clip_by_value(positions, 0.0, extent - 1.0)
  low = tf.floor(positions)
  weight = (positions - low)[:, :, None, None] if axis == 1 else (positions - low)[:, None, :, None]
  low = tf.cast(low, tf.int32)
  high = tf.minimum(low + 1, tf.cast(extent, tf.int32) - 1)
  below = tf.gather(x, low, axis=axis, batch_dims=1)
  above = tf.gather(x, high, axis=axis, batch_dims=1)
  return below + (above - below) * weight


def _crop_and_resize(x, boxes, size: int) -> tf.Tensor:
  """x [B, H, W, C] cropped to boxes [B, 4] (y0, x0, y1, x1 in [0, 1]) and resized to
  [B, size, size, C], bilinear: adcl.data.resize.resized_crop per image, with its positions
  and clamping (tf.image.crop_and_resize samples at the same places but fills a sample that
  float rounding puts past the last pixel centre with 0)."""
  steps = tf.range(size, dtype=tf.float32) / max(size - 1, 1)

  def positions(start, end, axis):
    extent = tf.cast(tf.shape(x)[axis], tf.float32)
    start, end = start[:, None], end[:, None]
    if size == 1:
      return 0.5 * (start + end) * (extent - 1.0)
    return (start + steps * (end - start)) * (extent - 1.0)

  rows = _sample_axis(x, positions(boxes[:, 0], boxes[:, 2], 1), 1)
  return _sample_axis(rows, positions(boxes[:, 1], boxes[:, 3], 2), 2)


def apply_view(images: tf.Tensor, draws: ViewDraws, views: ml_collections.ConfigDict,
               size: int) -> tf.Tensor:
  """Views in [0, 1] from their draws: images uint8 [B, H, W, C] -> float32 [B, size, size, C].
  Ops the recipe turns off are left out of the graph."""
  channels = images.shape[-1]
  x = tf.cast(images, tf.float32) / 255.0
  x = _crop_and_resize(x, draws.box, size)
  if views.flip:
    x = tf.where(_per_pixel(draws.flip), tf.reverse(x, axis=[2]), x)
  if active_jitter_ops(views.jitter, channels) and views.jitter_prob > 0:
    jittered = jitter(x, draws.jitter_factors, draws.jitter_order, tuple(views.jitter))
    x = tf.where(_per_pixel(draws.jitter), jittered, x)
  if channels == 3 and views.gray_prob > 0:
    x = tf.where(_per_pixel(draws.gray), tf.tile(_grayscale(x), [1, 1, 1, 3]), x)
  if views.blur_prob > 0:
    x = tf.where(_per_pixel(draws.blur), blur(x, draws.blur_sigma), x)
  return x


def one_view(images: tf.Tensor, seed, views: ml_collections.ConfigDict, size: int,
             rows: Optional[Rows] = None) -> tf.Tensor:
  """One augmented view in [0, 1]: images uint8 [B, H, W, C] -> float32 [B, size, size, C]."""
  draws = draw_view(seed, views, tf.shape(images)[0], images.shape[-1], rows)
  return apply_view(images, draws, views, size)


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
