"""The views (adcl/data/views.py): torchvision's statistics, each op's pixels from forced draws
against TensorFlow's image ops, and views that depend on (seed, step, row) only, not on
devices or processes."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from adcl import configs, step as step_lib
from adcl.data import resize, views

# A global batch of 8 colour images and the SimCLR recipe (every op, hue included): the views
# every device and process count must agree on (also drawn by tests/multiprocess_worker.py).
VIEW_IMAGES = np.random.default_rng(0).integers(0, 256, (8, 12, 12, 3), dtype=np.uint8)
VIEW_RECIPE = views.ViewRecipe(8, **dict(configs.VIEW_RECIPES["simclr"], blur_prob=0.5),
                               mean=(0.5,) * 3, std=(0.5,) * 3)


def draw_views(images, sharding=None):
  """Both views of `images` for (seed 0, step 5) as [2, N, 8, 8, 3], jitted on `sharding`."""
  key = jax.random.fold_in(jax.random.PRNGKey(0), 5)
  fn = lambda x: jnp.stack(views.two_views(x, key, VIEW_RECIPE))
  out = None if sharding is None else NamedSharding(sharding.mesh, P(None, "data"))
  return jax.jit(fn, in_shardings=sharding, out_shardings=out)(images)


def per_image(fn, count, seed=0):
  """fn(key) for `count` independent keys, vmapped."""
  return jax.vmap(fn)(jax.random.split(jax.random.PRNGKey(seed), count))


def test_crop_area_and_aspect_follow_torchvisions_sampler():
  boxes = np.asarray(per_image(lambda k: views.crop_box(k, (0.2, 1.0)), 20000))
  height, width = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  area, aspect = height * width, width / height
  assert area.min() >= 0.2 - 1e-4 and area.max() <= 1.0 + 1e-6
  assert boxes.min() >= 0 and boxes.max() <= 1 + 1e-6
  # Imported here: tests/multiprocess_worker.py imports this module, and conftest with it would
  # set the test session's environment in the worker.
  from conftest import torchvision_crops
  expected_area, expected_aspect = torchvision_crops(20000, (0.2, 1.0))
  assert abs(area.mean() - expected_area.mean()) < 0.01
  assert abs(np.median(area) - np.median(expected_area)) < 0.015
  assert abs(np.log(aspect).mean() - np.log(expected_aspect).mean()) < 0.01
  assert aspect.min() >= 3 / 4 - 1e-4 and aspect.max() <= 4 / 3 + 1e-4


def test_crop_and_resize_sample_where_tensorflow_does():
  """The host views crop with tf.image.crop_and_resize and evaluation resizes with
  tf.image.resize: the same sampling positions, written out as bilinear weights."""
  image = np.random.default_rng(1).uniform(size=(6, 6, 1)).astype(np.float32)
  whole = resize.resized_crop(image, jnp.array([0.0, 0.0, 1.0, 1.0]), 6)
  np.testing.assert_allclose(whole, image, atol=1e-6)  # The whole box at full size: identity.
  half = np.asarray(resize.resized_crop(image, jnp.array([0.0, 0.0, 0.6, 0.6]), 4))
  np.testing.assert_allclose(half[0, 0], image[0, 0], atol=1e-6)
  # Output 1 of 4 over [0, 0.6]: position 0.2 * 5 = 1 pixel: image row/column 1 exactly.
  np.testing.assert_allclose(half[1, 1], image[1, 1], atol=1e-6)
  # tf.image.resize, half-pixel centres: 6 -> 3 samples at 0.5, 2.5, 4.5.
  small = resize.resize(image[None], 3)[0]
  np.testing.assert_allclose(small[0, 0], image[0:2, 0:2].mean(axis=(0, 1)), atol=1e-6)


def jittered_maybe(x, key, strengths, prob):
  """ColorJitter(*strengths) with probability `prob`, as apply_view does it: x [H, W, C]."""
  factors, order, applies = views.draw_jitter(key, strengths, prob, x.shape[-1])
  return jnp.where(applies, views.jitter(x, factors, order, strengths), x)


def blurred_maybe(x, key, prob):
  """SimCLR's blur with probability `prob`, as apply_view does it: x [H, W, C]."""
  sigma, applies = views.draw_blur(key, prob)
  return jnp.where(applies, views.blur(x, sigma), x)


