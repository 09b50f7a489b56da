"""Evaluation: the paper's weighted kNN on frozen features (REFERENCE §5)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils


@partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_votes(test, train, train_labels, k: int, sigma: float, num_classes: int):
  """Predicted class per test row: the k most similar train rows vote exp(sim / sigma)."""
  sims = test @ train.T  # [T, N_train]
  top_sims, top_index = jax.lax.top_k(sims, k)
  weights = jnp.exp(top_sims / sigma)
  votes = jax.nn.one_hot(train_labels[top_index], num_classes) * weights[..., None]
  return jnp.argmax(votes.sum(axis=1), axis=-1)


def knn_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                 test_features: np.ndarray, test_labels: np.ndarray, k: int = 200,
                 sigma: float = 0.1, chunk: int = 1000) -> float:
  """Weighted kNN top-1 accuracy (percent) over the whole test set.

  Args:
    train_features: [N, D]; test_features: [T, D] (L2-normalised here, so cosine similarity).
    train_labels: [N] int; test_labels: [T] int.
    k: neighbours; sigma: temperature of the vote weights (the training temperature).
    chunk: test rows per device call (bounds the [chunk, N] similarity matrix).
  """
  unit = lambda f: f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  train = jnp.asarray(unit(np.asarray(train_features, np.float32)))
  test = unit(np.asarray(test_features, np.float32))
  labels = jnp.asarray(train_labels, jnp.int32)
  num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  k = min(k, len(train_labels))
  correct = 0
  # Pad the last chunk to the chunk size: one compilation for the whole test set.
  for start in range(0, len(test), chunk):
    rows = test[start:start + chunk]
    padded = np.pad(rows, ((0, chunk - len(rows)), (0, 0)))
    predicted = np.asarray(_knn_votes(jnp.asarray(padded), train, labels, k, sigma, num_classes))
    correct += int(np.sum(predicted[:len(rows)] == test_labels[start:start + len(rows)]))
  return 100.0 * correct / len(test_labels)


def embed_all(embed_fn, params, batch_stats, images: np.ndarray, batch_size: int,
              sharding) -> np.ndarray:
  """Features of every image, [N, D], in batches of `batch_size` (the last one padded).

  Every process passes the same full `images` and contributes its slice of each batch, so
  each image is embedded once; the result is gathered to every host.
  """
  process_count, process_index = jax.process_count(), jax.process_index()
  local = batch_size // process_count
  outputs = []
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    batch = np.pad(batch, ((0, batch_size - len(batch)),) + ((0, 0),) * (batch.ndim - 1))
    local_batch = batch[process_index * local:(process_index + 1) * local]
    x = jax.make_array_from_process_local_data(sharding, local_batch)
    features = embed_fn(params, batch_stats, x)
    outputs.append(multihost_utils.process_allgather(features, tiled=True)
                   if process_count > 1 else np.asarray(features))
  return np.concatenate(outputs)[:len(images)]
