"""The compiled step: fused generation = official two-forward form, sharding invariance,
the baseline switch, which passes touch which BN statistics, one compilation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adcl import build, configs, losses, step as step_lib
from conftest import tiny_config


def setup(config, num_devices=1):
  """The trainer of `config` (SGD 0.05, momentum 0.9) on the first `num_devices` devices."""
  mesh = step_lib.data_mesh(jax.devices()[:num_devices])
  trainer = build.trainer(config, (8, 8, 3), steps_per_epoch=100, total_steps=100, mesh=mesh)
  return trainer, trainer.init_state()


def generate(config, state, model, x1, key=None):
  """adversarial_view with the config's attack, as the step makes it."""
  forward = step_lib.make_forward(model)
  return step_lib.adversarial_view(forward, state.params, state.batch_stats, x1,
                                   state.rng if key is None else key, build.attack(config, 3),
                                   losses.get(config.loss.name), config.loss.temperature)


def batches(count, n=16, seed=0):
  rng = np.random.default_rng(seed)
  return [{k: rng.normal(size=(n, 8, 8, 3)).astype(np.float32) for k in ("view1", "view2")}
          for _ in range(count)]


def run_steps(config, num_devices, data):
  trainer, state = setup(config, num_devices)
  for batch in data:
    state, metrics = trainer.train_step(state, jax.device_put(batch, trainer.data_sharding))
  return jax.device_get((state.params, state.batch_stats, metrics)), trainer.train_step


@pytest.fixture
def config(tmp_path):
  c = tiny_config(str(tmp_path))
  c.data.mean, c.data.std = (0.5,), (0.5,)
  c.optim.name, c.optim.lr, c.optim.weight_decay = "sgd", 0.05, 0.0
  c.optim.decay_epochs, c.optim.decay_factors = (), ()
  return c


