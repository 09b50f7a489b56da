"""A batch-norm pair: one for clean inputs, one for adversarial inputs (docs/method.md §3).

AdvProp-style: convolution and dense weights are shared, but every normalisation layer has a
clean and an adversarial copy, each with its own scale/bias and running statistics. Both
copies live in the same `batch_stats` collection, under `clean` and `adv`, so one pytree
holds both and a checkpoint saves both.
"""

import flax.linen as nn
import jax

# Flax momentum = 1 - PyTorch momentum.  Clean BN: PyTorch default 0.1; adversarial BN: the
# official scripts' `bn_adv_momentum` 0.01.
CLEAN_MOMENTUM = 0.9
ADV_MOMENTUM = 0.99


class DualBatchNorm(nn.Module):
  """Batch norm with a clean and an adversarial parameter/statistics set, chosen per call."""

  clean_momentum: float = CLEAN_MOMENTUM
  adv_momentum: float = ADV_MOMENTUM
  epsilon: float = 1e-5  # PyTorch's default, for parity with the official models.
  scale_init: nn.initializers.Initializer = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, adv: bool) -> jax.Array:
    """x: [N, ..., C]. train: batch statistics (and their update) vs running ones."""
    clean = nn.BatchNorm(
        use_running_average=not train, momentum=self.clean_momentum, epsilon=self.epsilon,
        scale_init=self.scale_init, name="clean")
    adversarial = nn.BatchNorm(
        use_running_average=not train, momentum=self.adv_momentum, epsilon=self.epsilon,
        scale_init=self.scale_init, name="adv")
    if self.is_initializing():
      # Create both sets whatever `adv` says, so every checkpoint has the same tree.
      clean_out, adv_out = clean(x), adversarial(x)
      return adv_out if adv else clean_out
    return adversarial(x) if adv else clean(x)
