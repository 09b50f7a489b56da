"""The weighted kNN against a direct numpy transcription of docs/method.md §5."""

import numpy as np
import pytest

from adcl.evaluation import batched, knn, linear, robust


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


@pytest.mark.parametrize("train_chunk", [8192, 64])  # One block; 5 (the last padded).
def test_knn_matches_numpy(train_chunk):
  rng = np.random.default_rng(0)
  train, test = rng.normal(size=(300, 6)), rng.normal(size=(77, 6))
  train_labels = rng.integers(0, 5, 300)
  test_labels = rng.integers(0, 5, 77)
  expected = knn_numpy(train, train_labels, test, 20, 0.1, 5)
  got = knn.knn_accuracy(train, train_labels, test, test_labels, k=20, sigma=0.1, chunk=32,
                         train_chunk=train_chunk)
  assert got == pytest.approx(100.0 * np.mean(expected == test_labels), abs=1e-9)


def test_knn_separable_clusters_are_perfect():
  rng = np.random.default_rng(1)
  centres = np.eye(4) * 5
  labels = rng.integers(0, 4, 200)
  features = centres[labels] + rng.normal(scale=0.1, size=(200, 4))
  assert knn.knn_accuracy(features[:150], labels[:150], features[150:], labels[150:],
                               k=10, sigma=0.1) == 100.0


@pytest.mark.parametrize("train_chunk", [8192, 13])  # Blocks smaller than k.
def test_knn_with_k_larger_than_a_class_and_label_ties(train_chunk):
  rng = np.random.default_rng(2)
  train = rng.normal(size=(60, 4))
  train_labels = np.repeat([0, 1, 2], 20)  # k = 30 > 20 per class.
  test = rng.normal(size=(25, 4))
  test_labels = rng.integers(0, 3, 25)
  expected = knn_numpy(train, train_labels, test, 30, 0.5, 3)
  got = knn.knn_accuracy(train, train_labels, test, test_labels, k=30, sigma=0.5, chunk=7,
                         train_chunk=train_chunk)
  assert got == pytest.approx(100.0 * np.mean(expected == test_labels), abs=1e-9)


def test_linear_probe_separable_and_random_labels():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 4, 600)
  features = rng.normal(size=(600, 8)) + 10.0 * np.eye(4, 8)[labels]  # Separable.
  result = linear.linear_probe(features[:400], labels[:400], features[400:], labels[400:],
                                 epochs=60)
  assert result["linear_top1"] >= 99.0
  assert result["linear_official_best_test_epoch_top1"] >= result["linear_top1"] - 1.0
  random_labels = rng.integers(0, 4, 600)
  chance = linear.linear_probe(rng.normal(size=(400, 8)), random_labels[:400],
                                 rng.normal(size=(200, 8)), random_labels[400:], epochs=60)
  assert 15.0 < chance["linear_top1"] < 37.0
  # Selecting on the test set can only look better than the honest number.
  assert chance["linear_official_best_test_epoch_top1"] >= chance["linear_top1"]


def test_robust_accuracy_is_below_clean_and_falls_with_eps():
  import jax
  import jax.numpy as jnp
  rng = np.random.default_rng(4)
  labels = rng.integers(0, 3, 300)
  images = (rng.normal(scale=0.5, size=(300, 4, 4, 1)) + labels[:, None, None, None]).astype(np.float32)
  w = jnp.asarray(np.stack([np.full(16, c, np.float32) for c in range(3)], 1))
  b = jnp.asarray([0.0, -8.0, -32.0])  # Logits c * sum(x) - 8 c^2 / 2 * 2: class c near mean c.
  variables = {"w": w, "b": b}
  logits_fn = lambda v, x: x.reshape(x.shape[0], -1) @ v["w"] + v["b"]
  clean = 100.0 * np.mean(np.argmax(np.asarray(logits_fn(variables, jnp.asarray(images))), -1)
                          == labels)
  clip = (-10.0, 10.0)
  key = jax.random.PRNGKey(0)
  accuracies = [robust.robust_accuracy(logits_fn, variables, images, labels, eps, clip, steps,
                                       key, 64)
                for eps, steps in ((0.1, 1), (0.3, 1), (0.3, 10), (0.6, 10))]
  assert clean > 90
  assert all(a <= clean for a in accuracies)
  assert accuracies[0] > accuracies[1] and accuracies[2] > accuracies[3]
  assert accuracies[2] <= accuracies[1] + 1.0  # PGD at least as strong as FGSM (same eps).


def test_batched_apply_sees_one_shape_and_returns_every_row_once():
  shapes = set()

  def fn(x, i):
    shapes.add(x.shape)
    return {"double": 2 * x, "index": i}

  x = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
  out = batched.batched_apply(fn, [x, np.arange(23)], 8)
  assert shapes == {(8, 2)}  # The last batch of 7 was padded to 8.
  np.testing.assert_array_equal(out["double"], 2 * x)
  np.testing.assert_array_equal(out["index"], np.arange(23))


def stored(tmp_path, name, array):
  """`array` as features stored on disk: a read-only memory map of a .npy file."""
  np.save(tmp_path / f"{name}.npy", np.asarray(array, np.float32))
  return np.load(tmp_path / f"{name}.npy", mmap_mode="r")


def test_knn_on_features_stored_on_disk_equals_in_memory(tmp_path):
  rng = np.random.default_rng(5)
  train, test = rng.normal(size=(300, 6)), rng.normal(size=(77, 6))
  train_labels, test_labels = rng.integers(0, 5, 300), rng.integers(0, 5, 77)
  expected = knn.knn_accuracy(train, train_labels, test, test_labels, k=20, sigma=0.1)
  assert knn.knn_accuracy(stored(tmp_path, "train", train), train_labels,
                          stored(tmp_path, "test", test), test_labels, k=20, sigma=0.1,
                          train_chunk=64) == expected


def test_linear_probe_read_in_chunks_equals_the_whole_batch_probe(tmp_path):
  """Features read 37 rows at a time from disk (the last chunk padded) give the full-batch
  probe's curves: the same selection, and accuracies within one test image."""
  rng = np.random.default_rng(6)
  labels = rng.integers(0, 4, 500)
  features = rng.normal(size=(500, 8)) + 1.5 * np.eye(4, 8)[labels] + 3.0  # Off-centre.
  whole = linear.linear_probe(features[:400], labels[:400], features[400:], labels[400:],
                              epochs=40)
  chunked = linear.linear_probe(stored(tmp_path, "train", features[:400]), labels[:400],
                                stored(tmp_path, "test", features[400:]), labels[400:],
                                epochs=40, chunk_rows=37)
  assert 40 < whole["linear_top1"] < 100  # Neither trivial nor perfect: the curves move.
  for key in ("linear_weight_decay", "linear_epochs"):
    assert chunked[key] == whole[key]
  for key in ("linear_top1", "linear_val_top1", "linear_official_best_test_epoch_top1"):
    assert chunked[key] == pytest.approx(whole[key], abs=1.01), key  # 1 of 100 test rows.

  mean, std = linear.feature_stats(features)
  whole_params, _ = linear.fit_linear_probe((features - mean) / std, labels, 4, 1e-3, 25)
  params, chunk_mean, chunk_std = linear.fit_probe(stored(tmp_path, "all", features), labels, 4,
                                                   1e-3, 25, chunk_rows=64)
  np.testing.assert_allclose(chunk_mean, mean, rtol=1e-5)
  np.testing.assert_allclose(chunk_std, std, rtol=1e-5)
  for name in ("w", "b"):
    np.testing.assert_allclose(params[name], whole_params[name], rtol=1e-4, atol=1e-5)
