"""`evaluate(model, variables, config, data)`: every metric of a frozen encoder, computed once.

What `python -m adcl.evaluate` writes to eval.json, `adcl.inspect.Run.evaluate` returns and the
study runner reports (docs/method.md §5): kNN on backbone and projector features, the linear
probe, the same two on the raw input pixels (adcl.evaluation.pixels) with the encoder's margin
over them, and the accuracy of encoder + probe under FGSM and PGD-20.
"""

import contextlib
import os
import tempfile
from typing import Callable, Iterator, Optional

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from adcl import allocator, step as step_lib
from adcl.data import normalize
from adcl.evaluation import knn, linear, pixels, robust, splits
from adcl.evaluation.batched import batched_apply


def embed(embed_fn: Callable, variables: dict, x: np.ndarray, batch_size: int,
          mesh: Mesh) -> np.ndarray:
  """`embed_fn(params, batch_stats, batch)` (adcl.step.make_embed_fn) over every row of the
  normalised inputs x [N, S, S, C]: [N, D] (a tuple of such for kind 'both'). Every process
  passes the same x and embeds its slice of each batch; the result is on every host."""
  params, batch_stats = variables["params"], variables["batch_stats"]
  return batched_apply(lambda batch: embed_fn(params, batch_stats, batch), [x], batch_size,
                       NamedSharding(mesh, P("data")))


def split_features(embed_fn: Callable, variables: dict, split, config: ml_collections.ConfigDict,
                   mesh: Mesh, directory: Optional[str] = None):
  """(features, labels [N]) of every image of `split` (splits.load_split's), embedded a chunk
  at a time: `embed_fn`'s pytree of [N, D] arrays, so only the features are ever whole; with
  a `directory` (feature_store's), they are written there chunk by chunk and come back as
  read-only memory maps, so not even they are."""
  chunks = split.chunks(splits.chunk_rows(config))
  embedded = ((embed(embed_fn, variables, normalize.eval_images(images, config.data),
                     config.eval.batch_size, mesh), labels) for images, labels in chunks)
  if directory is None:
    parts = list(embedded)
    features = jax.tree.map(lambda *chunks: np.concatenate(chunks), *[f for f, _ in parts])
    return features, np.concatenate([labels for _, labels in parts])
  return _stored_features(embedded, len(split), directory)


def _stored_features(embedded, count: int, directory: str):
  """`embedded` ((pytree of [n, D] features, labels [n]) chunks, `count` rows in all) written
  to .npy files in a new folder of `directory`: (pytree of [count, D] memory maps, labels)."""
  folder = tempfile.mkdtemp(dir=directory)
  files, labels, start = None, [], 0
  for features, chunk_labels in embedded:
    leaves, treedef = jax.tree.flatten(features)
    if files is None:
      files = [np.lib.format.open_memmap(os.path.join(folder, f"{i}.npy"), "w+", np.float32,
                                         (count, leaf.shape[1]))
               for i, leaf in enumerate(leaves)]
    for file, leaf in zip(files, leaves):
      file[start:start + len(chunk_labels)] = leaf
    labels.append(chunk_labels)
    start += len(chunk_labels)
  for file in files:
    file.flush()
  stored = [np.load(os.path.join(folder, f"{i}.npy"), mmap_mode="r") for i in range(len(files))]
  return jax.tree.unflatten(treedef, stored), np.concatenate(labels)


@contextlib.contextmanager
def feature_store(data_splits) -> Iterator[Optional[str]]:
  """Where split_features keeps the features of `data_splits` (load_split's): a temporary
  folder of $TMPDIR, removed on exit, when any split is records (their N x D float32 features
  would otherwise be held whole: 10 GB for ImageNet-1k's ResNet-50 backbone); None (in
  memory) for splits loaded whole, whose features are smaller than their images."""
  if all(split.in_memory for split in data_splits):
    yield None
    return
  with tempfile.TemporaryDirectory(prefix="adcl_features_") as directory:
    yield directory


def knn_settings(config: ml_collections.ConfigDict) -> tuple[int, float]:
  """(k, sigma) of the kNN: eval.knn_k, and eval.knn_sigma or else the training tau."""
  return config.eval.knn_k, config.eval.knn_sigma or config.loss.temperature


def training_eps_pixels(config: ml_collections.ConfigDict, channels: int) -> float:
  """The training eps in [0, 1] pixel units (the first channel's, if it differs per channel)."""
  if config.adv.eps_units == "pixel":
    return float(config.adv.eps)
  _, std = normalize.normalization(config.data, channels)
  return float(config.adv.eps * std[0])


