"""Evaluation of a frozen encoder: the paper's weighted kNN, a linear probe, robustness.

    python -m adcl.evaluate --workdir DIR [--checkpoint STEP] [--robust_examples 1000]

writes DIR/eval.json (REFERENCE §5), prints it as a table, and draws the run's figures
(training curves, adversarial views, embedding projection) in DIR/figures/.
"""

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
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
  """Features of every image, [N, D], in batches of `batch_size` (the last one padded); a
  tuple of such arrays if `embed_fn` returns a tuple.

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
                   if process_count > 1 else jax.tree.map(np.asarray, features))
  return jax.tree.map(lambda *parts: np.concatenate(parts)[:len(images)], *outputs)


def _feature_stats(train: np.ndarray):
  """Per-dimension mean and std of the training features: the probe's standardisation."""
  return train.mean(axis=0), train.std(axis=0) + 1e-6


def _standardize(train: np.ndarray, *others: np.ndarray):
  """Features centred and scaled by the training set's statistics (the probe's input)."""
  mean, std = _feature_stats(train)
  return [(f - mean) / std for f in (train, *others)]


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
  x, y = jnp.asarray(features, jnp.float32), jnp.asarray(labels, jnp.int32)
  tx = optax.adam(lr)
  sets = [(jnp.asarray(f, jnp.float32), jnp.asarray(l, jnp.int32)) for f, l in eval_sets]
  params = {"w": jnp.zeros((len(decays), x.shape[1], num_classes)),
            "b": jnp.zeros((len(decays), num_classes))}

  def logits_of(p, f):  # [W, N, K]: every probe's logits from one product with f.
    return (f @ jnp.moveaxis(p["w"], 0, 1).reshape(f.shape[1], -1)).reshape(
        f.shape[0], len(decays), num_classes).transpose(1, 0, 2) + p["b"][:, None]

  def loss_fn(p):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_of(p, x), y[None]).mean(axis=1)
    # The probes are independent: the sum of their losses has each probe's own gradient.
    return jnp.sum(ce + 0.5 * decays * jnp.sum(p["w"] ** 2, axis=(1, 2)))

  def epoch(carry, _):
    p, opt_state = carry
    updates, opt_state = tx.update(jax.grad(loss_fn)(p), opt_state, p)
    p = optax.apply_updates(p, updates)
    accuracy = [100.0 * jnp.mean(jnp.argmax(logits_of(p, f), -1) == l[None], axis=1)
                for f, l in sets]  # Each [W].
    return (p, opt_state), jnp.stack(accuracy, axis=1) if accuracy else jnp.zeros((len(decays), 0))

  (params, _), history = jax.jit(lambda p: jax.lax.scan(epoch, (p, tx.init(p)), None,
                                                        length=epochs))(params)
  history = np.moveaxis(np.asarray(history), 0, -1)  # [W, sets, epochs].
  if many:
    return params, history
  return jax.tree.map(lambda a: a[0], params), history[0]


def linear_probe(train_features, train_labels, test_features, test_labels,
                 weight_decays=(0.0, 1e-4, 1e-3, 1e-2), val_fraction: float = 0.1,
                 epochs: int = 300, seed: int = 0) -> dict:
  """An honest linear probe, and the official protocol's number beside it.

  Honest: the weight decay and the epoch count are selected on a seeded held-out `val_fraction`
  of the training features; the probe is refit on all training features with them and its test
  accuracy is read once. Official (CLAE scripts): the best test accuracy over all epochs, i.e. model
  selection on the test set; reported for comparison with the paper only.
  """
  num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  order = np.random.default_rng(seed).permutation(len(train_labels))
  num_val = max(1, int(round(len(order) * val_fraction)))
  val_idx, fit_idx = order[:num_val], order[num_val:]
  fit_x, val_x = _standardize(train_features[fit_idx], train_features[val_idx])
  _, curves = fit_linear_probe(fit_x, train_labels[fit_idx], num_classes, list(weight_decays),
                               epochs, eval_sets=((val_x, train_labels[val_idx]),))
  best = (-1.0, None, None)
  for weight_decay, (val_curve,) in zip(weight_decays, curves):
    epoch = int(np.argmax(val_curve))
    if val_curve[epoch] > best[0]:
      best = (float(val_curve[epoch]), weight_decay, epoch + 1)
  val_top1, weight_decay, best_epochs = best
  train_x, test_x = _standardize(train_features, test_features)
  # Full-batch Adam is deterministic, so the first `best_epochs` of this fit are the honest
  # probe; the maximum over all its epochs is the official protocol's number.
  _, (test_curve,) = fit_linear_probe(train_x, train_labels, num_classes, weight_decay,
                                      epochs, eval_sets=((test_x, test_labels),))
  return {"linear_top1": float(test_curve[best_epochs - 1]), "linear_val_top1": val_top1,
          "linear_weight_decay": weight_decay, "linear_epochs": best_epochs,
          "linear_official_best_test_epoch_top1": float(test_curve.max())}


def robust_accuracy(logits_fn, images: np.ndarray, labels: np.ndarray, eps, clip, steps: int,
                    key: jax.Array, batch_size: int = 250) -> float:
  """Accuracy (percent) under an L-inf attack through `logits_fn` (encoder + probe).

  steps = 1: FGSM (step eps, no random start); steps > 1: PGD with step eps/4 and a random
  start. eps, clip: per-channel, in normalised units (adcl.step.attack_bounds converts pixels).
  """
  from adcl import adversarial  # The training attack, reused.

  @jax.jit
  def attacked_correct(x, y, key):
    loss_fn = lambda v: optax.softmax_cross_entropy_with_integer_labels(logits_fn(v), y).mean()
    if steps == 1:
      x_adv = jnp.clip(adversarial.fgsm(loss_fn, x, eps), clip[0], clip[1])
    else:
      x_adv = adversarial.pgd(loss_fn, x, eps, steps, eps / 4, True, key, clip)
    return jnp.sum(jnp.argmax(logits_fn(x_adv), -1) == y)

  correct = 0
  for start in range(0, len(images), batch_size):
    x, y = images[start:start + batch_size], labels[start:start + batch_size]
    pad = batch_size - len(x)
    x = np.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
    y_padded = np.pad(y, (0, pad), constant_values=-1)  # Padded rows never count as correct.
    correct += int(attacked_correct(jnp.asarray(x), jnp.asarray(y_padded),
                                    jax.random.fold_in(key, start)))
  return 100.0 * correct / len(images)


