"""Two augmented views per image drawn in jax, inside the compiled step, on every backend.

SimCLR's recipe as torchvision writes it, per image and vmapped over the batch:
RandomResizedCrop(scale, ratio 3/4-4/3; torchvision's sampler: 10 tries, else the whole image)
-> horizontal flip (p 0.5) -> ColorJitter(brightness, contrast, saturation, hue) with
`jitter_prob`, its ops in a random order per image -> grayscale with `gray_prob` -> Gaussian
blur with `blur_prob` (sigma 0.1-2 px, kernel 10% of the side) -> normalise. One-channel images
skip saturation, hue and grayscale. Each view is its random draws (`draw_view`, a ViewDraws)
applied to the pixels (`apply_view`), so a test can force any combination of ops. What the
views need of a config is resolved once, into a ViewRecipe (`recipe`).

Randomness: image i of the global batch of step t draws from fold_in(fold_in(key, t), i), so
its views depend on (seed, t, i) only: not on how the batch is sharded over devices or split
over processes. The host's only work per image is a copy of its uint8 pixels.

Encoded records (JPEG/PNG) draw their crop boxes on the host instead
(adcl/data/decode_crop.py), with the same torchvision sampler in numpy: the box must be known
before the decode, which then decodes only as far as the box needs; `views_of_crops` does
the rest of the view here.
"""

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from adcl.data.decode_crop import CROP_TRIES
from adcl.data.normalize import normalization
from adcl.data.resize import resized_crop

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert('L') used by torchvision.
BLUR_KERNEL_FRACTION = 0.1  # SimCLR's kernel: 10% of the image side.


@dataclasses.dataclass(frozen=True)
class ViewRecipe:
  """The views of a run: config.data.views (configs.VIEW_RECIPES), the view size and the
  normalisation, as plain values (hashable: a jit may take it as a static argument)."""
  size: int  # Pixels a side of each view.
  crop_scale: tuple  # (min, max) area fraction of RandomResizedCrop.
  flip: bool
  jitter: tuple  # Strengths of brightness, contrast, saturation and hue.
  jitter_prob: float
  gray_prob: float
  blur_prob: float
  mean: tuple = (0.0,)  # [C] normalisation of the finished view.
  std: tuple = (1.0,)


def recipe(data_config: ml_collections.ConfigDict, channels: int) -> ViewRecipe:
  """config.data's views for images of `channels` channels."""
  mean, std = normalization(data_config, channels)
  views = data_config.views
  return ViewRecipe(int(data_config.image_size), tuple(map(float, views.crop_scale)),
                    bool(views.flip), tuple(map(float, views.jitter)), float(views.jitter_prob),
                    float(views.gray_prob), float(views.blur_prob), tuple(map(float, mean)),
                    tuple(map(float, std)))


class ViewDraws(NamedTuple):
  """One image's draws for one view."""
  box: Any  # float32 [4]: the crop (y0, x0, y1, x1) in [0, 1] units of the image.
  flip: Any  # bool []: mirror left-right.
  jitter_factors: Any  # float32 [4]: brightness, contrast, saturation factors; hue shift.
  jitter_order: Any  # int32 [A]: position p runs active op jitter_order[p] (A active ops).
  jitter: Any  # bool []: the colour jitter applies.
  gray: Any  # bool []: to grayscale (colour images).
  blur_sigma: Any  # float32 []: the Gaussian's sigma in pixels of the view.
  blur: Any  # bool []: the blur applies.


def active_jitter_ops(strengths, channels: int) -> list:
  """Indices (0 brightness, 1 contrast, 2 saturation, 3 hue) of the jitter ops that change an
  image with `channels` channels at these strengths: saturation and hue do nothing to grey."""
  return [i for i, v in enumerate(strengths) if v > 0 and (channels == 3 or i < 2)]


def jitter_ranges(strengths) -> list:
  """[(low, high)] * 4 of each jitter factor, as torchvision: [max(0, 1 - s), 1 + s] for
  brightness, contrast and saturation, [-h, h] for the hue shift."""
  return [(max(0.0, 1 - v), 1 + v) for v in strengths[:3]] + [(-strengths[3], strengths[3])]


