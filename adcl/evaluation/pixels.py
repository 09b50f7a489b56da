"""The raw-pixel baseline: the evaluation protocol applied to the encoder's own input.

A representation is worth its encoder only if it beats the pixels it was computed from, so
every evaluation (docs/method.md §5) reports kNN and the linear probe on the un-augmented,
normalised input pixels at the run's input size (exactly what the encoder sees at evaluation),
flattened to [N, S*S*C], with the same k, sigma and probe selection as the encoder's features.

The numbers depend only on the images and those settings, so they are computed once and cached
as JSON, keyed by a hash of both, in `$ADCL_CACHE_DIR/pixel_baselines/` (default
`~/.cache/adcl`): a study of twenty runs on one dataset pays for them once.
"""

import hashlib
import json
import logging
import os
from typing import Optional

import ml_collections
import numpy as np

from adcl import errors, paths
from adcl.data import normalize
from adcl.evaluation import knn, linear

# Bump when the protocol below changes, so old cache entries are not read.
PROTOCOL_VERSION = 1
# The most float32 pixel features (both splits) computed for a split of records; above it the
# baseline is skipped, saying so in the result (ImageNet-1k at 224 px would take 770 GB).
PIXEL_BUDGET_BYTES = 8 * 2**30


def pixel_features(images: np.ndarray, data_config: ml_collections.ConfigDict) -> np.ndarray:
  """uint8 [N, H, W, C] -> the encoder's evaluation input, flattened: float32 [N, S*S*C]."""
  x = normalize.eval_images(images, data_config)
  return x.reshape(len(x), -1)


def cache_dir() -> str:
  """Where cached baselines live: $ADCL_CACHE_DIR, else ~/.cache/adcl."""
  return os.environ.get("ADCL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "adcl")


def cache_key(data: dict, data_config: ml_collections.ConfigDict, k: int, sigma: float) -> str:
  """Hash of the images, labels and every setting the baseline depends on."""
  digest = hashlib.sha256()
  settings = {"version": PROTOCOL_VERSION, "image_size": int(data_config.image_size),
              "mean": [float(v) for v in data_config.mean],
              "std": [float(v) for v in data_config.std], "k": int(k), "sigma": float(sigma)}
  digest.update(json.dumps(settings, sort_keys=True).encode())
  for split in ("train", "test"):
    digest.update(f"{split}{data[split].fingerprint}".encode())
  return digest.hexdigest()[:24]


def split_pixel_features(split, data_config: ml_collections.ConfigDict):
  """(pixel_features [N, S*S*C], labels [N]) of a split (adcl.evaluation.splits), a chunk at
  a time."""
  parts = [(pixel_features(images, data_config), labels)
           for images, labels in split.chunks(4096)]
  return np.concatenate([f for f, _ in parts]), np.concatenate([l for _, l in parts])


def too_large(data: dict, data_config: ml_collections.ConfigDict) -> Optional[str]:
  """Why the pixel features of a records `data` exceed PIXEL_BUDGET_BYTES, or None."""
  both = [data[s] for s in ("train", "test")]
  if all(split.in_memory for split in both):
    return None  # In memory already: its features are 4x what is loaded.
  size = sum(len(split) for split in both) * 4 * data_config.image_size ** 2 * both[0].channels
  if size <= PIXEL_BUDGET_BYTES:
    return None
  return (f"the pixel features would take {size / 2**30:.3g} GB "
          f"(budget {PIXEL_BUDGET_BYTES / 2**30:.3g} GB)")


def compute(data: dict, data_config: ml_collections.ConfigDict, k: int, sigma: float) -> dict:
  """{'pixels_knn_top1', 'pixels_linear_top1'} (percent) on `data` = {'train': split, 'test':
  split} (adcl.evaluation.splits). No
  cache."""
  (train_x, train_labels), (test_x, test_labels) = (
      split_pixel_features(data[split], data_config) for split in ("train", "test"))
  probe = linear.linear_probe(train_x, train_labels, test_x, test_labels)
  return {"pixels_knn_top1": knn.knn_accuracy(train_x, train_labels, test_x, test_labels, k,
                                              sigma),
          "pixels_linear_top1": probe["linear_top1"],
          "pixels_features": int(train_x.shape[1])}


def baseline(data: dict, data_config: ml_collections.ConfigDict, k: int, sigma: float,
             directory: Optional[str] = None) -> dict:
  """`compute`, read from the cache when this (data, settings) pair was computed before; a
  new result is written to the cache (atomically: concurrent runs write the same file).
  Records too large for it (too_large) give {'pixels_skipped': why} instead."""
  reason = too_large(data, data_config)
  if reason:
    logging.getLogger("absl").warning("raw-pixel baseline skipped: %s", reason)
    return {"pixels_skipped": reason}
  path = paths.resolve(directory or cache_dir()) / "pixel_baselines" / (
      cache_key(data, data_config, k, sigma) + ".json")
  try:
    cached = paths.read_json_object(path)
  except errors.DamagedFile as error:  # A cache entry: recomputed and replaced.
    logging.getLogger("absl").warning("%s; computing it again", error)
    cached = None
  if cached is not None:
    return cached
  result = compute(data, data_config, k, sigma)
  try:
    paths.write_atomic(path, json.dumps(result))
  except OSError:  # A read-only home or a full disk costs the cache, not the evaluation.
    pass
  return result