def evaluate_workdir(workdir: str, step: Optional[int] = None, **kwargs) -> dict:
  """`evaluate_run` of checkpoint `step` (default: the latest) of `workdir`."""
  from adcl import inspect
  return evaluate_run(inspect.load(workdir, step), **kwargs)


def evaluate_run(run, robust_examples: int = 1000, robust_eps_pixels: tuple = (8 / 255,)) -> dict:
  """kNN (backbone and projector), the linear probe and its robust accuracy for an
  `adcl.inspect.Run`. Writes nothing; `main` writes `workdir/eval.json` and the figures.

  robust_examples: test images attacked (FGSM and PGD-20 at the training eps and at each of
  `robust_eps_pixels`); 0 skips the attacks.
  """
  from adcl import step as step_lib

  config, model = run.config, run.model
  state = {"params": run.params, "batch_stats": run.batch_stats}
  train_images, train_labels = run.load_split("train")
  test_images, test_labels = run.load_split("test")
  train_x, test_x = run.normalize(train_images), run.normalize(test_images)
  result = {"step": run.step, "test_images": int(len(test_labels))}
  # One forward pass per image gives both kinds of features.
  (train_h, train_z), (test_h, test_z) = (run.embed_normalized(x, "both") for x in (train_x, test_x))
  features = {"backbone": (train_h, test_h), "embedding": (train_z, test_z)}
  for kind, (train_f, test_f) in features.items():
    result[f"knn_top1_{kind}"] = run.knn(train_f, train_labels, test_f, test_labels)
  result.update(linear_probe(features["backbone"][0], train_labels, features["backbone"][1],
                             test_labels))
  if robust_examples <= 0:  # Robustness skipped (a study that only compares accuracy).
    return result
  # Robustness: refit the selected probe on all training features and attack encoder + probe.
  train_f, _ = features["backbone"]
  mean, std = _feature_stats(train_f)
  num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  probe, _ = fit_linear_probe((train_f - mean) / std, train_labels, num_classes,
                              result["linear_weight_decay"], result["linear_epochs"])

  def logits_fn(x):
    h, _ = model.apply({"params": state["params"], "batch_stats": state["batch_stats"]}, x,
                       train=False, adv=False)
    return ((h - mean) / std) @ probe["w"] + probe["b"]

  channels = test_x.shape[-1]
  subset = slice(0, min(robust_examples, len(test_labels)))
  key = jax.random.PRNGKey(0)
  eps_list = sorted(set(robust_eps_pixels) | {_training_eps_pixels(config, channels)})
  for eps_pixels in eps_list:
    attack_config = config.copy_and_resolve_references()
    attack_config.adv.eps, attack_config.adv.eps_units = eps_pixels, "pixel"
    eps, _, clip = step_lib.attack_bounds(attack_config, channels)
    for name, steps in (("fgsm", 1), ("pgd20", 20)):
      result[f"robust_{name}_eps{eps_pixels * 255:.2f}_top1"] = robust_accuracy(
          logits_fn, test_x[subset], test_labels[subset], eps, clip, steps, key)
  result["robust_examples"] = subset.stop
  return result


def _training_eps_pixels(config, channels: int) -> float:
  """The training eps in [0, 1] pixel units (the first channel's, if it differs per channel)."""
  if config.adv.eps_units == "pixel":
    return float(config.adv.eps)
  std = np.broadcast_to(np.asarray(config.data.std, np.float32), (channels,))
  return float(config.adv.eps * std[0])


def main(argv):
  import json
  import sys

  from absl import flags

  from adcl import inspect, paths

  del argv
  f = flags.FLAGS
  try:
    run = inspect.load(f.workdir, f.checkpoint if f.checkpoint >= 0 else None)
    result = evaluate_run(run, f.robust_examples)
  except (ValueError, OSError) as error:
    print(f"adcl.evaluate: error: {str(error).splitlines()[0]}", file=sys.stderr)
    sys.exit(1)
  # Written whole, then renamed: a crash leaves the previous file.
  path = paths.write_atomic(paths.resolve(f.workdir) / "eval.json", json.dumps(result, indent=1))
  width = max(len(k) for k in result)
  for key, value in result.items():
    print(f"{key:<{width}}  {value:.2f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
  print(f"wrote {path}")
  if f.figures:
    images, labels = run.load_split("test", limit=f.figure_examples)
    for written in run.write_figures(images, labels):
      print(f"wrote {written}")


if __name__ == "__main__":
  from absl import app, flags

  flags.DEFINE_string("workdir", None, "Training workdir (with checkpoints/).", required=True)
  flags.DEFINE_integer("checkpoint", -1, "Step to evaluate (default: the latest).")
  flags.DEFINE_integer("robust_examples", 1000,
                       "Test images attacked for robust accuracy (0: no attack).")
  flags.DEFINE_bool("figures", True, "Also write the run's figures to WORKDIR/figures/.")
  flags.DEFINE_integer("figure_examples", 2000, "Test images in the embedding projection.")
  app.run(main)