def evaluate(model, variables: dict, config: ml_collections.ConfigDict, data: dict,
             robust_examples: int = 1000, robust_eps_pixels: tuple = (8 / 255,),
             mesh: Optional[Mesh] = None, pixel_baseline: bool = True) -> dict:
  """The metrics of one encoder; writes nothing.

  Args:
    model: the ContrastiveModel; variables: its {'params', 'batch_stats'}.
    config: the run's config (data normalisation and size, kNN settings, training eps).
    data: {'train': split, 'test': split} (adcl.evaluation.splits: whole in memory or records
      read a chunk at a time).
    robust_examples: test images attacked (FGSM and PGD-20 at the training eps and at each of
      `robust_eps_pixels`); 0 skips the attacks.
    mesh: devices the embedding runs on (default: all).
    pixel_baseline: also report pixels_knn_top1 and pixels_linear_top1 (cached, see
      adcl.evaluation.pixels) and each encoder figure's margin over them (*_minus_pixels).
  Returns:
    {'step'-free metrics: knn_top1_backbone, knn_top1_embedding, linear_*, pixels_* and
    robust_*}.
  """
  mesh = step_lib.data_mesh() if mesh is None else mesh
  with allocator.evaluating(), feature_store([data["train"], data["test"]]) as store:
    return _evaluate(model, variables, config, data, robust_examples, robust_eps_pixels, mesh,
                     pixel_baseline, store)


def _evaluate(model, variables, config, data, robust_examples, robust_eps_pixels, mesh,
              pixel_baseline, store) -> dict:
  # One forward pass per image gives both kinds of features.
  embed_both = step_lib.make_embed_fn(model, "both", mesh)
  ((train_h, train_z), train_labels), ((test_h, test_z), test_labels) = (
      split_features(embed_both, variables, data[split], config, mesh, store)
      for split in ("train", "test"))
  # Features stored on disk are read by the probe a chunk at a time.
  chunk_rows = None if store is None else linear.rows_per_chunk(train_h.shape[1])
  result = {"test_images": int(len(test_labels))}
  k, sigma = knn_settings(config)
  for kind, (train_f, test_f) in {"backbone": (train_h, test_h),
                                  "embedding": (train_z, test_z)}.items():
    result[f"knn_top1_{kind}"] = knn.knn_accuracy(train_f, train_labels, test_f, test_labels,
                                                  k, sigma)
  result.update(linear.linear_probe(train_h, train_labels, test_h, test_labels,
                                    chunk_rows=chunk_rows))
  if pixel_baseline:
    result.update(pixels.baseline(data, config.data, k, sigma))
    for key, pixel_key in (("knn_top1_backbone", "pixels_knn_top1"),
                           ("knn_top1_embedding", "pixels_knn_top1"),
                           ("linear_top1", "pixels_linear_top1")):
      if pixel_key in result:  # Not where the baseline was too large to compute.
        result[f"{key}_minus_pixels"] = result[key] - result[pixel_key]
  if robust_examples <= 0:  # Robustness skipped (a study that only compares accuracy).
    return result
  test_images, test_labels = data["test"].head(robust_examples)
  test_x = normalize.eval_images(test_images, config.data)
  result.update(_robustness(model, variables, config, (train_h, train_labels),
                            (test_x, test_labels), result, robust_examples, robust_eps_pixels,
                            chunk_rows))
  return result


def _robustness(model, variables, config, train_features, test_data, probe_choice: dict,
                examples: int, eps_pixels_list: tuple, chunk_rows) -> dict:
  """Refit the selected probe on all training features and attack encoder + probe."""
  (train_h, train_labels), (test_x, test_labels) = train_features, test_data
  num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  probe, mean, std = linear.fit_probe(train_h, train_labels, num_classes,
                                      probe_choice["linear_weight_decay"],
                                      probe_choice["linear_epochs"], chunk_rows)
  classifier = {**variables, "probe": probe, "feature_mean": mean, "feature_std": std}

  def logits_fn(v, x):
    h, _ = model.apply({"params": v["params"], "batch_stats": v["batch_stats"]}, x,
                       train=False, adv=False)
    return ((h - v["feature_mean"]) / v["feature_std"]) @ v["probe"]["w"] + v["probe"]["b"]

  channels = test_x.shape[-1]
  pixel_mean, pixel_std = normalize.normalization(config.data, channels)
  clip = normalize.pixel_range(pixel_mean, pixel_std)
  subset = slice(0, min(examples, len(test_labels)))
  key = jax.random.PRNGKey(0)
  result = {}
  for eps_pixels in sorted(set(eps_pixels_list) | {training_eps_pixels(config, channels)}):
    eps = (eps_pixels / pixel_std).astype(np.float32)
    for name, steps in (("fgsm", 1), ("pgd20", 20)):
      result[f"robust_{name}_eps{eps_pixels * 255:.2f}_top1"] = robust.robust_accuracy(
          logits_fn, classifier, test_x[subset], test_labels[subset], eps, clip, steps, key)
  result["robust_examples"] = subset.stop
  return result
