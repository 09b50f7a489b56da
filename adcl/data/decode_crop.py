"""The host's share of the views for encoded (JPEG/PNG) images: draw each view's crop box, decode
the image once and only as far as the boxes need, and cut the crops at the training size.

The box sampler is torchvision's RandomResizedCrop (the official CLAE code's): up to 10 tries of
an area fraction ~ U(scale) and a log-uniform aspect in [3/4, 4/3] that fits the image, else a
centre crop of the whole image at the nearest allowed aspect. Each image's boxes come from its
own generator seeded by (seed, step, global row), so a batch's crops do not depend on how many
processes or workers made them.

Decoding only what the crops need: a JPEG can be decoded at 1/2, 1/4 or 1/8 of its size for a
fraction of the cost (Pillow's `draft`, libjpeg's DCT scaling). The largest such reduction that
keeps the smaller crop at least `size` pixels on its shorter side is used; both crops are then
cut from the one decoded image and resized with Pillow's bilinear filter (antialiased when it
shrinks, as torchvision's resize of a PIL image). Other formats decode whole.

The rest of the view (flip, colour jitter, grayscale, blur, normalisation) is the device's
(adcl/data/views.py), on the uint8 crops this returns.
"""

import io
from typing import Sequence

import numpy as np

from adcl.data.draws import CROP_TRIES

ASPECT = (3 / 4, 4 / 3)
DRAFT_REDUCTIONS = (8, 4, 2)  # The scales libjpeg decodes at directly.
CENTER_FRACTION = 224 / 256  # The evaluation crop's share of the shorter side (ImageNet's).


def crop_box(rng: np.random.Generator, height: int, width: int, scale: Sequence[float],
             aspect: Sequence[float] = ASPECT) -> tuple[int, int, int, int]:
  """(top, left, height, width) in pixels of one RandomResizedCrop box."""
  area = height * width
  log_aspect = np.log(aspect)
  for _ in range(CROP_TRIES):
    target = area * rng.uniform(scale[0], scale[1])
    ratio = np.exp(rng.uniform(log_aspect[0], log_aspect[1]))
    w, h = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  image_ratio = width / height
  if image_ratio < aspect[0]:
    w, h = width, int(round(width / aspect[0]))
  elif image_ratio > aspect[1]:
    w, h = int(round(height * aspect[1])), height
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def view_generator(seed: int, step: int, row: int) -> np.random.Generator:
  """The generator of the crop boxes of global row `row` of step `step`'s batch."""
  return np.random.default_rng([seed, step, row])


def draft_reduction(boxes: Sequence[tuple], size: int) -> int:
  """The largest JPEG decode reduction (8, 4, 2, else 1) that keeps every box's shorter side at
  least `size` pixels."""
  shortest = min(min(h, w) for _, _, h, w in boxes)
  return next((r for r in DRAFT_REDUCTIONS if shortest / r >= size), 1)


def decode_crops(data: bytes, rng: np.random.Generator, views: int, size: int,
                 scale: Sequence[float], channels: int = 3, draft: bool = True) -> np.ndarray:
  """uint8 [views, size, size, channels]: `views` RandomResizedCrops of the encoded image `data`,
  from one decode (at a reduced scale when `draft` and the boxes allow). Raises PIL's errors for
  data that does not decode."""
  boxes = lambda height, width: [crop_box(rng, height, width, scale) for _ in range(views)]
  return _decode_and_cut(data, boxes, size, channels, draft)


def decode_center(data: bytes, size: int, channels: int = 3,
                  fraction: float = CENTER_FRACTION, draft: bool = True) -> np.ndarray:
  """uint8 [size, size, channels]: the evaluation image of an encoded image, its centre square
  of `fraction` of the shorter side resized to `size` (ImageNet's resize to 256, centre crop
  224, when fraction is 224 / 256)."""

  def box(height, width):
    side = max(1, int(round(min(height, width) * fraction)))
    return [((height - side) // 2, (width - side) // 2, side, side)]

  return _decode_and_cut(data, box, size, channels, draft)[0]


def _decode_and_cut(data: bytes, boxes_of, size: int, channels: int, draft: bool) -> np.ndarray:
  """uint8 [len(boxes), size, size, channels]: the boxes `boxes_of(height, width)` returns
  ((top, left, h, w) in the full image's pixels) cut from one decode of `data` and resized."""
  from PIL import Image

  mode = "L" if channels == 1 else "RGB"
  with Image.open(io.BytesIO(data)) as image:
    width, height = image.size
    boxes = boxes_of(height, width)
    reduction = draft_reduction(boxes, size) if draft and image.format == "JPEG" else 1
    if reduction > 1:
      image.draft(mode, (-(-width // reduction), -(-height // reduction)))
    decoded = image.convert(mode)
  sx, sy = decoded.width / width, decoded.height / height
  crops = [np.asarray(decoded.resize((size, size), Image.BILINEAR,
                                     box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy)))
           for top, left, h, w in boxes]
  crops = np.stack(crops)
  return crops[..., None] if channels == 1 else crops
