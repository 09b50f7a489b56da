"""A convolution with a hand-written filter gradient, for XLA:CPU (`model.conv_impl`).

`batch_minor_conv` is a drop-in `conv_general_dilated` for `flax.linen.Conv`: a
`jax.custom_vjp` whose forward and input gradient are XLA's own and whose filter gradient is
computed another way. `conv_function('auto')` (the default of every shipped config) uses it on
CPU for the layers where it was measured to win, and XLA's own convolution everywhere else
(GPU, TPU, small layers). `adcl.build` is the one caller: the model receives the function.

Why. XLA computes a filter gradient as a convolution whose contracted "feature" axis is the
batch, so it transposes the layer input x from [N, H, W, C] to a batch-minor layout. XLA:CPU
fuses the elementwise ops that produced x (batch-norm, residual adds, ReLUs: in a ResNet
stage, several layers of them) into that transpose and recomputes them in the transposed
order, which is slow: 212 ms for one [64, 32, 32, 64] activation in a ResNet-18 backward,
where a plain transpose of it takes ~3 ms; such transposes were 569 ms of a 2.26 s
forward+backward. A dot is something XLA:CPU cannot fuse into, so `batch_minor_copy` makes the
batch-minor copy as a matmul with the N x N identity (exact), and `filter_gradient` runs the
filter gradient as one convolution that reads it in XLA's native layout. Same values as XLA's
gradient (the same Eigen kernel does the arithmetic; tested); the identity matmuls add 2*N
FLOPs per element of x, 2.3% of a ResNet-18 step at batch 64, which XLA's cost analysis
counts. With small channels and a batch larger than them (the quickstart: 16-32 channels,
batch 64) the matmul costs more than the transposes it replaces, and so it does on
ResNet-18's 4x4 maps: hence 'auto' takes it for >= 64 input channels on maps of >= 8x8.
ResNet-18 step, 32 px, batch 64, this project's 2-core CPU (`python benchmarks/step_time.py
--model resnet18 --conv-impl xla,auto`): plain 13.27 -> 14.56 img/s, CLAE 7.35 -> 7.97.

Under YNNPACK convolutions (jaxlib 0.10's default, which the commands turn off, see
adcl/xla_cpu.py) 'auto' is XLA's own: the batch-minor form was measured against XLA's Eigen
kernels only. (An earlier shifted-matmul filter gradient for YNNPACK was removed: no shipped
configuration runs with YNNPACK convolutions.)
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from adcl import xla_cpu

NHWC = ("NHWC", "HWIO", "NHWC")
IMPLS = ("auto", "xla", "batch_minor")  # The values of model.conv_impl.


def _conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)


def _forward_with_residuals(x, w, strides, padding):
  return _conv(x, w, strides, padding), (x, w)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _batch_minor(x, w, strides, padding):
  return _conv(x, w, strides, padding)


def _batch_minor_bwd(strides, padding, residuals, dy):
  """(dx, dw): XLA's input gradient; the filter gradient as one convolution over a batch-minor
  copy of x that a matmul makes (see the module docstring)."""
  x, w = residuals
  (dx,) = jax.vjp(lambda v: _conv(v, w, strides, padding), x)[1](dy)
  return dx, filter_gradient(batch_minor_copy(x), dy, w.shape[:2], strides, padding)


_batch_minor.defvjp(_forward_with_residuals, _batch_minor_bwd)


def batch_minor_copy(x: jax.Array) -> jax.Array:
  """x: [N, H, W, C] -> [C, H, W, N], as a matmul with the N x N identity.

  Exact (every output is one product by 1.0 plus zeros). A matmul because XLA:CPU fuses the
  elementwise ops that produced x (batch-norm, residual adds, ReLUs, several layers deep) into
  a plain transpose and recomputes them in the transposed order, up to 200 ms for one
  [64, 32, 32, 64] activation; it cannot fuse them into a dot."""
  eye = jnp.eye(x.shape[0], dtype=x.dtype)
  return jnp.einsum("nhwc,nm->chwm", x, eye, precision=lax.Precision.HIGHEST)


def filter_gradient(x_t, dy, kernel_size, strides, padding):
  """The filter gradient of `_conv(x, w, strides, padding)` from x's batch-minor copy.

  x_t: [C, H, W, N]; dy: [N, Ho, Wo, O] -> dW [kh, kw, C, O]. One stride-1 convolution in
  XLA's native NHWC/HWIO layout (C as its batch, N as its input feature, dy as its kernel
  dilated by the stride), so XLA adds no transposes of the big operands around it."""
  (kh, kw), (sh, sw) = kernel_size, strides
  (_, height, width, _), (_, ho, wo, _) = x_t.shape, dy.shape
  # Pad so that the output is exactly kh x kw (the high side may be negative: cropped).
  pads = ((padding[0][0], kh + sh * (ho - 1) - height - padding[0][0]),
          (padding[1][0], kw + sw * (wo - 1) - width - padding[1][0]))
  dw = lax.conv_general_dilated(x_t, jnp.transpose(dy, (1, 2, 0, 3)), (1, 1), pads,
                                rhs_dilation=strides, dimension_numbers=NHWC,
                                preferred_element_type=jnp.float32)  # [C, kh, kw, O]
  return jnp.transpose(dw, (1, 2, 0, 3)).astype(x_t.dtype)


def _custom_backward(custom):
  """A drop-in `lax.conv_general_dilated` for `flax.linen.Conv` that sends the plain case it
  produces here (NHWC, no dilation, no groups; padding explicit or a string) to `custom` and
  any other call to lax.conv_general_dilated unchanged."""

  def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                           rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                           precision=None, **kwargs):
    plain = (feature_group_count == 1 and not kwargs and precision is None
             and (lhs_dilation is None or all(d == 1 for d in lhs_dilation))
             and (rhs_dilation is None or all(d == 1 for d in rhs_dilation))
             and lhs.ndim == 4 and _is_nhwc(dimension_numbers, lhs.shape, rhs.shape))
    if not plain:
      return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                      rhs_dilation, dimension_numbers, feature_group_count,
                                      precision=precision, **kwargs)
    strides = tuple(int(s) for s in window_strides)
    if isinstance(padding, str):  # flax's 1x1 shortcut convolutions: 'SAME'.
      padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    padding = tuple(tuple(int(p) for p in pair) for pair in padding)
    return custom(lhs, rhs, strides, padding)

  return conv_general_dilated


batch_minor_conv = _custom_backward(_batch_minor)
batch_minor_conv.__doc__ = "`lax.conv_general_dilated` with the batch-minor filter gradient."


def _is_nhwc(dimension_numbers, lhs_shape, rhs_shape) -> bool:
  if dimension_numbers is None:
    return False
  expected = lax.conv_dimension_numbers(lhs_shape, rhs_shape, NHWC)
  return lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers) == expected


def auto_cpu_conv(lhs, rhs, window_strides, padding, *args, **kwargs):
  """With XLA's own (Eigen) convolutions: batch_minor_conv where it wins (>= 64 input
  channels on maps of >= 8x8), else XLA's."""
  if rhs.ndim == 4 and rhs.shape[2] >= 64 and lhs.ndim == 4 and min(lhs.shape[1:3]) >= 8:
    return batch_minor_conv(lhs, rhs, window_strides, padding, *args, **kwargs)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, *args, **kwargs)


def conv_function(impl: str):
  """The `conv_general_dilated` for `model.conv_impl`: None (flax's default, XLA's own
  convolution) for 'xla'; batch_minor_conv for 'batch_minor'; for 'auto', auto_cpu_conv on CPU
  with XLA's own (Eigen) convolutions, XLA's own anywhere else."""
  if impl == "auto":
    on_eigen_cpu = jax.default_backend() == "cpu" and not xla_cpu.ynn_convolutions_enabled()
    return auto_cpu_conv if on_eigen_cpu else None
  if impl == "xla":
    return None
  if impl == "batch_minor":
    return batch_minor_conv
  raise ValueError(f"config.model.conv_impl={impl!r}; choose one of {IMPLS}")
