"""The host's share of the views for encoded (JPEG/PNG) images: draw each view's crop box, decode
the image once and only as far as the boxes need, and cut the crops at the training size.

The box sampler is torchvision's RandomResizedCrop (the official CLAE code's): up to 10 tries of
an area fraction ~ U(scale) and a log-uniform aspect in [3/4, 4/3] that fits the image, else a
centre crop of the whole image at the nearest allowed aspect. Each image's boxes come from its
own generator seeded by (seed, step, global row), so a batch's crops do not depend on how many
processes or workers made them.

Decoding only what the crops need: a JPEG can be decoded at 1/2, 1/4 or 1/8 of its size for a
fraction of the cost (Pillow's `draft`, libjpeg's DCT scaling). The largest such reduction that
keeps the smaller crop at least `size` pixels on its shorter side is used, and both crops are
cut from the one decoded image.

Resizing is the device's: a bilinear resize to 224 px costs Pillow about as much as the decode
of an ImageNet-sized JPEG, and twice per image it would halve what a host core feeds. So each
crop leaves the host as a region of at most 2 x `size` pixels a side: its box cut from the
decode, reduced by a whole factor per axis (Pillow's box-filter `reduce`, as cheap as a copy)
only where a side exceeds twice the training size, and placed at the top-left of a zeroed
[2 x size, 2 x size] canvas with its (height, width) beside it. The step resizes the region
to `size` with the device views' bilinear sampler (adcl/data/views.py:views_of_crops), so what
remains to shrink is under 2x. Other formats decode whole; evaluation's centre crop is resized
here (Pillow's antialiased bilinear), as it is read once per evaluation.

The rest of the view (flip, colour jitter, grayscale, blur, normalisation) is the device's too.
"""

import io
from typing import Optional, Sequence

import numpy as np

CROP_TRIES = 10  # torchvision tries 10 random boxes before falling back to the whole image.
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
                 scale: Sequence[float], channels: int = 3, draft: bool = True,
                 out: Optional[tuple[np.ndarray, np.ndarray]] = None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """`views` RandomResizedCrops of the encoded image `data` from one decode (at a reduced scale
  when `draft` and the boxes allow), as regions for the device to resize:
  (uint8 [views, 2 * size, 2 * size, channels] canvases, each crop's region at its top-left and
  zeros elsewhere; int32 [views, 2] each region's (height, width), 1 to 2 * size). out: zeroed
  arrays of those shapes to write them into (a batch's rows: no copy to stack them). Raises
  PIL's errors for data that does not decode."""
  decoded, boxes = _decode(data, lambda height, width: [crop_box(rng, height, width, scale)
                                                         for _ in range(views)],
                           size, channels, draft)
  canvas, region_sizes = out if out is not None else (
      np.zeros((views, 2 * size, 2 * size, channels), np.uint8), np.zeros((views, 2), np.int32))
  for view, (left, upper, right, lower) in enumerate(boxes):
    # Whole pixels of the decode, at least one.
    x0, y0 = min(int(round(left)), decoded.width - 1), min(int(round(upper)), decoded.height - 1)
    x1 = max(x0 + 1, min(decoded.width, int(round(right))))
    y1 = max(y0 + 1, min(decoded.height, int(round(lower))))
    region = decoded.crop((x0, y0, x1, y1))
    factors = (max(1, region.width // size), max(1, region.height // size))
    if max(factors) > 1:  # A side of 2 x size or more: shrink it below that, not below size.
      region = region.reduce(factors)
    pixels = np.asarray(region).reshape(region.height, region.width, channels)
    canvas[view, :region.height, :region.width] = pixels
    region_sizes[view] = region.height, region.width
  return canvas, region_sizes


def decode_center(data: bytes, size: int, channels: int = 3,
                  fraction: float = CENTER_FRACTION, draft: bool = True) -> np.ndarray:
  """uint8 [size, size, channels]: the evaluation image of an encoded image, its centre square
  of `fraction` of the shorter side resized to `size` (ImageNet's resize to 256, centre crop
  224, when fraction is 224 / 256), by Pillow's bilinear filter (antialiased when it shrinks,
  as torchvision's resize of a PIL image)."""
  from PIL import Image

  def box(height, width):
    side = max(1, int(round(min(height, width) * fraction)))
    return [((height - side) // 2, (width - side) // 2, side, side)]

  decoded, (crop,) = _decode(data, box, size, channels, draft)
  pixels = np.asarray(decoded.resize((size, size), Image.BILINEAR, box=crop))
  return pixels.reshape(size, size, channels)


def _decode(data: bytes, boxes_of, size: int, channels: int, draft: bool):
  """(the decoded PIL image, its boxes (left, upper, right, lower) in its own fractional
  pixels) of `data`: the boxes `boxes_of(height, width)` returns ((top, left, h, w) in the full
  image's pixels), decoded at the largest draft reduction that keeps them `size` a side."""
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
  return decoded, [(left * sx, top * sy, (left + w) * sx, (top + h) * sy)
                   for top, left, h, w in boxes]
