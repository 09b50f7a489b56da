"""Contrastive losses of CLAE, written as N-way classification over the batch (docs/method.md §1).

Each loss is a pure function `(z1, z2, temperature) -> scalar` of the *global* batch:
`z1`, `z2` are `[N, D]` float arrays, L2-normalised rows, row i of `z1` and row i of `z2`
being two views of image i. Under `jax.jit` with the batch sharded over devices, every
negative of every device enters each row's softmax; no gather layer is needed.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

LossFn = Callable[[jax.Array, jax.Array, float], jax.Array]

# Logit given to masked-out entries: exp() of it is 0 in float32 and it stays finite,
# so masked rows never produce inf - inf = NaN.
_MASKED = -1e9


def plain(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
  """One-direction instance classification: anchors `z1[i]`, class weights `z2[j]`.

  Args:
    z1: [N, D] anchors. z2: [N, D] weights; the target class of row i is i.
  Returns:
    scalar, `-mean_i log softmax_j(z1_i . z2_j / tau)[i]`.
  """
  logits = z1 @ z2.T / temperature
  labels = jnp.arange(z1.shape[0])
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def simclr(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
  """NT-Xent over the 2N views: positive of row i is i +- N, self-similarity masked.

  Args:
    z1, z2: [N, D] L2-normalised embeddings of the two views.
  Returns:
    scalar, cross-entropy averaged over the 2N rows of the [2N, 2N] logits.
  """
  n = z1.shape[0]
  z = jnp.concatenate([z1, z2], axis=0)
  logits = z @ z.T / temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), _MASKED, logits)
  labels = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def uel(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
  """Invariant-and-spreading loss (Ye et al. 2019) as in the official BatchCriterion.

  With x = concat(z1, z2) ([2N, D]) and the column side under stop_gradient (the official
  code detaches it), `P_ij = exp(x_i . sg(x_j) / tau) / sum_{k != i} exp(x_i . sg(x_k) / tau)`
  and `loss = -(1/2N) sum_i [log P_{i,i'} + sum_{j != i, i'} log(1 - P_ij)]`.

  Args:
    z1, z2: [N, D] L2-normalised embeddings of the two views.
  Returns:
    scalar loss.
  """
  n = z1.shape[0]
  x = jnp.concatenate([z1, z2], axis=0)
  logits = x @ jax.lax.stop_gradient(x).T / temperature
  self_mask = jnp.eye(2 * n, dtype=bool)
  log_p = jax.nn.log_softmax(jnp.where(self_mask, _MASKED, logits), axis=1)
  partner = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  positive_mask = jax.nn.one_hot(partner, 2 * n, dtype=bool)
  log_p_positive = jnp.sum(jnp.where(positive_mask, log_p, 0.0), axis=1)
  # log(1 - P) from log P without cancellation when P is close to 1.
  log_not_p = jnp.log1p(-jnp.exp(jnp.minimum(log_p, -1e-7)))
  negatives = ~(self_mask | positive_mask)
  log_not_p_negatives = jnp.sum(jnp.where(negatives, log_not_p, 0.0), axis=1)
  return -jnp.mean(log_p_positive + log_not_p_negatives)


LOSSES: dict[str, LossFn] = {"plain": plain, "simclr": simclr, "uel": uel}

# Default temperature of each loss in the official scripts.
DEFAULT_TEMPERATURE = {"plain": 0.1, "simclr": 0.5, "uel": 0.1}


def get(name: str) -> LossFn:
  """The loss called `name`; a clear error for an unknown one."""
  if name not in LOSSES:
    raise ValueError(f"config.loss.name={name!r} is not a loss; choose one of {sorted(LOSSES)}")
  return LOSSES[name]
