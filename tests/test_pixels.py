"""The raw-pixel baseline of every evaluation (adcl.evaluation.pixels)."""

import json

import ml_collections
import numpy as np
import pytest

from adcl import figures
from adcl.evaluation import linear, pixels, splits


def _tiny_data(seed=0, size=6, num_train=90, num_test=30):
  """Three classes of noisy prototypes, uint8 [N, size, size, 1]."""
  rng = np.random.default_rng(seed)
  prototypes = rng.integers(0, 256, (3, size, size, 1))
  data = {}
  for split, n in (("train", num_train), ("test", num_test)):
    labels = rng.integers(0, 3, n)
    noise = rng.integers(-90, 90, (n, size, size, 1))
    data[split] = splits.ArraySplit(
        np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8), labels)
  return data


def _data_config(size=6):
  return ml_collections.ConfigDict({"image_size": size, "mean": (0.4,), "std": (0.25,)})


def _numpy_knn(train, train_labels, test, test_labels, k, sigma):
  """The paper's weighted kNN written out in numpy: cosine similarity, top k, exp(sim/sigma)."""
  unit = lambda f: f / np.linalg.norm(f, axis=1, keepdims=True)
  sims = unit(test.astype(np.float64)) @ unit(train.astype(np.float64)).T
  correct = 0
  for row, label in zip(sims, test_labels):
    top = np.argsort(-row)[:k]
    votes = np.zeros(3)
    np.add.at(votes, train_labels[top], np.exp(row[top] / sigma))
    correct += int(np.argmax(votes) == label)
  return 100.0 * correct / len(test_labels)


def test_pixel_baseline_matches_a_direct_numpy_computation():
  data, config = _tiny_data(), _data_config()
  result = pixels.compute(data, config, k=7, sigma=0.1)
  # The features: the normalised pixels at the input size, flattened.
  expected = {split: ((s.images / 255.0 - 0.4) / 0.25).reshape(len(s), -1)
              for split, s in data.items()}
  np.testing.assert_allclose(pixels.pixel_features(data["train"].images, config),
                             expected["train"], rtol=1e-6, atol=1e-6)
  train_labels, test_labels = data["train"].labels, data["test"].labels
  assert result["pixels_features"] == 36
  assert result["pixels_knn_top1"] == pytest.approx(
      _numpy_knn(expected["train"], train_labels, expected["test"], test_labels, 7, 0.1))
  probe = linear.linear_probe(expected["train"], train_labels, expected["test"], test_labels)
  assert result["pixels_linear_top1"] == pytest.approx(probe["linear_top1"])
  # The classes are separable from the pixels: a baseline that means something.
  assert result["pixels_knn_top1"] > 60 and result["pixels_linear_top1"] > 60


def test_pixel_baseline_is_cached_per_data_and_settings(tmp_path, monkeypatch, caplog):
  data, config = _tiny_data(), _data_config()
  first = pixels.baseline(data, config, 7, 0.1, directory=str(tmp_path))
  entries = list((tmp_path / "pixel_baselines").iterdir())
  assert len(entries) == 1 and json.loads(entries[0].read_text()) == first

  def fail(*args):
    raise AssertionError("recomputed a cached baseline")

  monkeypatch.setattr(pixels, "compute", fail)
  assert pixels.baseline(data, config, 7, 0.1, directory=str(tmp_path)) == first
  # Other images, another k or another input size are other baselines.
  other = _tiny_data(seed=1)
  keys = {pixels.cache_key(data, config, 7, 0.1), pixels.cache_key(other, config, 7, 0.1),
          pixels.cache_key(data, config, 5, 0.1), pixels.cache_key(data, _data_config(4), 7, 0.1)}
  assert len(keys) == 4
  # A damaged entry (cut, not JSON, empty) is recomputed with a warning naming it, not trusted.
  text = entries[0].read_text()
  for damaged in (text[:len(text) // 2], "{not json", "", "[1]"):
    entries[0].write_text(damaged)
    monkeypatch.setattr(pixels, "compute", lambda *a: {"pixels_knn_top1": 1.0})
    caplog.clear()
    assert pixels.baseline(data, config, 7, 0.1, directory=str(tmp_path)) == {"pixels_knn_top1": 1.0}
    assert f"{entries[0]} is damaged (" in caplog.text and "computing it again" in caplog.text
    assert json.loads(entries[0].read_text()) == {"pixels_knn_top1": 1.0}


def test_training_curves_draw_the_pixel_baseline_as_a_reference_line():
  records = [{"step": s, "loss": 3.0 - s / 10, "images_per_s": 100.0} for s in range(1, 5)]
  records[-1]["knn_top1"] = 80.0
  knn_panel = figures.training_curves(records, pixel_knn=81.79).axes[1]
  reference = [line for line in knn_panel.lines if line.get_linestyle() == "--"]
  assert len(reference) == 1 and set(reference[0].get_ydata()) == {81.79}
  assert "raw pixels 81.79" in [t.get_text() for t in knn_panel.get_legend().get_texts()]
  assert not any(l.get_linestyle() == "--" for l in figures.training_curves(records).axes[1].lines)