def crop_box(key: jax.Array, scale, ratio=(3 / 4, 4 / 3)) -> jax.Array:
  """[4] box (y0, x0, y1, x1) in [0, 1] units, sampled as torchvision's RandomResizedCrop for
  a square image: area ~ U(scale), log aspect ~ U(log ratio), the first of 10 tries that fits,
  else the whole image."""
  k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
  area = jax.random.uniform(k_area, (CROP_TRIES,), minval=scale[0], maxval=scale[1])
  aspect = jnp.exp(jax.random.uniform(k_ratio, (CROP_TRIES,), minval=math.log(ratio[0]),
                                      maxval=math.log(ratio[1])))
  width, height = jnp.sqrt(area * aspect), jnp.sqrt(area / aspect)
  fits = (width <= 1.0) & (height <= 1.0)
  first = jnp.argmax(fits)
  width = jnp.where(fits.any(), width[first], 1.0)
  height = jnp.where(fits.any(), height[first], 1.0)
  y0 = jax.random.uniform(k_y) * (1.0 - height)
  x0 = jax.random.uniform(k_x) * (1.0 - width)
  return jnp.stack([y0, x0, y0 + height, x0 + width])


def grayscale(x: jax.Array) -> jax.Array:
  """[H, W, 3] -> [H, W, 1] luminance."""
  return jnp.sum(x * jnp.asarray(LUMA, x.dtype), axis=-1, keepdims=True)


def _blend(x, other, factor):
  """torchvision's _blend: factor * x + (1 - factor) * other, clipped to [0, 1]."""
  return jnp.clip(factor * x + (1.0 - factor) * other, 0.0, 1.0)


def _jitter_ops(channels: int):
  """ColorJitter's ops, each (x [H, W, C] in [0, 1], factor scalar) -> x."""
  gray = (lambda x: x) if channels == 1 else grayscale

  def brightness(x, f):
    return _blend(x, jnp.zeros_like(x), f)

  def contrast(x, f):
    return _blend(x, jnp.mean(gray(x)), f)

  def saturation(x, f):
    return _blend(x, gray(x), f)

  def hue(x, shift):
    import dm_pix  # Only colour images with a hue jitter need it.
    hsv = dm_pix.rgb_to_hsv(x)
    hsv = hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + shift, 1.0))
    return jnp.clip(dm_pix.hsv_to_rgb(hsv), 0.0, 1.0)

  return [brightness, contrast, saturation, hue]


def draw_jitter(key: jax.Array, strengths, prob: float, channels: int):
  """ColorJitter(*strengths)'s draws with probability `prob`: (factors [4] in
  jitter_ranges, order [A] of the A active ops, uniformly random as torchvision draws one per
  image, applies bool [])."""
  keys = jax.random.split(key, 6)
  factors = jnp.stack([jax.random.uniform(keys[i], minval=low, maxval=high)
                       for i, (low, high) in enumerate(jitter_ranges(strengths))])
  active = len(active_jitter_ops(strengths, channels))
  order = jax.random.permutation(keys[4], active) if active else jnp.zeros((0,), jnp.int32)
  return factors, order, jax.random.uniform(keys[5]) < prob


def jitter(x: jax.Array, factors: jax.Array, order: jax.Array, strengths) -> jax.Array:
  """The active jitter ops on x [H, W, C] in [0, 1], in `order`, with `factors` [4]."""
  ops = _jitter_ops(x.shape[-1])
  branches = [lambda y, op=op: ops[op](y, factors[op])
              for op in active_jitter_ops(strengths, x.shape[-1])]
  for position in range(len(branches)):
    x = jax.lax.switch(order[position], branches, x)
  return x


def draw_blur(key: jax.Array, prob: float, sigma_range=(0.1, 2.0)):
  """SimCLR's blur draws: (sigma [] ~ U(sigma_range) pixels, applies bool [] with `prob`)."""
  k_sigma, k_apply = jax.random.split(key)
  sigma = jax.random.uniform(k_sigma, minval=sigma_range[0], maxval=sigma_range[1])
  return sigma, jax.random.uniform(k_apply) < prob


