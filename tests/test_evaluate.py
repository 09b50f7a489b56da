"""The weighted kNN against a direct numpy transcription of REFERENCE §5."""

import numpy as np
import pytest

from adcl import evaluate


def knn_numpy(train, train_labels, test, k, sigma, classes):
  unit = lambda f: f / np.linalg.norm(f, axis=1, keepdims=True)
  train, test = unit(train), unit(test)
  predictions = []
  for row in test:
    sims = train @ row
    top = np.argsort(-sims)[:k]
    votes = np.zeros(classes)
    for j in top:
      votes[train_labels[j]] += np.exp(sims[j] / sigma)
    predictions.append(np.argmax(votes))
  return np.array(predictions)


def test_knn_matches_numpy():
  rng = np.random.default_rng(0)
  train, test = rng.normal(size=(300, 6)), rng.normal(size=(77, 6))
  train_labels = rng.integers(0, 5, 300)
  test_labels = rng.integers(0, 5, 77)
  expected = knn_numpy(train, train_labels, test, 20, 0.1, 5)
  got = evaluate.knn_accuracy(train, train_labels, test, test_labels, k=20, sigma=0.1, chunk=32)
  assert got == pytest.approx(100.0 * np.mean(expected == test_labels), abs=1e-9)


def test_knn_separable_clusters_are_perfect():
  rng = np.random.default_rng(1)
  centres = np.eye(4) * 5
  labels = rng.integers(0, 4, 200)
  features = centres[labels] + rng.normal(scale=0.1, size=(200, 4))
  assert evaluate.knn_accuracy(features[:150], labels[:150], features[150:], labels[150:],
                               k=10, sigma=0.1) == 100.0
