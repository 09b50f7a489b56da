"""The paper's weighted kNN classifier on frozen features (docs/method.md §5)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from adcl.evaluation.batched import batched_apply


@partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_votes(test, train, train_labels, k: int, sigma: float, num_classes: int):
  """Predicted class per test row: the k most similar train rows vote exp(sim / sigma)."""
  sims = test @ train.T  # [T, N_train]
  top_sims, top_index = jax.lax.top_k(sims, k)
  weights = jnp.exp(top_sims / sigma)
  votes = jax.nn.one_hot(train_labels[top_index], num_classes) * weights[..., None]
  return jnp.argmax(votes.sum(axis=1), axis=-1)


def unit_rows(features: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm (float32), so dot products are cosine similarities."""
  features = np.asarray(features, np.float32)
  return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


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
  train = jnp.asarray(unit_rows(train_features))
  labels = jnp.asarray(train_labels, jnp.int32)
  num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  k = min(k, len(train_labels))
  predicted = batched_apply(lambda rows: _knn_votes(rows, train, labels, k, sigma, num_classes),
                            [unit_rows(test_features)], chunk)
  return 100.0 * float(np.sum(predicted == np.asarray(test_labels))) / len(test_labels)