def blur(x: jax.Array, sigma: jax.Array, kernel_fraction: float = BLUR_KERNEL_FRACTION):
  """A Gaussian of `sigma` pixels over a kernel of `kernel_fraction` of the side (odd),
  separable, reflect padding. x [H, W, C]."""
  radius = max(1, int(x.shape[0] * kernel_fraction) // 2)
  taps = jnp.exp(-0.5 * jnp.square(jnp.arange(-radius, radius + 1) / sigma))
  taps = taps / jnp.sum(taps)

  def blur_axis(y, axis):
    pad = [(0, 0)] * y.ndim
    pad[axis] = (radius, radius)
    padded = jnp.pad(y, pad, mode="reflect")
    length = y.shape[axis]
    return sum(taps[i] * jax.lax.slice_in_dim(padded, i, i + length, axis=axis)
               for i in range(2 * radius + 1))

  return blur_axis(blur_axis(x, 0), 1)


def draw_view(key: jax.Array, views: ViewRecipe, channels: int) -> ViewDraws:
  """The draws of one view of an image with `channels` channels."""
  k_crop, k_flip, k_jitter, k_gray, k_blur = jax.random.split(key, 5)
  factors, order, jitters = draw_jitter(k_jitter, tuple(views.jitter), views.jitter_prob,
                                        channels)
  sigma, blurs = draw_blur(k_blur, views.blur_prob)
  return ViewDraws(
      box=crop_box(k_crop, tuple(views.crop_scale)),
      flip=jnp.logical_and(bool(views.flip), jax.random.uniform(k_flip) < 0.5),
      jitter_factors=factors, jitter_order=order, jitter=jitters,
      gray=jnp.logical_and(channels == 3, jax.random.uniform(k_gray) < views.gray_prob),
      blur_sigma=sigma, blur=blurs)


def apply_view(image: jax.Array, draws: ViewDraws, views: ViewRecipe) -> jax.Array:
  """One view in [0, 1] from its draws: image uint8 [H, W, C] -> float32 [S, S, C]
  (S = views.size). Ops the recipe turns off are left out of the program."""
  channels = image.shape[-1]
  x = resized_crop(image.astype(jnp.float32) / 255.0, draws.box, views.size)
  if views.flip:
    x = jnp.where(draws.flip, x[:, ::-1], x)
  if active_jitter_ops(views.jitter, channels) and views.jitter_prob > 0:
    x = jnp.where(draws.jitter,
                  jitter(x, draws.jitter_factors, draws.jitter_order, tuple(views.jitter)), x)
  if channels == 3 and views.gray_prob > 0:
    x = jnp.where(draws.gray, jnp.broadcast_to(grayscale(x), x.shape), x)
  if views.blur_prob > 0:
    x = jnp.where(draws.blur, blur(x, draws.blur_sigma), x)
  return x


def one_view(image: jax.Array, key: jax.Array, views: ViewRecipe) -> jax.Array:
  """One augmented view in [0, 1]: image uint8 [H, W, C] -> float32 [S, S, C]."""
  return apply_view(image, draw_view(key, views, image.shape[-1]), views)


def two_views(images: jax.Array, key: jax.Array, views: ViewRecipe):
  """Two independent normalised views of each image of a global batch.

  images: uint8 [N, H, W, C], row i the global batch's image i; key: the step's view key.
  Returns (view1, view2), each float32 [N, S, S, C].
  """
  mean, std = jnp.asarray(views.mean, jnp.float32), jnp.asarray(views.std, jnp.float32)

  def pair(image, index):
    k1, k2 = jax.random.split(jax.random.fold_in(key, index))
    return tuple((one_view(image, k, views) - mean) / std for k in (k1, k2))

  return jax.vmap(pair)(images, jnp.arange(images.shape[0]))


def region_box(region_size: jax.Array, canvas: int) -> jax.Array:
  """float32 [4]: the box (y0, x0, y1, x1 in [0, 1]) that resized_crop reads as exactly the
  region of (height, width) `region_size` [2] at the top-left of a [canvas, canvas] image."""
  far = (region_size.astype(jnp.float32) - 1.0) / max(canvas - 1, 1)
  return jnp.stack([0.0, 0.0, far[0], far[1]])


def views_of_crops(crops: jax.Array, crop_sizes: jax.Array, key: jax.Array, views: ViewRecipe):
  """The two views of each image whose crops were cut on the host (adcl/data/decode_crop.py):
  each crop's region resized to the training size, then flip, jitter, grayscale, blur and
  normalisation, with the keys `two_views` gives the same row.

  crops: uint8 [N, 2, R, R, C], row i the global batch's image i, each of its two crops a
    region at the top-left of an R x R canvas; crop_sizes: int [N, 2, 2], each region's
    (height, width).
  Returns (view1, view2), each float32 [N, S, S, C].
  """
  mean, std = jnp.asarray(views.mean, jnp.float32), jnp.asarray(views.std, jnp.float32)
  channels, canvas = crops.shape[-1], crops.shape[2]

  def pair(image_crops, region_sizes, index):
    keys = jax.random.split(jax.random.fold_in(key, index))
    finished = []
    for v in range(2):
      draws = draw_view(keys[v], views, channels)._replace(
          box=region_box(region_sizes[v], canvas))
      finished.append((apply_view(image_crops[v], draws, views) - mean) / std)
    return tuple(finished)

  return jax.vmap(pair)(crops, crop_sizes, jnp.arange(crops.shape[0]))