def test_jitter_probability_and_factor_range():
  x = jnp.full((2, 2, 3), 0.5)
  out = np.asarray(per_image(lambda k: jittered_maybe(x, k, (0.4, 0.0, 0.0, 0.0), 0.8), 4000))
  changed = np.abs(out - 0.5).max(axis=(1, 2, 3)) > 1e-6
  assert 0.77 < changed.mean() < 0.83
  factors = out[changed, 0, 0, 0] / 0.5
  assert factors.min() >= 0.6 - 1e-5 and factors.max() <= 1.4 + 1e-5
  assert factors.min() < 0.65 and factors.max() > 1.35  # The whole range is drawn.
  # Hue: a shift in [-h, h] of the colour circle, and nothing else.
  red = jnp.zeros((1, 1, 3)).at[..., 0].set(0.8)
  hues = np.asarray(per_image(lambda k: jittered_maybe(red, k, (0.0, 0.0, 0.0, 0.2), 1.0), 500))
  assert hues.max() <= 0.8 + 1e-5 and np.abs(hues - np.asarray(red)).max() > 0.1


def test_jitter_ops_run_in_a_random_order_per_image():
  # Per image, one of the 4! orders of the active ops, uniformly.
  all_four = (0.5, 0.5, 0.5, 0.1)
  orders = np.asarray(per_image(lambda k: views.draw_jitter(k, all_four, 1.0, 3)[1], 24000))
  counts = {tuple(o): 0 for o in itertools.permutations(range(4))}
  for order in map(tuple, orders):
    counts[order] += 1
  assert len(counts) == 24 and min(counts.values()) > 850 and max(counts.values()) < 1150
  # The order matters to the output: brightness then contrast is not contrast then brightness
  # once brightness clips; identical images end up with several distinct results.
  x = jnp.linspace(0.2, 1.0, 16).reshape(4, 4, 1)
  out = np.asarray(per_image(lambda k: jittered_maybe(x, k, (0.5, 0.5, 0, 0), 1.0), 50))
  assert len({o.tobytes() for o in out}) == 50


def test_flip_and_grayscale_probabilities():
  # A left-right gradient in red only: flips reverse it, grayscale equalises the channels.
  ramp = np.linspace(0, 255, 12, dtype=np.float32)
  image = np.zeros((12, 12, 3), np.float32)
  image[..., 0] = ramp[None, :]
  recipe = views.ViewRecipe(12, **dict(configs.VIEW_RECIPES["simclr"], crop_scale=(1.0, 1.0),
                                       jitter_prob=0.0))
  view = np.asarray(per_image(lambda k: views.one_view(jnp.asarray(image, jnp.uint8), k, recipe),
                              4000))
  flipped = view[:, 0, 0, 0] > view[:, 0, -1, 0] + 1e-3
  flipped |= view[:, 0, 0, 1] > view[:, 0, -1, 1] + 1e-3  # Grey images flip in every channel.
  gray = np.abs(view[..., 0] - view[..., 1]).max(axis=(1, 2)) < 1e-5
  assert 0.47 < flipped.mean() < 0.53
  assert 0.18 < gray.mean() < 0.22


def test_blur_probability_and_that_it_smooths():
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(16, 16, 1)), jnp.float32)
  out = np.asarray(per_image(lambda k: blurred_maybe(x, k, 0.5), 2000))
  blurred = np.abs(out - np.asarray(x)).max(axis=(1, 2, 3)) > 1e-6
  assert 0.46 < blurred.mean() < 0.54
  # Blur lowers the pixel variance and keeps the mean (a normalised kernel).
  assert out[blurred].var(axis=(1, 2, 3)).max() < np.asarray(x).var()
  np.testing.assert_allclose(out[blurred].mean(), np.asarray(x).mean(), atol=5e-3)


