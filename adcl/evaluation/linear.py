"""The linear probe: multinomial logistic regression on frozen, standardised features.

Features fit on the device whole (one compiled scan over the epochs), or are read `chunk_rows`
rows at a time (a memory map of features stored on disk): the same full-batch Adam, its
gradient summed over the chunks, so host and device hold one chunk whatever N is.
"""

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

# Rows of a chunk when features are read from disk: about 256 MB of float32 features.
CHUNK_BYTES = 256 * 2**20


def rows_per_chunk(dim: int) -> int:
  """Rows of [*, dim] float32 features in CHUNK_BYTES."""
  return max(1, CHUNK_BYTES // (4 * dim))


def feature_stats(train: np.ndarray):
  """Per-dimension mean and std of the training features: the probe's standardisation."""
  return train.mean(axis=0), train.std(axis=0) + 1e-6


def standardize(train: np.ndarray, *others: np.ndarray) -> list:
  """Features centred and scaled by the training set's statistics (the probe's input)."""
  mean, std = feature_stats(train)
  return [(f - mean) / std for f in (train, *others)]


def _logits(params, features, num_classes: int):
  """[W, N, K]: every probe's logits from one product with features [N, D]."""
  decays = params["b"].shape[0]
  w = jnp.moveaxis(params["w"], 0, 1).reshape(features.shape[1], -1)
  return (features @ w).reshape(features.shape[0], decays, num_classes).transpose(1, 0, 2) + \
      params["b"][:, None]


@partial(jax.jit, static_argnames=("num_classes", "epochs", "lr"))
def _fit(x, y, decays, eval_sets, num_classes: int, epochs: int, lr: float):
  """W probes side by side by full-batch Adam; accuracy on each eval set after every epoch.

  The data are arguments, not closed-over constants: XLA would constant-fold work on them at
  compile time (seconds, and a wall of warnings for 54,000 training features).
  """
  tx = optax.adam(lr)
  params = {"w": jnp.zeros((len(decays), x.shape[1], num_classes)),
            "b": jnp.zeros((len(decays), num_classes))}

  def loss_fn(p):
    ce = optax.softmax_cross_entropy_with_integer_labels(_logits(p, x, num_classes),
                                                         y[None]).mean(axis=1)
    # The probes are independent: the sum of their losses has each probe's own gradient.
    return jnp.sum(ce + 0.5 * decays * jnp.sum(p["w"] ** 2, axis=(1, 2)))

  def epoch(carry, _):
    p, opt_state = carry
    updates, opt_state = tx.update(jax.grad(loss_fn)(p), opt_state, p)
    p = optax.apply_updates(p, updates)
    accuracy = [100.0 * jnp.mean(jnp.argmax(_logits(p, f, num_classes), -1) == l[None], axis=1)
                for f, l in eval_sets]  # Each [W].
    return (p, opt_state), (jnp.stack(accuracy, axis=1) if accuracy
                            else jnp.zeros((len(decays), 0)))

  (params, _), history = jax.lax.scan(epoch, (params, tx.init(params)), None, length=epochs)
  return params, history


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, num_classes: int,
                     weight_decay, epochs: int = 100, lr: float = 0.01, eval_sets: tuple = ()):
  """Multinomial logistic regression by full-batch Adam on frozen features.

  Args:
    features: [N, D] standardised training features; labels: [N] int.
    weight_decay: L2 penalty on the weights (the hyper-parameter that is selected): a float,
      or a sequence of W of them, fitted side by side as one [D, W*K] matrix product (one
      compiled scan instead of W).
    eval_sets: (features, labels) pairs whose accuracy (percent) is recorded after every epoch.
  Returns:
    (params {'w': [D, K], 'b': [K]}, accuracy per epoch: [len(eval_sets), epochs]); for a
    sequence of weight decays, a leading [W] axis on every array.
  """
  many = np.ndim(weight_decay) == 1
  decays = jnp.atleast_1d(jnp.asarray(weight_decay, jnp.float32))  # [W]
  sets = tuple((jnp.asarray(f, jnp.float32), jnp.asarray(l, jnp.int32)) for f, l in eval_sets)
  params, history = _fit(jnp.asarray(features, jnp.float32), jnp.asarray(labels, jnp.int32),
                         decays, sets, num_classes, epochs, lr)
  history = np.moveaxis(np.asarray(history), 0, -1)  # [W, sets, epochs].
  if many:
    return params, history
  return jax.tree.map(lambda a: a[0], params), history[0]


