"""Accuracy of a classifier (encoder + linear probe) under an L-inf attack on its input."""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adcl import adversarial
from adcl.evaluation.batched import batched_apply


def robust_accuracy(logits_fn: Callable, variables, images: np.ndarray, labels: np.ndarray,
                    eps, clip, steps: int, key: jax.Array, batch_size: int = 250) -> float:
  """Accuracy (percent) under the training attack's FGSM or PGD through `logits_fn`.

  Args:
    logits_fn: `(variables, x [B, ...]) -> logits [B, K]`, inference mode (rows independent).
    variables: its weights, passed to the compiled attack as arguments, not constants.
    images: [N, ...] normalised inputs; labels: [N] int.
    eps, clip: radius and valid range `(low, high)`, per channel in normalised units.
    steps: 1 = FGSM (step eps, no random start, then clipped); > 1 = PGD with step eps/4 and a
      random start, every iterate clipped. Batch b's random start uses fold_in(key, b's first
      row index).
  """
  correct = batched_apply(
      lambda x, y, i: attacked_correct(logits_fn, steps, variables, x, y, i, eps, clip, key),
      [images, np.asarray(labels, np.int32), np.arange(len(images))], batch_size)
  return 100.0 * float(np.sum(correct)) / len(images)


# Compiled once per (logits_fn, steps): every radius and every batch of an evaluation reuse it.
@functools.partial(jax.jit, static_argnames=("logits_fn", "steps"))
def attacked_correct(logits_fn: Callable, steps: int, variables, x, y, row_index, eps, clip,
                     key) -> jax.Array:
  """bool [B]: whether `logits_fn` still classifies each attacked row of x as y."""
  loss_fn = lambda v: optax.softmax_cross_entropy_with_integer_labels(
      logits_fn(variables, v), y).mean()
  if steps == 1:
    x_adv = jnp.clip(adversarial.fgsm(loss_fn, x, eps), clip[0], clip[1])
  else:
    x_adv = adversarial.pgd(loss_fn, x, eps, steps, eps / 4, True,
                            jax.random.fold_in(key, row_index[0]), clip)
  return jnp.argmax(logits_fn(variables, x_adv), -1) == y
