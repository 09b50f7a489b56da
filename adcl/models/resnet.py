"""ResNet encoders with a CIFAR or ImageNet stem, every batch-norm a clean/adversarial pair.

Every module takes `(x, train, adv)`: `train` selects batch statistics (and their update),
`adv` selects the adversarial batch-norm set (docs/method.md §3). Images are NHWC.
"""

from functools import partial
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adcl.models.batchnorm import DualBatchNorm

# He initialisation on fan-out, as torchvision's ResNet.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BasicBlock(nn.Module):
  """Two 3x3 convolutions (ResNet-18/34). Output channels: `filters`."""

  filters: int
  strides: int = 1
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool, adv: bool):
    conv = _conv(self.dtype)
    y = conv(self.filters, (3, 3), self.strides, padding=1)(x)
    y = nn.relu(DualBatchNorm()(y, train, adv))
    y = conv(self.filters, (3, 3), 1, padding=1)(y)
    y = DualBatchNorm()(y, train, adv)
    return nn.relu(y + _shortcut(x, self.filters, self.strides, conv, train, adv))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 -> 1x1 block (ResNet-50). Output channels: `4 * filters`."""

  filters: int
  strides: int = 1
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool, adv: bool):
    conv = _conv(self.dtype)
    y = nn.relu(DualBatchNorm()(conv(self.filters, (1, 1))(x), train, adv))
    y = conv(self.filters, (3, 3), self.strides, padding=1)(y)
    y = nn.relu(DualBatchNorm()(y, train, adv))
    y = DualBatchNorm()(conv(4 * self.filters, (1, 1))(y), train, adv)
    return nn.relu(y + _shortcut(x, 4 * self.filters, self.strides, conv, train, adv))


def _conv(dtype):
  """nn.Conv as every ResNet layer uses it."""
  return partial(nn.Conv, use_bias=False, kernel_init=conv_init, dtype=dtype)


def _shortcut(x, out_channels, strides, conv, train, adv):
  """Identity, or a strided 1x1 projection when the shape changes."""
  if strides == 1 and x.shape[-1] == out_channels:
    return x
  y = conv(out_channels, (1, 1), strides, name="shortcut_conv")(x)
  return DualBatchNorm(name="shortcut_bn")(y, train, adv)


class ResNet(nn.Module):
  """ResNet trunk; returns globally pooled features [N, C_out].

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block: BasicBlock or Bottleneck.
    width: channels of the first stage (64 in the standard nets; the width multiplier).
    stem: 'cifar' (3x3 conv, stride 1, no max-pool, for 32 px and below) or 'imagenet'
      (7x7 conv stride 2 and a 3x3 max-pool, for 64 px and up).
    remat: recompute each block's activations in the backward pass instead of keeping them
      (jax.checkpoint): less memory for large batches, about one more forward of compute.
  """

  stage_sizes: Sequence[int]
  block: Any
  width: int = 64
  stem: str = "cifar"
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, adv: bool = False) -> jax.Array:
    """x: [N, H, W, C] normalised images -> [N, width * 2**(stages-1) * expansion]."""
    conv = _conv(self.dtype)
    if self.stem == "cifar":
      x = conv(self.width, (3, 3), 1, padding=1, name="stem_conv")(x)
    elif self.stem == "imagenet":
      x = conv(self.width, (7, 7), 2, padding=3, name="stem_conv")(x)
    else:
      raise ValueError(f"config.model.stem={self.stem!r}; choose 'cifar' or 'imagenet'")
    x = nn.relu(DualBatchNorm(name="stem_bn")(x, train, adv))
    if self.stem == "imagenet":
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    # (x, train, adv) are arguments 1-3 of __call__ (self is 0); train and adv are Python flags.
    block = nn.remat(self.block, static_argnums=(2, 3)) if self.remat else self.block
    count = 0
    for stage, num_blocks in enumerate(self.stage_sizes):
      for index in range(num_blocks):
        strides = 2 if stage > 0 and index == 0 else 1
        # Named as without remat (BasicBlock_0, ...), so checkpoints do not depend on it.
        x = block(self.width * 2**stage, strides, self.dtype,
                  name=f"{self.block.__name__}_{count}")(x, train, adv)
        count += 1
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


ARCHITECTURES = {
    "resnet18": dict(stage_sizes=(2, 2, 2, 2), block=BasicBlock),
    "resnet34": dict(stage_sizes=(3, 4, 6, 3), block=BasicBlock),
    "resnet50": dict(stage_sizes=(3, 4, 6, 3), block=Bottleneck),
    # One basic block per stage: the quickstart's CPU-sized encoder (with width 16-32).
    "resnet_small": dict(stage_sizes=(1, 1, 1, 1), block=BasicBlock),
    # A stem and two basic blocks, the least that still has a strided projection shortcut:
    # the tests' encoder, whose step compiles faster (docs/performance.md).
    "resnet_tiny": dict(stage_sizes=(1, 1), block=BasicBlock),
}