def _chunks(features, labels, chunk_rows: int, *row_masks):
  """(x [R, D] float32, y [R] int32, *masks [R] float32) for each run of `chunk_rows` rows,
  the last zero-padded (padding rows have mask 0, so they count nowhere)."""
  for start in range(0, len(labels), chunk_rows):
    stop = min(start + chunk_rows, len(labels))
    pad = chunk_rows - (stop - start)
    x = np.pad(np.asarray(features[start:stop], np.float32), ((0, pad), (0, 0)))
    y = np.pad(np.asarray(labels[start:stop], np.int32), (0, pad))
    yield (x, y, *(np.pad(m[start:stop].astype(np.float32), (0, pad)) for m in row_masks))


def masked_feature_stats(features, rows: np.ndarray, chunk_rows: int):
  """feature_stats of features[rows] (rows: bool [N]), read a chunk at a time (float64 sums,
  two passes: the mean, then the spread around it)."""
  count, total = rows.sum(), 0.0
  for x, _, m in _chunks(features, rows, chunk_rows, rows):
    total = total + (x.astype(np.float64) * m[:, None]).sum(axis=0)
  mean = total / count
  spread = 0.0
  for x, _, m in _chunks(features, rows, chunk_rows, rows):
    spread = spread + (((x - mean) ** 2) * m[:, None]).sum(axis=0)
  return mean.astype(np.float32), (np.sqrt(spread / count) + 1e-6).astype(np.float32)


@partial(jax.jit, static_argnames=("num_classes",))
def _chunk_pass(params, x, y, fit_weight, eval_weight, mean, std, num_classes: int):
  """One chunk's share of a full-batch epoch at `params`: the gradient of the probes' summed
  fit_weight-weighted cross-entropy, and [W] eval_weight-weighted correct predictions."""
  x = (x - mean) / std

  def loss_fn(p):
    logits = _logits(p, x, num_classes)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y[None])  # [W, R].
    return jnp.sum(ce * fit_weight[None]), logits

  grad, logits = jax.grad(loss_fn, has_aux=True)(params)
  correct = jnp.sum((jnp.argmax(logits, -1) == y[None]) * eval_weight[None], axis=1)
  return grad, correct


