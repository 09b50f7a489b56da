"""The attack: FGSM written out by hand, the whole-batch effect, PGD's ball and clamp."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcl import adversarial, losses


def contrastive_loss_of_input(w):
  """x [N, D] -> loss of a linear encoder's normalised embeddings against the clean ones."""

  def embed(x):
    z = x @ w
    return z / jnp.linalg.norm(z, axis=1, keepdims=True)

  def loss_fn(x_1):
    return lambda x: losses.plain(jax.lax.stop_gradient(embed(x_1)), embed(x), 0.1)

  return loss_fn


def test_fgsm_equals_signed_gradient_by_hand():
  # loss(x) = sum(c * x) + sum(x**2): gradient c + 2x, written out by hand.
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  x_adv = adversarial.fgsm(lambda v: jnp.sum(c * v) + jnp.sum(v**2), x, 0.03)
  np.testing.assert_allclose(x_adv, x + 0.03 * np.sign(c + 2 * x), rtol=1e-6)


def test_fgsm_per_channel_eps_and_aux():
  x = jnp.zeros((2, 2, 2, 3))
  eps = jnp.array([0.1, 0.2, 0.3])
  x_adv, aux = adversarial.fgsm(lambda v: (jnp.sum(v), 7.0), x, eps, has_aux=True)
  np.testing.assert_allclose(x_adv[0, 0, 0], [0.1, 0.2, 0.3], rtol=1e-6)
  assert aux == 7.0


def test_changing_one_image_changes_another_images_perturbation():
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.normal(size=(64, 16)), jnp.float32)
  x = jnp.asarray(rng.normal(size=(8, 64)), jnp.float32)
  # Image 3 becomes a hard negative of image 0: a near copy of it.
  x_changed = x.at[3].set(x[0] + 0.3 * jnp.asarray(rng.normal(size=64), jnp.float32))
  loss_fn = contrastive_loss_of_input(w)
  delta = adversarial.fgsm(loss_fn(x), x, 0.01) - x
  delta_changed = adversarial.fgsm(loss_fn(x_changed), x_changed, 0.01) - x_changed
  # Image 0 is the same in both batches, yet its perturbation moved: the batch is one problem.
  assert not np.allclose(delta[0], delta_changed[0])
  # A per-image loss (no batch coupling) would not do that.
  per_image = lambda v: jnp.sum(jnp.tanh(v @ w) ** 2)
  np.testing.assert_array_equal(adversarial.fgsm(per_image, x, 0.01)[0],
                                adversarial.fgsm(per_image, x_changed, 0.01)[0])


def test_shared_fgsm_is_one_majority_vote_perturbation_for_the_batch():
  rng = np.random.default_rng(3)
  w = jnp.asarray(rng.normal(size=(12, 6)), jnp.float32)
  x = jnp.asarray(rng.normal(size=(5, 12)), jnp.float32)  # Odd batch: no tied votes.
  loss_fn = contrastive_loss_of_input(w)(x)
  signs = np.sign(np.asarray(jax.grad(loss_fn)(x)))
  delta = np.asarray(adversarial.fgsm(loss_fn, x, 0.02, shared=True) - x)
  # Every image gets the same delta: eps times the per-pixel majority of the images' signs.
  np.testing.assert_allclose(delta, np.broadcast_to(0.02 * np.sign(signs.sum(0)), delta.shape),
                             atol=1e-6)
  # The per-image perturbations do differ between images, so sharing changed something.
  per_image = np.asarray(adversarial.fgsm(loss_fn, x, 0.02) - x)
  assert not np.allclose(per_image[0], per_image[1])


def test_pgd_stays_in_ball_and_pixel_range():
  rng = np.random.default_rng(2)
  w = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  x = jnp.asarray(rng.uniform(-1, 1, size=(5, 6)), jnp.float32)
  loss_fn = contrastive_loss_of_input(w)(x)
  x_adv = adversarial.pgd(loss_fn, x, 0.1, steps=5, step_size=0.04, random_start=True,
                          key=jax.random.PRNGKey(0), clip=(-0.95, 0.95))
  assert float(jnp.max(jnp.abs(x_adv - x))) <= 0.1 + 1e-6
  assert float(x_adv.min()) >= -0.95 and float(x_adv.max()) <= 0.95
  assert float(loss_fn(x_adv)) > float(loss_fn(x))


def test_pgd_one_step_without_start_is_fgsm():
  rng = np.random.default_rng(3)
  w = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  x = jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)
  loss_fn = contrastive_loss_of_input(w)(x)
  np.testing.assert_allclose(adversarial.pgd(loss_fn, x, 0.05, 1, 0.05),
                             adversarial.fgsm(loss_fn, x, 0.05), rtol=1e-6)


def test_pgd_random_start_needs_a_key():
  with pytest.raises(ValueError, match="PRNG key"):
    adversarial.pgd(jnp.sum, jnp.zeros(3), 0.1, 1, 0.1, random_start=True)