def test_views_shapes_range_and_seeds():
  v1, v2 = (np.asarray(v) for v in draw_views(VIEW_IMAGES))
  assert v1.shape == v2.shape == (8, 8, 8, 3) and v1.dtype == np.float32
  assert v1.min() >= -1 - 1e-5 and v1.max() <= 1 + 1e-5  # Normalised [0, 1].
  assert not np.allclose(v1, v2)
  # Row i's views depend on the row's index and the key only: the same image placed at
  # another row gets other views, and the first rows of a smaller batch keep theirs.
  first_four = np.asarray(draw_views(VIEW_IMAGES[:4]))
  np.testing.assert_array_equal(first_four[0], v1[:4])


# Same draws on any sharding; the pixel values may differ by float rounding only, because XLA
# vectorises exp/sqrt differently for 1 and 8 rows per device (the crop box moves by an ulp).
ROUNDING = 1e-5  # Normalised units: 1/400 of a grey level at std 0.5.


@pytest.mark.parametrize("num_devices", [4, 8])
def test_views_are_the_same_on_1_4_and_8_devices(num_devices):
  one = np.asarray(draw_views(VIEW_IMAGES))
  mesh = step_lib.data_mesh(jax.devices()[:num_devices])
  sharding = NamedSharding(mesh, P("data"))
  many = np.asarray(draw_views(jax.device_put(VIEW_IMAGES, sharding), sharding))
  np.testing.assert_allclose(one, many, rtol=0, atol=ROUNDING)


def forced_draws(rng, batch: int, channels: int, active: int) -> views.ViewDraws:
  """ViewDraws for `batch` images with every op on for some images and off for others: varied
  boxes (inside and to the edge), both flips, factors across their ranges, a random order per
  image, sigmas across 0.1-2 px. Fields carry the batch axis [B]."""
  y0, x0 = rng.uniform(0, 0.5, batch), rng.uniform(0, 0.5, batch)
  box = np.stack([y0, x0, np.minimum(y0 + rng.uniform(0.2, 1.0, batch), 1.0),
                  np.minimum(x0 + rng.uniform(0.2, 1.0, batch), 1.0)], axis=1)
  box[0] = (0.0, 0.0, 1.0, 1.0)  # The whole image, corners on the edge pixels.
  factors = np.stack([rng.uniform(0.2, 1.8, batch)] * 3 + [rng.uniform(-0.4, 0.4, batch)], 1)
  on = lambda: np.arange(batch) % 2 == rng.integers(0, 2)
  return views.ViewDraws(
      box=box.astype(np.float32), flip=on(), jitter_factors=factors.astype(np.float32),
      jitter_order=np.stack([rng.permutation(active) for _ in range(batch)]).astype(np.int32),
      jitter=np.arange(batch) % 4 != 3, gray=on() & (channels == 3),
      blur_sigma=rng.uniform(0.1, 2.0, batch).astype(np.float32), blur=on())


