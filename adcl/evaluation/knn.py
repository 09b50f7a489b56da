"""The paper's weighted kNN classifier on frozen features (docs/method.md §5)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from adcl.evaluation.batched import pad_rows


@partial(jax.jit, static_argnames=("k",))
def _merge_top_k(test, block, block_labels, best_sims, best_labels, k: int):
  """The k most similar rows so far, updated with one block of training rows.

  test [T, D], block [C, D] (unit rows; padding rows have label -1 and never enter the top k),
  block_labels [C], best_sims / best_labels [T, k] -> the same, over the block as well.
  """
  sims = jnp.where(block_labels[None] >= 0, test @ block.T, -jnp.inf)  # [T, C]
  candidates = jnp.concatenate([best_sims, sims], axis=1)
  labels = jnp.concatenate([best_labels, jnp.broadcast_to(block_labels, sims.shape)], axis=1)
  top_sims, top_index = jax.lax.top_k(candidates, k)
  return top_sims, jnp.take_along_axis(labels, top_index, axis=1)


@partial(jax.jit, static_argnames=("num_classes",))
def _vote(top_sims, top_labels, sigma: float, num_classes: int):
  """Predicted class per test row: its k neighbours vote exp(sim / sigma)."""
  weights = jnp.exp(top_sims / sigma)
  votes = jax.nn.one_hot(top_labels, num_classes) * weights[..., None]
  return jnp.argmax(votes.sum(axis=1), axis=-1)


def unit_rows(features: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm (float32), so dot products are cosine similarities."""
  features = np.asarray(features, np.float32)
  return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def knn_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                 test_features: np.ndarray, test_labels: np.ndarray, k: int = 200,
                 sigma: float = 0.1, chunk: int = 1000, train_chunk: int = 8192) -> float:
  """Weighted kNN top-1 accuracy (percent) over the whole test set.

  Args:
    train_features: [N, D], in memory or a memory map of features stored on disk (read a
      block at a time); test_features: [T, D]. L2-normalised here, so cosine similarity.
    train_labels: [N] int; test_labels: [T] int.
    k: neighbours; sigma: temperature of the vote weights (the training temperature).
    chunk, train_chunk: test rows per device call and training rows per block. Each block is
      read, normalised and sent to the device once and merged into every test row's running
      top k, so host and device hold one block, the test features and [T, k] neighbours
      whatever N is; the similarities in flight are [chunk, train_chunk + k].
  """
  num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  k = min(k, len(train_labels))
  labels = np.asarray(train_labels, np.int32)
  train_chunk, chunk = min(train_chunk, len(labels)), min(chunk, len(test_labels))
  test = unit_rows(test_features)
  test_chunks = [jnp.asarray(pad_rows(test[i:i + chunk], chunk))
                 for i in range(0, len(test), chunk)]
  best = [(jnp.full((chunk, k), -jnp.inf), jnp.zeros((chunk, k), jnp.int32))
          for _ in test_chunks]
  for i in range(0, len(labels), train_chunk):
    block = jnp.asarray(pad_rows(unit_rows(train_features[i:i + train_chunk]), train_chunk))
    block_labels = jnp.asarray(np.pad(labels[i:i + train_chunk],
                                      (0, train_chunk - len(labels[i:i + train_chunk])),
                                      constant_values=-1))
    best = [_merge_top_k(rows, block, block_labels, *so_far, k)
            for rows, so_far in zip(test_chunks, best)]
  predicted = np.concatenate([np.asarray(_vote(*so_far, sigma, num_classes))
                              for so_far in best])[:len(test)]
  return 100.0 * float(np.sum(predicted == np.asarray(test_labels))) / len(test_labels)
