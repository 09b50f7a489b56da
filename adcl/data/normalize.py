"""uint8 pixels -> the encoder's input: per-channel normalisation, and the un-augmented
evaluation images. No TensorFlow."""

import ml_collections
import numpy as np


def normalization(data_config: ml_collections.ConfigDict, channels: int):
  """mean, std as float32 [channels]; a length-1 setting broadcasts to every channel."""
  mean, std = (np.asarray(v, np.float32) for v in (data_config.mean, data_config.std))
  if mean.size not in (1, channels):
    raise ValueError(f"config.data.mean has {mean.size} entries but the images have "
                     f"{channels} channels")
  return np.broadcast_to(mean, (channels,)).copy(), np.broadcast_to(std, (channels,)).copy()


def pixel_range(mean: np.ndarray, std: np.ndarray):
  """The valid pixels [0, 1] in normalised units: (low [C], high [C])."""
  return (0 - mean) / std, (1 - mean) / std


def eval_images(images: np.ndarray, data_config: ml_collections.ConfigDict) -> np.ndarray:
  """uint8 [N, H, W, C] (or [N, H, W]) -> un-augmented, normalised float32 [N, S, S, C];
  resized (bilinear) only if S differs from the source."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C] or [N, H, W]; got shape {images.shape}")
  mean, std = normalization(data_config, images.shape[-1])
  x = images.astype(np.float32) / 255.0
  size = data_config.image_size
  if x.shape[1:3] != (size, size):
    from adcl.data import resize  # tf.image.resize's bilinear, in jax.
    x = resize.resize(x, size)
  return (x - mean) / std