@partial(jax.jit, static_argnames=("lr",))
def _adam_step(params, opt_state, grad, decays, lr: float):
  """fit_linear_probe's update from the summed cross-entropy gradient, plus the L2 term's."""
  grad = {"w": grad["w"] + decays[:, None, None] * params["w"], "b": grad["b"]}
  updates, opt_state = optax.adam(lr).update(grad, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def fit_linear_probe_chunked(features, labels: np.ndarray, num_classes: int, weight_decays,
                             epochs: int, chunk_rows: int, fit_rows: Optional[np.ndarray] = None,
                             eval_rows: Optional[np.ndarray] = None, eval_set: tuple = (),
                             lr: float = 0.01):
  """fit_linear_probe's probes, W side by side, on raw `features` read chunk_rows at a time.

  Args:
    features: [N, D] raw (unstandardised) features, in memory or a memory map; labels: [N].
    weight_decays: a sequence of W L2 penalties.
    fit_rows: bool [N], the rows fitted (default all); they are standardised by their own
      mean and std, as fit_linear_probe's callers do.
    eval_rows: bool [N], rows of the same features whose accuracy is recorded after every
      epoch; or eval_set: (features [T, D], labels [T]), another set recorded the same way.
  Returns:
    (params {'w': [W, D, K], 'b': [W, K]}, (mean [D], std [D]), accuracy [W, epochs]).
  """
  fit_rows = np.ones(len(labels), bool) if fit_rows is None else fit_rows
  eval_rows = np.zeros(len(labels), bool) if eval_rows is None else eval_rows
  mean, std = masked_feature_stats(features, fit_rows, chunk_rows)
  decays = jnp.asarray(weight_decays, jnp.float32)
  params = {"w": jnp.zeros((len(decays), features.shape[1], num_classes)),
            "b": jnp.zeros((len(decays), num_classes))}
  opt_state = optax.adam(lr).init(params)
  fit_weight = fit_rows / fit_rows.sum()  # The mean over fitted rows, as a weighted sum.
  eval_count = eval_rows.sum() if eval_set == () else len(eval_set[1])
  history = []
  for epoch in range(epochs + 1):
    # Epoch e's pass gives the gradient at the parameters after e updates and, in the same
    # read, their accuracy: the curve's entry e - 1. The last pass only measures.
    grad, correct = None, jnp.zeros(len(decays))
    for x, y, w_fit, w_eval in _chunks(features, labels, chunk_rows, fit_weight, eval_rows):
      g, c = _chunk_pass(params, x, y, w_fit, w_eval, mean, std, num_classes)
      grad, correct = g if grad is None else jax.tree.map(jnp.add, grad, g), correct + c
    if eval_set != ():
      test_x, test_y = eval_set
      for x, y, w in _chunks(test_x, test_y, chunk_rows, np.ones(len(test_y), bool)):
        correct = correct + _chunk_pass(params, x, y, 0 * w, w, mean, std, num_classes)[1]
    if epoch:
      history.append(100.0 * np.asarray(correct) / max(eval_count, 1))
    if epoch < epochs:
      params, opt_state = _adam_step(params, opt_state, grad, decays, lr)
    if epoch % max(1, epochs // 10) == 0:
      logging.info("linear probe, features read in chunks: epoch %d/%d", epoch, epochs)
  return params, (mean, std), np.stack(history, axis=1)


def fit_probe(features, labels: np.ndarray, num_classes: int, weight_decay: float,
              epochs: int, chunk_rows: Optional[int] = None):
  """One probe fitted on all of `features` (raw [N, D]), standardised by their statistics:
  (params {'w': [D, K], 'b': [K]}, mean [D], std [D]). chunk_rows: read them that many rows
  at a time (features stored on disk); None: whole."""
  if chunk_rows is None:
    mean, std = feature_stats(features)
    params, _ = fit_linear_probe((features - mean) / std, labels, num_classes, weight_decay,
                                 epochs)
    return params, mean, std
  params, (mean, std), _ = fit_linear_probe_chunked(features, labels, num_classes,
                                                    [weight_decay], epochs, chunk_rows)
  return jax.tree.map(lambda a: a[0], params), mean, std


def _accuracy_curves(train_features, train_labels, fit_idx, eval_features, eval_labels,
                     eval_idx, num_classes: int, weight_decays, epochs: int,
                     chunk_rows: Optional[int]):
  """[W, epochs] accuracy on eval_features[eval_idx] (None: all) of probes fitted on
  train_features[fit_idx] (None: all); eval_features is train_features for held-out rows."""
  if chunk_rows is None:
    pick = lambda f, idx: f if idx is None else f[idx]
    fit_x, eval_x = standardize(pick(train_features, fit_idx), pick(eval_features, eval_idx))
    _, curves = fit_linear_probe(fit_x, pick(train_labels, fit_idx), num_classes,
                                 list(weight_decays), epochs,
                                 eval_sets=((eval_x, pick(eval_labels, eval_idx)),))
    return curves[:, 0]
  as_mask = lambda idx: None if idx is None else np.isin(np.arange(len(train_labels)), idx)
  if eval_features is train_features:
    _, _, curves = fit_linear_probe_chunked(train_features, train_labels, num_classes,
                                            weight_decays, epochs, chunk_rows,
                                            as_mask(fit_idx), eval_rows=as_mask(eval_idx))
  else:
    _, _, curves = fit_linear_probe_chunked(train_features, train_labels, num_classes,
                                            weight_decays, epochs, chunk_rows,
                                            as_mask(fit_idx),
                                            eval_set=(eval_features, eval_labels))
  return curves


def linear_probe(train_features, train_labels, test_features, test_labels,
                 weight_decays=(0.0, 1e-4, 1e-3, 1e-2), val_fraction: float = 0.1,
                 epochs: int = 300, seed: int = 0, chunk_rows: Optional[int] = None) -> dict:
  """An honest linear probe, and the official protocol's number beside it.

  Honest: the weight decay and the epoch count are selected on a seeded held-out `val_fraction`
  of the training features; the probe is refit on all training features with them and its test
  accuracy is read once. Official (CLAE scripts): the best test accuracy over all epochs, i.e.
  model selection on the test set; reported for comparison with the paper only.
  chunk_rows: read the features that many rows at a time (stored on disk); None: whole.
  """
  num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  order = np.random.default_rng(seed).permutation(len(train_labels))
  num_val = max(1, int(round(len(order) * val_fraction)))
  val_idx, fit_idx = order[:num_val], order[num_val:]
  curves = _accuracy_curves(train_features, train_labels, fit_idx, train_features, train_labels,
                            val_idx, num_classes, weight_decays, epochs, chunk_rows)
  best = (-1.0, None, None)
  for weight_decay, val_curve in zip(weight_decays, curves):
    epoch = int(np.argmax(val_curve))
    if val_curve[epoch] > best[0]:
      best = (float(val_curve[epoch]), weight_decay, epoch + 1)
  val_top1, weight_decay, best_epochs = best
  # Full-batch Adam is deterministic, so the first `best_epochs` of this fit are the honest
  # probe; the maximum over all its epochs is the official protocol's number.
  (test_curve,) = _accuracy_curves(train_features, train_labels, None, test_features,
                                   test_labels, None, num_classes, [weight_decay], epochs,
                                   chunk_rows)
  return {"linear_top1": float(test_curve[best_epochs - 1]), "linear_val_top1": val_top1,
          "linear_weight_decay": weight_decay, "linear_epochs": best_epochs,
          "linear_official_best_test_epoch_top1": float(test_curve.max())}