def reference_view(image, draws, recipe, size: int):
  """One view from its draws, op by op with TensorFlow's image ops where they define the op
  (crop_and_resize, flip, adjust_hue) and numpy for torchvision's blends, PIL's grey
  (ITU-R 601-2 weights) and SimCLR's separable Gaussian (reflect padding): apply_view's
  oracle."""
  import tensorflow as tf  # A test dependency: TFDS needs it.
  # A box edge at 1.0 can land a float32 rounding past the last pixel, where crop_and_resize
  # reads its extrapolation value (0): 2e-7 inside, a shift of under 1e-5 pixels.
  box = np.minimum(draws.box, np.float32(1 - 2e-7))[None]
  x = tf.image.crop_and_resize(tf.constant(image[None], tf.float32) / 255.0, box, [0],
                               [size, size])[0].numpy()
  if draws.flip:
    x = tf.image.flip_left_right(x).numpy()
  gray = lambda y: y @ np.float32([[0.299], [0.587], [0.114]]) if y.shape[-1] == 3 else y
  blend = lambda y, other, f: np.clip(f * y + (1 - f) * other, 0, 1)
  ops = [lambda y, f: blend(y, 0, f), lambda y, f: blend(y, gray(y).mean(), f),
         lambda y, f: blend(y, gray(y), f),
         lambda y, f: np.clip(tf.image.adjust_hue(y, f).numpy(), 0, 1)]
  active = views.active_jitter_ops(recipe.jitter, x.shape[-1])
  if draws.jitter:
    for position in draws.jitter_order:
      op = active[position]
      x = ops[op](x, draws.jitter_factors[op])
  if draws.gray:
    x = np.repeat(gray(x), 3, axis=-1)
  if draws.blur:
    radius = max(1, int(size * views.BLUR_KERNEL_FRACTION) // 2)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / draws.blur_sigma) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
      pad = [(radius, radius) if a == axis else (0, 0) for a in range(3)]
      padded = np.pad(x, pad, mode="reflect")
      x = sum(t * np.take(padded, range(i, i + size), axis=axis) for i, t in enumerate(taps))
  return x


@pytest.mark.parametrize("channels,size", [(3, 20), (3, 40), (1, 20), (1, 40)])
def test_forced_draws_give_the_pixels_of_tensorflows_image_ops(channels, size):
  """Views from forced draws (every op on for some images, off for others) against the
  reference: crop positions, flip, jitter ops in each image's order with their clipping,
  grayscale and the blur's kernel (3 taps at 20 px, 5 at 40) agree to float rounding."""
  rng = np.random.default_rng(channels * 100 + size)
  images = rng.integers(0, 256, (12, 28, 28, channels), dtype=np.uint8)
  images[1] = 255 * (images[1] > 127)  # Saturated pixels: every clip is exercised.
  recipe = views.ViewRecipe(size, **dict(configs.VIEW_RECIPES["simclr_blur"],
                                         jitter=(0.8, 0.8, 0.8, 0.4)))
  draws = forced_draws(rng, len(images), channels, 4 if channels == 3 else 2)
  device = np.asarray(jax.jit(jax.vmap(lambda x, d: views.apply_view(x, d, recipe)))(
      images, draws))
  reference = np.stack([reference_view(image, views.ViewDraws(*(f[i] for f in draws)), recipe,
                                       size) for i, image in enumerate(images)])
  assert device.shape == reference.shape == (12, size, size, channels)
  # dm_pix's and TensorFlow's HSV round-trips round differently: up to 3e-5 after a hue shift.
  np.testing.assert_allclose(device, reference, rtol=0, atol=5e-5)


def test_views_of_host_crops_finish_the_views_as_two_views_does():
  """With the crop box forced to the whole image (crop_scale (1, 1): no aspect fits, so
  torchvision's sampler falls back to the full image) two_views' crop is the identity. Host
  crops of the training size at the top-left of their 2x canvas are resized by the identity
  too, so the device's half of a host-cropped view (resize, flip, jitter, grayscale, blur,
  normalisation, with the same keys) must give two_views' pixels."""
  recipe = dataclasses.replace(VIEW_RECIPE, crop_scale=(1.0, 1.0), mean=(0.4, 0.5, 0.6),
                               std=(0.2, 0.25, 0.3))
  size = recipe.size
  images = np.random.default_rng(5).integers(0, 256, (6, size, size, 3), dtype=np.uint8)
  key = jax.random.PRNGKey(11)
  whole = views.two_views(jnp.asarray(images), key, recipe)
  crops = np.full((6, 2, 2 * size, 2 * size, 3), 255, np.uint8)  # Never read.
  crops[:, :, :size, :size] = images[:, None]
  crop_sizes = np.full((6, 2, 2), size, np.int32)
  finished = views.views_of_crops(jnp.asarray(crops), jnp.asarray(crop_sizes), key, recipe)
  for a, b in zip(whole, finished):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  assert not np.allclose(np.asarray(finished[0]), np.asarray(finished[1]))  # Views differ.
