"""Encoder + projection head: the f of docs/method.md §1, output L2-normalised."""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adcl.models.resnet import ARCHITECTURES, ResNet


class Projector(nn.Module):
  """Dense layers with ReLU between them; `features=(128,)` is the Plain/UEL linear head,
  `(512, 64)` the SimCLR MLP (512 -> 512 -> ReLU -> 64)."""

  features: Sequence[int]

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    """h: [N, C] -> [N, features[-1]]."""
    for index, width in enumerate(self.features):
      if index > 0:
        h = nn.relu(h)
      h = nn.Dense(width, name=f"dense_{index}")(h)
    return h


class ContrastiveModel(nn.Module):
  """ResNet trunk and projector. Returns `(h, z)`: h [N, C] pooled features, z [N, D] unit rows."""

  architecture: str = "resnet18"
  width: int = 64
  stem: str = "cifar"
  projector: Sequence[int] = (128,)
  dtype: Any = jnp.float32
  remat: bool = False

  def setup(self):
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f"config.model.architecture={self.architecture!r}; "
                       f"choose one of {sorted(ARCHITECTURES)}")
    self.encoder = ResNet(width=self.width, stem=self.stem, dtype=self.dtype,
                          remat=self.remat,
                          **ARCHITECTURES[self.architecture])
    self.head = Projector(self.projector)

  def __call__(self, x: jax.Array, train: bool, adv: bool = False):
    """x: [N, H, W, C] normalised images; adv picks the adversarial batch-norm set."""
    h = self.encoder(x, train, adv)
    z = self.head(h)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    return h, z
