"""Each loss equals a direct numpy transcription of its formula in docs/method.md §1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcl import losses


def unit_rows(rng, n, d):
  x = rng.normal(size=(n, d))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def log_softmax_np(a):
  a = a - a.max(axis=1, keepdims=True)
  return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


def plain_np(z1, z2, tau):
  n = len(z1)
  return -np.mean([log_softmax_np(z1 @ z2.T / tau)[i, i] for i in range(n)])


def simclr_np(z1, z2, tau):
  n = len(z1)
  z = np.concatenate([z1, z2])
  total = 0.0
  for i in range(2 * n):
    positive = (i + n) % (2 * n)
    others = [j for j in range(2 * n) if j != i]
    logits = np.array([z[i] @ z[j] / tau for j in others])
    total += -(z[i] @ z[positive] / tau - np.log(np.exp(logits).sum()))
  return total / (2 * n)


def uel_np(z1, z2, tau):
  n = len(z1)
  x = np.concatenate([z1, z2])
  total = 0.0
  for i in range(2 * n):
    partner = (i + n) % (2 * n)
    denominator = sum(np.exp(x[i] @ x[k] / tau) for k in range(2 * n) if k != i)
    p = lambda j: np.exp(x[i] @ x[j] / tau) / denominator
    total += np.log(p(partner)) + sum(np.log(1 - p(j)) for j in range(2 * n) if j not in (i, partner))
  return -total / (2 * n)


@pytest.mark.parametrize("name,reference", [("plain", plain_np), ("simclr", simclr_np), ("uel", uel_np)])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_loss_matches_numpy_formula(name, reference, tau):
  rng = np.random.default_rng(0)
  z1, z2 = unit_rows(rng, 6, 5), unit_rows(rng, 6, 5)
  got = float(losses.get(name)(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), tau))
  np.testing.assert_allclose(got, reference(z1, z2, tau), rtol=2e-5)


def test_uel_gradient_stops_at_the_columns():
  """The official BatchCriterion detaches the column side: d loss / d x equals the gradient of
  the formula with the columns held fixed (numerical check on the row side only)."""
  rng = np.random.default_rng(1)
  z1, z2 = (jnp.asarray(unit_rows(rng, 4, 3), jnp.float32) for _ in range(2))
  grad = jax.grad(losses.uel, argnums=(0, 1))(z1, z2, 0.5)

  def rows_only(r1, r2):
    x, fixed = jnp.concatenate([r1, r2]), jnp.concatenate([z1, z2])
    logits = x @ fixed.T / 0.5
    n2 = x.shape[0]
    mask = jnp.eye(n2, dtype=bool)
    log_p = jax.nn.log_softmax(jnp.where(mask, -1e9, logits), axis=1)
    partner = (jnp.arange(n2) + n2 // 2) % n2
    pos = log_p[jnp.arange(n2), partner]
    neg = jnp.where(mask | jax.nn.one_hot(partner, n2, dtype=bool), 0.0, jnp.log1p(-jnp.exp(log_p)))
    return -jnp.mean(pos + neg.sum(1))

  expected = jax.grad(rows_only, argnums=(0, 1))(z1, z2)
  for g, e in zip(grad, expected):
    np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)


def test_unknown_loss_names_the_key():
  with pytest.raises(ValueError, match="config.loss.name='nce'"):
    losses.get("nce")
