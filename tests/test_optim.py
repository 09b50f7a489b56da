"""The optimisers of the recipes: SGD step decay with absolute factors, Adam, LARS."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adcl import configs, optim


def test_step_decay_uses_absolute_factors():
  schedule = optim.step_decay_schedule(0.03, (120, 160, 200), (0.1, 0.05, 0.01), 10)
  for epoch, expected in [(0, 0.03), (119, 0.03), (120, 0.003), (159, 0.003), (160, 0.0015),
                          (200, 0.0003), (300, 0.0003)]:
    assert float(schedule(epoch * 10)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adam", "lars"])
def test_each_optimizer_takes_a_step(name):
  c = configs.base()
  c.optim.name = name
  tx = optim.make_optimizer(c, steps_per_epoch=10, total_steps=100)
  params = {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)}
  grads = {"kernel": jnp.full((3, 3), 0.5), "bias": jnp.full(3, 0.5)}
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  assert float(new["kernel"][0, 0]) < 1.0 or name == "lars"  # LARS warms up from lr 0.
  assert all(np.isfinite(v).all() for v in new.values())


def test_sgd_weight_decay_is_coupled_l2():
  c = configs.base()
  c.optim.momentum = 0.0
  tx = optim.make_optimizer(c, steps_per_epoch=10, total_steps=100)
  params = {"w": jnp.array([2.0])}
  updates, _ = tx.update({"w": jnp.array([0.0])}, tx.init(params), params)
  assert float(updates["w"][0]) == pytest.approx(-0.03 * 5e-4 * 2.0, rel=1e-6)


def test_the_learning_rate_is_the_optimisers_schedule():
  from adcl import configs
  c = configs.base()
  c.optim.name, c.optim.lr, c.optim.schedule = "adam", 0.01, "cosine"
  rate = optim.learning_rate(c, steps_per_epoch=10, total_steps=4)
  np.testing.assert_allclose([rate(n) for n in range(4)],
                             [0.01 * 0.5 * (1 + np.cos(np.pi * n / 4)) for n in range(4)], rtol=1e-6)
  c.optim.name, c.optim.warmup_epochs = "lars", 1  # 2 warm-up updates, then cosine.
  rate = optim.learning_rate(c, steps_per_epoch=2, total_steps=6)
  assert float(rate(0)) == 0.0 and float(rate(2)) == pytest.approx(0.01)
