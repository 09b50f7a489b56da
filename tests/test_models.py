"""The encoders: exact parameter counts of the standard nets, both stems, the BN pair."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from adcl.models import ContrastiveModel


def trunk_parameter_count(architecture, stem, size, width=64):
  """Encoder parameters without the adversarial BN copies (shapes only: nothing is run)."""
  model = ContrastiveModel(architecture, width, stem, (128,))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                jnp.zeros((1, size, size, 3)), train=True))
  flat = traverse_util.flatten_dict(variables["params"]["encoder"])
  return sum(int(np.prod(v.shape)) for k, v in flat.items() if "adv" not in k)


@pytest.mark.parametrize("architecture,stem,size,expected", [
    # The CIFAR ResNet-18 of the official code (kuangliu layout) without its classifier.
    ("resnet18", "cifar", 32, 11_168_832),
    # torchvision's resnet18 / resnet34 / resnet50 without the fc layer.
    ("resnet18", "imagenet", 64, 11_176_512),
    ("resnet34", "imagenet", 64, 21_284_672),
    ("resnet50", "imagenet", 64, 23_508_032),
])
def test_parameter_counts_match_the_reference_nets(architecture, stem, size, expected):
  assert trunk_parameter_count(architecture, stem, size) == expected


def test_width_multiplier_scales_channels():
  model = ContrastiveModel("resnet_small", 8, "cifar", (16,))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))  # Two different images: with
  # identical ones, training-mode batch-norm outputs zeros and z has no direction.
  variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), x, train=True))()
  (h, z), _ = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables)
  assert h.shape == (2, 64) and z.shape == (2, 16)
  np.testing.assert_allclose(jnp.linalg.norm(z, axis=1), 1.0, rtol=1e-5)


def test_clean_and_adversarial_batch_norm_are_separate():
  model = ContrastiveModel("resnet_tiny", 4, "cifar", (8,))
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
  variables = model.init(jax.random.PRNGKey(0), x, train=True)
  stem = variables["params"]["encoder"]["stem_bn"]
  assert set(stem) == {"clean", "adv"}
  # Changing the adversarial scale changes only the adversarial path.
  edited = jax.tree_util.tree_map(lambda a: a, variables)
  edited["params"]["encoder"]["stem_bn"]["adv"]["scale"] = stem["adv"]["scale"] * 3.0
  run = lambda v, adv: model.apply(v, x, train=False, adv=adv)[0]
  np.testing.assert_array_equal(run(variables, False), run(edited, False))
  assert not np.allclose(run(variables, True), run(edited, True))


def _loss_grads_stats(model, x, variables):
  """One compiled program (op by op, every op would compile on its own)."""
  return jax.jit(lambda v: _loss_grads_stats_eager(model, x, v))(variables)


def _loss_grads_stats_eager(model, x, variables):
  def loss(p):
    (h, z), updates = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                                  train=True, adv=True, mutable=["batch_stats"])
    return jnp.sum(z ** 3) + jnp.mean(h), updates["batch_stats"]
  (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
  return value, grads, stats


def test_remat_keeps_names_values_gradients_and_bn_updates():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8, 8, 3)), jnp.float32)
  plain = ContrastiveModel("resnet_tiny", width=4, projector=(8,))
  remat = ContrastiveModel("resnet_tiny", width=4, projector=(8,), remat=True)
  variables = plain.init(jax.random.PRNGKey(0), x, train=True)
  # Same parameter names: a checkpoint does not depend on the switch.
  assert (jax.tree.structure(jax.eval_shape(lambda: remat.init(jax.random.PRNGKey(0), x,
                                                                train=True)))
          == jax.tree.structure(variables))
  results = [_loss_grads_stats(m, x, variables) for m in (plain, remat)]
  for a, b in zip(*(jax.tree.leaves(r) for r in results)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_keeps_float32_parameters_and_outputs():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 8, 8, 3)), jnp.float32)
  full = ContrastiveModel("resnet_tiny", width=8, projector=(8,))
  half = ContrastiveModel("resnet_tiny", width=8, projector=(8,), dtype=jnp.bfloat16)
  variables = full.init(jax.random.PRNGKey(0), x, train=True)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(
      jax.eval_shape(lambda: half.init(jax.random.PRNGKey(0), x, train=True))))
  (h_full, _), (h_half, z_half) = (jax.jit(lambda v, m=m: m.apply(v, x, train=False))(variables)
                                   for m in (full, half))
  assert h_half.dtype == jnp.float32 and z_half.dtype == jnp.float32
  # bf16 has an 8-bit mantissa: the features agree to about 1%, not to float32 precision.
  error = float(jnp.linalg.norm(h_half - h_full) / jnp.linalg.norm(h_full))
  assert 1e-5 < error < 5e-2
  _, grads, _ = _loss_grads_stats(half, x, variables)
  assert all(g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))
             for g in jax.tree.leaves(grads))
