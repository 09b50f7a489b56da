"""Two augmented views per image drawn in jax, inside the compiled step (data.views_on 'device').

The same recipe and parameters as the host views of adcl/data/augment.py (tf.data), written per
image and vmapped over the batch: RandomResizedCrop(scale, ratio 3/4-4/3; torchvision's sampler:
10 tries, else the whole image) -> horizontal flip (p 0.5) -> ColorJitter(brightness, contrast,
saturation, hue) with `jitter_prob`, its ops in a random order per image -> grayscale with
`gray_prob` -> Gaussian blur with `blur_prob` (sigma 0.1-2 px, kernel 10% of the side) ->
normalise. One-channel images skip saturation, hue and grayscale.

Randomness: image i of the global batch of step t draws from fold_in(fold_in(key, t), i), so
its views depend on (seed, t, i) only: not on how the batch is sharded over devices or split
over processes. The host's only work per image is a copy of its uint8 pixels.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections

from adcl.data.resize import resized_crop

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as torchvision (PIL's convert('L')).
_CROP_TRIES = 10


def crop_box(key: jax.Array, scale, ratio=(3 / 4, 4 / 3)) -> jax.Array:
  """[4] box (y0, x0, y1, x1) in [0, 1] units, sampled as torchvision's RandomResizedCrop for
  a square image: area ~ U(scale), log aspect ~ U(log ratio), the first of 10 tries that fits,
  else the whole image."""
  k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
  area = jax.random.uniform(k_area, (_CROP_TRIES,), minval=scale[0], maxval=scale[1])
  aspect = jnp.exp(jax.random.uniform(k_ratio, (_CROP_TRIES,), minval=math.log(ratio[0]),
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
  return jnp.sum(x * jnp.asarray(_LUMA, x.dtype), axis=-1, keepdims=True)


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


def jitter_order(key: jax.Array, count: int) -> jax.Array:
  """[count] a uniformly random order of the active jitter ops (torchvision draws one per
  image)."""
  return jax.random.permutation(key, count)


def color_jitter(x: jax.Array, key: jax.Array, strengths, prob: float) -> jax.Array:
  """ColorJitter(*strengths) with probability `prob`; x [H, W, C] in [0, 1]. Factor ranges as
  torchvision: [max(0, 1 - s), 1 + s] for brightness, contrast and saturation, [-h, h] for hue;
  the active ops run in a random order (a permutation drawn per image)."""
  channels = x.shape[-1]
  keys = jax.random.split(key, 6)
  ranges = [(max(0.0, 1 - v), 1 + v) for v in strengths[:3]] + [(-strengths[3], strengths[3])]
  factors = [jax.random.uniform(keys[i], minval=lo, maxval=hi)
             for i, (lo, hi) in enumerate(ranges)]
  ops = _jitter_ops(channels)
  active = [i for i, v in enumerate(strengths) if v > 0 and (channels == 3 or i < 2)]
  if not active:
    return x
  order = jitter_order(keys[4], len(active))
  branches = [lambda y, op=op: ops[op](y, factors[op]) for op in active]
  out = x
  for position in range(len(active)):
    out = jax.lax.switch(order[position], branches, out)
  return jnp.where(jax.random.uniform(keys[5]) < prob, out, x)


def gaussian_blur(x: jax.Array, key: jax.Array, prob: float, sigma_range=(0.1, 2.0),
                  kernel_fraction: float = 0.1) -> jax.Array:
  """SimCLR's blur with probability `prob`: a Gaussian of sigma ~ U(sigma_range) pixels over a
  kernel of `kernel_fraction` of the side (odd), separable, reflect padding. x [H, W, C]."""
  k_sigma, k_apply = jax.random.split(key)
  radius = max(1, int(x.shape[0] * kernel_fraction) // 2)
  sigma = jax.random.uniform(k_sigma, minval=sigma_range[0], maxval=sigma_range[1])
  taps = jnp.exp(-0.5 * jnp.square(jnp.arange(-radius, radius + 1) / sigma))
  taps = taps / jnp.sum(taps)

  def blur_axis(y, axis):
    pad = [(0, 0)] * y.ndim
    pad[axis] = (radius, radius)
    padded = jnp.pad(y, pad, mode="reflect")
    length = y.shape[axis]
    return sum(taps[i] * jax.lax.slice_in_dim(padded, i, i + length, axis=axis)
               for i in range(2 * radius + 1))

  blurred = blur_axis(blur_axis(x, 0), 1)
  return jnp.where(jax.random.uniform(k_apply) < prob, blurred, x)


def one_view(image: jax.Array, key: jax.Array, views: ml_collections.ConfigDict,
             size: int) -> jax.Array:
  """One augmented view in [0, 1]: image uint8 [H, W, C] -> float32 [size, size, C]."""
  channels = image.shape[-1]
  k_crop, k_flip, k_jitter, k_gray, k_blur = jax.random.split(key, 5)
  x = image.astype(jnp.float32) / 255.0
  x = resized_crop(x, crop_box(k_crop, tuple(views.crop_scale)), size)
  if views.flip:
    x = jnp.where(jax.random.uniform(k_flip) < 0.5, x[:, ::-1], x)
  if max(views.jitter) > 0 and views.jitter_prob > 0:
    x = color_jitter(x, k_jitter, tuple(views.jitter), views.jitter_prob)
  if channels == 3 and views.gray_prob > 0:
    x = jnp.where(jax.random.uniform(k_gray) < views.gray_prob,
                  jnp.broadcast_to(grayscale(x), x.shape), x)
  if views.blur_prob > 0:
    x = gaussian_blur(x, k_blur, views.blur_prob)
  return x


def two_views(images: jax.Array, key: jax.Array, data_config: ml_collections.ConfigDict,
              mean, std):
  """Two independent normalised views of each image of a global batch.

  images: uint8 [N, H, W, C], row i the global batch's image i; key: the step's view key.
  mean, std: [C] normalisation (adcl.data.normalize.normalization).
  Returns (view1, view2), each float32 [N, S, S, C].
  """
  size, views = data_config.image_size, data_config.views
  mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

  def pair(image, index):
    k1, k2 = jax.random.split(jax.random.fold_in(key, index))
    return tuple((one_view(image, k, views, size) - mean) / std for k in (k1, k2))

  return jax.vmap(pair)(images, jnp.arange(images.shape[0]))
