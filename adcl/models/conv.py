"""A convolution whose filter gradient is computed as shifted matrix products (for XLA:CPU).

When XLA:CPU sends convolutions to YNNPACK (jaxlib 0.10's default, which adcl turns off: see
adcl/xla_cpu.py), it runs a convolution's forward and input gradient near matmul speed but
its filter gradient several times slower (3x3 at 32x32x64, batch 64, 2 cores: forward ~70
GFLOP/s, filter gradient ~4-5). A k x k filter gradient is k*k matrix products,

    dW[i, j] = sum over (n, h, w) of  x_pad[n, s*h + i, s*w + j, :]^T  dY[n, h, w, :],

each a [C, N*H*W] x [N*H*W, O] matmul. `shifted_conv` is a drop-in `conv_general_dilated`
for `flax.linen.Conv` with that backward pass (the forward and the input gradient stay XLA's
own). It gives the same values as XLA's gradient up to float summation order.
`model.conv_impl` selects it: 'shifted' for every convolution, 'xla' for none, 'auto' (the
default) only on CPU with YNNPACK convolutions on, and only where it was measured to win.

Filter gradient of a 3x3 convolution with YNNPACK convolutions, batch 64, jax 0.10.2 on this
project's 2-core CPU (XLA ms / shifted ms): 32x32, 64->64: 1433 / 330 (4.3x); 32->16 px,
64->128 stride 2: 173 / 120; 16x16 128->128: 199 / 186; 8x8 256->256: 120 / 121; 16->8 px
128->256: 71 / 78; at the quickstart's 16-32 channels the shifted form is 1.3-1.8x *slower*
(20x20 16->16: 7.1 / 9.7 ms). Hence 'auto': input channels >= 64 and output maps of >= 16x16.
With XLA's own (Eigen) convolutions, adcl's CPU default, the filter gradient is fast already
(32x32, 64->64: 76 ms, against ~200 ms shifted), and 'auto' is XLA's convolution.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from adcl import xla_cpu

NHWC = ("NHWC", "HWIO", "NHWC")


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


def shifted_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """`lax.conv_general_dilated` with the shifted-matmul filter gradient, for the plain case
  flax.linen.Conv produces here (NHWC, explicit padding, no dilation, no groups); any other
  call goes to lax.conv_general_dilated unchanged."""
  plain = (feature_group_count == 1 and not kwargs and precision is None
           and (lhs_dilation is None or all(d == 1 for d in lhs_dilation))
           and (rhs_dilation is None or all(d == 1 for d in rhs_dilation))
           and lhs.ndim == 4 and not isinstance(padding, str)
           and _is_nhwc(dimension_numbers, lhs.shape, rhs.shape))
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    precision=precision, **kwargs)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  return _shifted(lhs, rhs, tuple(int(s) for s in window_strides), padding)


def _is_nhwc(dimension_numbers, lhs_shape, rhs_shape) -> bool:
  if dimension_numbers is None:
    return False
  expected = lax.conv_dimension_numbers(lhs_shape, rhs_shape, NHWC)
  return lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers) == expected


def auto_conv(lhs, rhs, window_strides, padding, *args, **kwargs):
  """shifted_conv where it wins on CPU (>= 64 input channels, >= 16x16 output), else XLA's."""
  out_pixels = 1
  for size, stride in zip(lhs.shape[1:3], window_strides):
    out_pixels *= -(-size // stride)
  if rhs.ndim == 4 and rhs.shape[2] >= 64 and out_pixels >= 256:
    return shifted_conv(lhs, rhs, window_strides, padding, *args, **kwargs)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, *args, **kwargs)


def conv_function(impl: str):
  """The conv_general_dilated for `model.conv_impl`: 'xla', 'shifted', or 'auto' (auto_conv
  on CPU while XLA sends convolutions to YNNPACK, XLA's own otherwise)."""
  if impl == "auto":
    cpu_ynn = jax.default_backend() == "cpu" and xla_cpu.ynn_convolutions_enabled()
    impl = "auto_cpu" if cpu_ynn else "xla"
  if impl == "xla":
    return None  # flax.linen.Conv's default, lax.conv_general_dilated.
  if impl == "shifted":
    return shifted_conv
  if impl == "auto_cpu":
    return auto_conv
  raise ValueError(f"config.model.conv_impl={impl!r}; choose 'auto', 'xla' or 'shifted'")
