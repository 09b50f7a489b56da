"""Convolutions with a hand-written filter gradient, for XLA:CPU (`model.conv_impl`).

Both are drop-in `conv_general_dilated`s for `flax.linen.Conv`: a `jax.custom_vjp` whose
forward and input gradient are XLA's own and whose filter gradient is computed another way.
'auto' (the default) picks per layer on CPU, where it was measured to win, and is XLA's own
convolution on GPU and TPU.

**batch_minor** (what 'auto' uses with XLA's own Eigen convolutions, adcl's CPU default). XLA
computes a filter gradient as a convolution whose contracted "feature" axis is the batch, so
it transposes the layer input x from [N, H, W, C] to a batch-minor layout. XLA:CPU fuses the
elementwise ops that produced x (batch-norm, residual adds, ReLUs: in a ResNet stage, several
layers of them) into that transpose and recomputes them in the transposed order, which is
slow: 212 ms for one [64, 32, 32, 64] activation in a ResNet-18 backward, where a plain
transpose of it takes ~3 ms; such transposes were 569 ms of a 2.26 s forward+backward. A
dot is something XLA:CPU cannot fuse into, so `batch_minor_copy` makes the batch-minor copy
as a matmul with the N x N identity (exact), and `filter_gradient` runs the filter gradient
as one convolution that reads it in XLA's native layout. Same values as XLA's gradient (the
same Eigen kernel does the arithmetic; tested); the identity matmuls add 2*N FLOPs per
element of x, 2.3% of a ResNet-18 step at batch 64, which XLA's cost analysis counts. With
small channels and a batch larger than them (the quickstart: 16-32 channels, batch 64) the
matmul costs more than the transposes it replaces, and so it does on ResNet-18's 4x4 maps:
hence 'auto': >= 64 input channels on maps of >= 8x8.

**shifted** (what 'auto' uses while XLA sends convolutions to YNNPACK: jaxlib 0.10's
default, which adcl turns off, see adcl/xla_cpu.py). YNNPACK runs a convolution's forward and
input gradient near matmul speed but its filter gradient several times slower (3x3 at
32x32x64, batch 64, 2 cores: forward ~70 GFLOP/s, filter gradient ~4-5). A k x k filter
gradient is k*k matrix products,

    dW[i, j] = sum over (n, h, w) of  x_pad[n, s*h + i, s*w + j, :]^T  dY[n, h, w, :],

each a [C, N*H*W] x [N*H*W, O] matmul; same values as XLA's up to float summation order.
Filter gradient of a 3x3 convolution with YNNPACK convolutions, batch 64, jax 0.10.2 on this
project's 2-core CPU (XLA ms / shifted ms): 32x32, 64->64: 1433 / 330 (4.3x); 32->16 px,
64->128 stride 2: 173 / 120; 16x16 128->128: 199 / 186; 8x8 256->256: 120 / 121; 16->8 px
128->256: 71 / 78; at the quickstart's 16-32 channels the shifted form is 1.3-1.8x *slower*
(20x20 16->16: 7.1 / 9.7 ms). Hence 'auto' there: input channels >= 64 and output maps of
>= 16x16. With Eigen convolutions the shifted form loses (32x32, 64->64: ~200 ms against
Eigen's 76).
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from adcl import xla_cpu

NHWC = ("NHWC", "HWIO", "NHWC")
IMPLS = ("auto", "xla", "shifted", "batch_minor")  # The values of model.conv_impl.


def _conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _shifted(x, w, strides, padding):
  return _conv(x, w, strides, padding)


def _shifted_fwd(x, w, strides, padding):
  return _conv(x, w, strides, padding), (x, w)


def _shifted_bwd(strides, padding, residuals, dy):
  """(dx, dw): XLA's input gradient; the filter gradient as kh*kw shifted matmuls."""
  x, w = residuals
  (dx,) = jax.vjp(lambda v: _conv(v, w, strides, padding), x)[1](dy)
  kh, kw = w.shape[:2]
  (sh, sw), (_, ho, wo, _) = strides, dy.shape
  x_pad = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  rows = []
  for i in range(kh):
    for j in range(kw):
      window = lax.slice(x_pad, (0, i, j, 0),
                         (x_pad.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1,
                          x_pad.shape[3]), (1, sh, sw, 1))  # [N, Ho, Wo, C]
      rows.append(jnp.einsum("nhwc,nhwo->co", window, dy,
                             preferred_element_type=jnp.float32).astype(w.dtype))
  dw = jnp.stack(rows).reshape(w.shape)
  return dx, dw


_shifted.defvjp(_shifted_fwd, _shifted_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _batch_minor(x, w, strides, padding):
  return _conv(x, w, strides, padding)


def _batch_minor_bwd(strides, padding, residuals, dy):
  """(dx, dw): XLA's input gradient; the filter gradient as one convolution over a batch-minor
  copy of x that a matmul makes (see the module docstring)."""
  x, w = residuals
  (dx,) = jax.vjp(lambda v: _conv(v, w, strides, padding), x)[1](dy)
  return dx, filter_gradient(batch_minor_copy(x), dy, w.shape[:2], strides, padding)


_batch_minor.defvjp(_shifted_fwd, _batch_minor_bwd)


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


shifted_conv = _custom_backward(_shifted)
shifted_conv.__doc__ = "`lax.conv_general_dilated` with the shifted-matmul filter gradient."
batch_minor_conv = _custom_backward(_batch_minor)
batch_minor_conv.__doc__ = "`lax.conv_general_dilated` with the batch-minor filter gradient."


def _is_nhwc(dimension_numbers, lhs_shape, rhs_shape) -> bool:
  if dimension_numbers is None:
    return False
  expected = lax.conv_dimension_numbers(lhs_shape, rhs_shape, NHWC)
  return lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers) == expected


def auto_ynn_conv(lhs, rhs, window_strides, padding, *args, **kwargs):
  """With YNNPACK convolutions: shifted_conv where it wins (>= 64 input channels, >= 16x16
  output), else XLA's."""
  out_pixels = 1
  for size, stride in zip(lhs.shape[1:3], window_strides):
    out_pixels *= -(-size // stride)
  if rhs.ndim == 4 and rhs.shape[2] >= 64 and out_pixels >= 256:
    return shifted_conv(lhs, rhs, window_strides, padding, *args, **kwargs)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, *args, **kwargs)


def auto_eigen_conv(lhs, rhs, window_strides, padding, *args, **kwargs):
  """With XLA's own (Eigen) convolutions: batch_minor_conv where it wins (>= 64 input
  channels on maps of >= 8x8), else XLA's."""
  if rhs.ndim == 4 and rhs.shape[2] >= 64 and lhs.ndim == 4 and min(lhs.shape[1:3]) >= 8:
    return batch_minor_conv(lhs, rhs, window_strides, padding, *args, **kwargs)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, *args, **kwargs)


def conv_function(impl: str):
  """The conv_general_dilated for `model.conv_impl`: 'xla', 'shifted', 'batch_minor', or
  'auto': on CPU auto_ynn_conv while XLA sends convolutions to YNNPACK, auto_eigen_conv
  otherwise; XLA's own on GPU and TPU."""
  if impl == "auto":
    if jax.default_backend() != "cpu":
      return None
    return auto_ynn_conv if xla_cpu.ynn_convolutions_enabled() else auto_eigen_conv
  if impl == "xla":
    return None  # flax.linen.Conv's default, lax.conv_general_dilated.
  if impl == "shifted":
    return shifted_conv
  if impl == "batch_minor":
    return batch_minor_conv
  raise ValueError(f"config.model.conv_impl={impl!r}; choose one of {IMPLS}")
