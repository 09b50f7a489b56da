"""The random draws that make one augmented view, apart from the pixels they are applied to.

The host views (adcl/data/augment.py, tf.data) and the device views (adcl/data/views.py, jax)
draw these from different random generators, then apply them with the same arithmetic: given
equal draws the two give the same pixels to float rounding (tests/test_views.py feeds both the
same draws). The device views hold one image's draws; the host views add a leading batch axis
[B] to every field.
"""

from typing import Any, NamedTuple

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert('L') used by torchvision.
CROP_TRIES = 10  # torchvision tries 10 random boxes before falling back to the whole image.
BLUR_KERNEL_FRACTION = 0.1  # SimCLR's kernel: 10% of the image side.


class ViewDraws(NamedTuple):
  """One view's draws, per image (shapes without the host's batch axis)."""
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