@pytest.mark.parametrize("loss_name", ["plain", "simclr", "uel"])
def test_fused_generation_equals_official_two_forward_form(config, loss_name):
  config.loss.name = loss_name
  trainer, state = setup(config)
  model = trainer.model
  forward = step_lib.make_forward(model)
  x1 = jnp.asarray(batches(1)[0]["view1"])
  loss_of, tau, eps = losses.get(loss_name), config.loss.temperature, config.adv.eps

  # The official gen_adv: an anchor forward of x1, then a forward of x1 + delta, both with the
  # adversarial BN in training mode; delta = eps * sign(grad at delta = 0).
  anchor, stats = forward(state.params, state.batch_stats, x1, True)

  def official(delta):
    perturbed, new_stats = forward(state.params, stats, x1 + delta, True)
    return loss_of(anchor, perturbed, tau), new_stats

  grad, official_stats = jax.grad(official, has_aux=True)(jnp.zeros_like(x1))
  official_x_adv = x1 + eps * jnp.sign(grad)

  x_adv, _, fused_stats = generate(config, state, model, x1, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(np.asarray(x_adv), np.asarray(official_x_adv))
  assert float(jnp.max(jnp.abs(x_adv - x1))) == pytest.approx(eps, rel=1e-5)
  chex_leaves = zip(jax.tree.leaves(fused_stats), jax.tree.leaves(official_stats))
  for fused, reference in chex_leaves:
    np.testing.assert_allclose(fused, reference, rtol=1e-5, atol=1e-7)


# 4 devices with the attack on half of each batch (adv.fraction), 8 with the paper's whole batch.
@pytest.mark.parametrize("num_devices, fraction", [(4, 0.5), (8, 1.0)])
def test_sharded_step_equals_single_device_step(config, num_devices, fraction):
  config.adv.fraction = fraction
  data = batches(2)
  (params_1, stats_1, metrics_1), _ = run_steps(config, 1, data)
  (params_n, stats_n, metrics_n), _ = run_steps(config, num_devices, data)
  for a, b in zip(jax.tree.leaves((params_1, stats_1)), jax.tree.leaves((params_n, stats_n))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  for key in ("loss", "loss_clean", "loss_adv", "loss_gen"):
    np.testing.assert_allclose(metrics_1[key], metrics_n[key], rtol=1e-5)


def test_baseline_switch_and_batch_norm_bookkeeping(config):
  data = batches(1)
  _, initial = setup(config)
  initial_stats = jax.device_get(initial.batch_stats)
  for enabled in (False, True):
    config.adv.enabled = enabled
    (_, stats, metrics), _ = run_steps(config, 1, data)
    stem = lambda s, which: s["encoder"]["stem_bn"][which]["mean"]
    # The clean set always moves (two clean forwards); the adversarial set only with the attack.
    assert not np.allclose(stem(stats, "clean"), stem(initial_stats, "clean"))
    assert np.allclose(stem(stats, "adv"), stem(initial_stats, "adv")) != enabled
    if enabled:
      assert metrics["loss"] == pytest.approx(metrics["loss_clean"] + metrics["loss_adv"], rel=1e-6)
      assert metrics["loss_gen"] > 0
    else:
      assert metrics["loss_adv"] == 0 and metrics["loss"] == metrics["loss_clean"]


def test_step_compiles_once(config):
  _, train_step = run_steps(config, 2, batches(3))
  assert train_step._cache_size() == 1


def test_pgd_in_the_step_keeps_the_ball(config):
  config.adv.method = "pgd"
  config.adv.pgd_steps = 2
  config.adv.clip_to_pixel_range = True
  (params, _, metrics), _ = run_steps(config, 1, batches(1))
  assert np.isfinite(metrics["loss"]) and metrics["loss_adv"] > 0


def test_repeat_bn_update_matches_repeated_ema():
  old, batch_mean, m = np.array([0.3, -1.0]), np.array([2.0, 0.5]), 0.99
  once = m * old + (1 - m) * batch_mean
  twice = m * once + (1 - m) * batch_mean
  np.testing.assert_allclose(step_lib.repeat_bn_update(old, once, 2, m), twice, rtol=1e-12)
  np.testing.assert_allclose(step_lib.repeat_bn_update(old, once, 1, m), once, rtol=1e-12)
  np.testing.assert_allclose(step_lib.repeat_bn_update(old, once, 0, m), old)


def test_shared_delta_in_the_step_perturbs_every_image_alike(config):
  trainer, state = setup(config, 2)
  x1 = jnp.asarray(batches(1)[0]["view1"])
  views = {}
  for shared in (False, True):
    config.adv.shared_delta = shared
    views[shared], _, _ = generate(config, state, trainer.model, x1)
  delta = np.asarray(views[True] - x1)
  np.testing.assert_allclose(delta, np.broadcast_to(delta[:1], delta.shape), atol=1e-6)
  assert np.abs(delta).max() == pytest.approx(0.03, rel=1e-5)
  per_image = np.asarray(views[False] - x1)
  assert not np.allclose(per_image[0], per_image[1])
  config.adv.method = "pgd"
  with pytest.raises(ValueError, match="adv.shared_delta"):
    configs.validate(config, 1)


def test_adversarial_fraction_attacks_and_trains_on_the_first_rows_only(config):
  config.adv.fraction = 0.25  # 4 of the 16 images.
  trainer, state = setup(config)
  batch = batches(1)[0]
  x1, x2 = jnp.asarray(batch["view1"]), jnp.asarray(batch["view2"])
  attacked = step_lib.attacked_rows(x1, 0.25)
  np.testing.assert_array_equal(attacked, x1[:4])
  rng = jax.random.fold_in(state.rng, state.step)
  x_adv, gen_loss, stats = generate(config, state, trainer.model, attacked, rng)
  # The perturbed rows are the first four, each moved by eps.
  assert x_adv.shape == (4, 8, 8, 3)
  np.testing.assert_allclose(np.abs(np.asarray(x_adv - x1[:4])), 0.03, rtol=1e-5)
  # The generation sees only those rows: changing a later row leaves it as it is.
  changed_late = x1.at[10].add(1.0)
  changed_early = x1.at[1].add(1.0)
  late_loss = generate(config, state, trainer.model, step_lib.attacked_rows(changed_late, 0.25), rng)[1]
  early_loss = generate(config, state, trainer.model, step_lib.attacked_rows(changed_early, 0.25), rng)[1]
  assert float(late_loss) == float(gen_loss) and float(early_loss) != float(gen_loss)
  # The adversarial term pairs the four rows' clean embeddings with their adversarial ones.
  forward = step_lib.make_forward(trainer.model)
  loss_fn, tau = losses.get(config.loss.name), config.loss.temperature
  z1, after_clean = forward(state.params, stats, x1, False)
  _, after_clean = forward(state.params, after_clean, x2, False)
  z_adv, _ = forward(state.params, after_clean, x_adv, True)
  expected_adv_term = loss_fn(z1[:4], z_adv, tau)
  _, (_, _, adv_term) = step_lib.make_objective(forward, loss_fn, tau)(
      state.params, stats, x1, x2, x_adv)
  np.testing.assert_allclose(adv_term, expected_adv_term, rtol=1e-6)
  # ... and the compiled step is exactly this composition.
  _, metrics = trainer.train_step(state, jax.device_put(batch, trainer.data_sharding))
  np.testing.assert_allclose(metrics["loss_gen"], gen_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss_adv"], adv_term, rtol=1e-5)


def test_adversarial_fraction_one_is_the_full_step_bit_for_bit(config):
  """Fraction 1.0 compiles the paper's step: the same numbers as the step written out with the
  adversarial view of the whole batch."""
  trainer, state = setup(config)
  attack = build.attack(config, 3)
  assert attack.fraction == 1.0
  forward = step_lib.make_forward(trainer.model)
  loss_fn, tau = losses.get(config.loss.name), config.loss.temperature
  objective = step_lib.make_objective(forward, loss_fn, tau, attack.alpha)

  @jax.jit
  def full_batch_step(state, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    x_adv, _, stats = step_lib.adversarial_view(forward, state.params, state.batch_stats,
                                                batch["view1"], rng, attack, loss_fn, tau)
    (loss, (stats, _, _)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params, stats, batch["view1"], batch["view2"], x_adv)
    updates, _ = trainer.tx.update(grads, state.opt_state, state.params)
    return loss, optax.apply_updates(state.params, updates), stats

  batch = jax.device_put(batches(1)[0], trainer.data_sharding)
  expected = jax.device_get(full_batch_step(state, batch))
  new_state, metrics = trainer.train_step(state, batch)
  actual = jax.device_get((metrics["loss"], new_state.params, new_state.batch_stats))
  for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)


def test_adversarial_fraction_must_leave_a_negative(config):
  config.adv.fraction = 1 / 16  # One image of 16: no negative for the adversarial term.
  with pytest.raises(ValueError, match="config.adv.fraction"):
    configs.validate(config, 1)
  config.adv.fraction = 0.0
  with pytest.raises(ValueError, match="config.adv.fraction: must be in"):
    configs.validate(config, 1)


def test_device_views_step_draws_the_views_of_its_view_key(config):
  """The step fed uint8 images equals the same step fed the views adcl.data.views draws with
  the step's view key. (That views do not depend on the sharding is tests/test_views.py's.)"""
  from adcl.data import views

  config.data.mean, config.data.std = (0.5,) * 3, (0.5,) * 3
  images = np.random.default_rng(3).integers(0, 256, (16, 12, 12, 3), dtype=np.uint8)
  trainer, state = setup(config, 2)
  key = jax.random.fold_in(jax.random.fold_in(state.rng, 0), step_lib.VIEW_STREAM)
  view1, view2 = views.two_views(jnp.asarray(images), key, views.recipe(config.data, 3))
  _, host_state = setup(config, 2)
  _, device_metrics = trainer.train_step(
      state, jax.device_put({"images": images}, trainer.data_sharding))
  _, host_metrics = trainer.train_step(
      host_state, jax.device_put({"view1": view1, "view2": view2}, trainer.data_sharding))
  for name in ("loss", "loss_adv", "grad_norm"):
    np.testing.assert_allclose(device_metrics[name], host_metrics[name], rtol=1e-5)
