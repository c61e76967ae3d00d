"""Depthwise 2-D convolution that is fast on CPU and uses the native conv elsewhere.

XLA's CPU backend lowers grouped convolutions with `feature_group_count == channels` very
slowly: on two cores a 5x5 depthwise conv on [64, 32, 32, 96] takes ~0.3 s forward and ~1 s
for its gradient. Written as k*k shifted, strided slices multiplied by one kernel tap each and
summed, the same op takes ~14 ms and ~100 ms on two busy cores (`benchmarks/depthwise.py`;
numbers in benchmarks/README.md), while on GPU/TPU the native grouped convolution (cuDNN, TPU
conv units) is the better choice. `depthwise_conv` stages out both and lets
`jax.lax.platform_dependent` pick one when the computation is lowered for a platform, so one
jitted function is fast wherever it is compiled. The choice is resolved before XLA compiles, so
the compiled code holds only the chosen formulation, also under `jax.grad` (checked with jax
0.10.2).

The shifted formulation's kernel gradient has a custom VJP (see `_shifted_bwd`), so 'auto' and
'shifted' support reverse-mode differentiation (`jax.grad`, `jax.vjp`) but not `jax.jvp`;
forward-mode users pick `impl="lax"`.
"""

import functools
from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

# 'SAME' (TensorFlow rule), 'VALID', one int for every side, or ((top, bottom), (left, right)).
Padding = Union[str, int, Sequence[tuple[int, int]]]
IMPLS = ("auto", "shifted", "lax")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow 'SAME' padding of one spatial axis: output ceil(size / stride), extra at the end.

  Unlike a symmetric `kernel // 2` padding this is asymmetric for strided convs on even sizes,
  which is what TF-trained checkpoints (EfficientNet-Lite) expect.
  """
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _pair(v, name: str) -> tuple[int, int]:
  if isinstance(v, int):
    return v, v
  v = tuple(v)
  if len(v) != 2:
    raise ValueError(f"{name} must be an int or a pair, got {v!r}")
  return v


def resolve_padding(padding: Padding, spatial: tuple[int, int], kernel: tuple[int, int],
                    strides: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
  """Explicit ((top, bottom), (left, right)) padding for `padding` on an input of `spatial` size."""
  if isinstance(padding, str):
    if padding == "SAME":
      return tuple(same_padding(n, k, s) for n, k, s in zip(spatial, kernel, strides))
    if padding == "VALID":
      return (0, 0), (0, 0)
    raise ValueError(f"padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}")
  if isinstance(padding, int):
    return (padding, padding), (padding, padding)
  pads = tuple(tuple(p) for p in padding)
  if len(pads) != 2 or any(len(p) != 2 for p in pads):
    raise ValueError(f"explicit padding must be ((top, bottom), (left, right)), got {padding!r}")
  return pads


def _check(x: jax.Array, kernel: jax.Array):
  if x.ndim != 4:
    raise ValueError(f"expected x [B, H, W, C], got shape {x.shape}")
  if kernel.ndim != 4 or kernel.shape[2] != 1 or kernel.shape[3] != x.shape[3]:
    raise ValueError(f"expected kernel [kh, kw, 1, {x.shape[3]}] for x of shape {x.shape}, "
                     f"got {kernel.shape}")


def depthwise_conv_lax(x: jax.Array, kernel: jax.Array, strides=1,
                       padding: Padding = "SAME") -> jax.Array:
  """Depthwise conv as a grouped `lax.conv_general_dilated` (cuDNN / TPU path).

  Args:
    x: `[B, H, W, C]`.
    kernel: `[kh, kw, 1, C]` (Flax HWIO layout of a conv with `feature_group_count=C`).
    strides: int or (sh, sw).
    padding: see `resolve_padding`.

  Returns:
    `[B, Ho, Wo, C]`.
  """
  _check(x, kernel)
  strides = _pair(strides, "strides")
  pads = resolve_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), window_strides=strides, padding=pads,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[3])


def depthwise_conv_shifted(x: jax.Array, kernel: jax.Array, strides=1,
                           padding: Padding = "SAME") -> jax.Array:
  """Depthwise conv as kh*kw shifted strided slices times one kernel tap each, summed (CPU path).

  Same arguments and result as `depthwise_conv_lax`. Differentiable in reverse mode only (the
  kernel gradient has a custom VJP); use `depthwise_conv_lax` for `jax.jvp`.
  """
  _check(x, kernel)
  strides = _pair(strides, "strides")
  pads = resolve_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
  padded = (x.shape[1] + sum(pads[0]), x.shape[2] + sum(pads[1]))
  if padded[0] < kernel.shape[0] or padded[1] < kernel.shape[1]:
    raise ValueError(f"kernel {kernel.shape[:2]} larger than padded input {padded}")
  return _shifted(x, kernel.astype(x.dtype), strides, pads)


def _taps(xp: jax.Array, kh: int, kw: int, strides: tuple[int, int], out_hw: tuple[int, int]):
  """The kh*kw strided windows of padded `xp` `[..., H, W, C]` that meet kernel tap (i, j),
  in row-major order, each `[..., Ho, Wo, C]`."""
  (sh, sw), (ho, wo) = strides, out_hw
  return [xp[..., i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]


def _shifted_forward(x, kernel, strides, pads):
  kh, kw = kernel.shape[:2]
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  out_hw = ((xp.shape[1] - kh) // strides[0] + 1, (xp.shape[2] - kw) // strides[1] + 1)
  taps = _taps(xp, kh, kw, strides, out_hw)
  # A Python sum of elementwise products fuses into one vectorised loop on XLA:CPU.
  return sum(tap * kernel[n // kw, n % kw, 0] for n, tap in enumerate(taps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _shifted(x, kernel, strides, pads):
  return _shifted_forward(x, kernel, strides, pads)


def _shifted_fwd(x, kernel, strides, pads):
  return _shifted_forward(x, kernel, strides, pads), (x, kernel)


def _shifted_bwd(strides, pads, res, g):
  x, kernel = res
  # d/dx: autodiff of the slices (pads of g, added) is already fast on XLA:CPU.
  _, vjp_x = jax.vjp(lambda a: _shifted_forward(a, kernel, strides, pads), x)
  (dx,) = vjp_x(g)
  # d/dkernel[i, j, c] = sum over (b, h, w) of tap_ij * g: kh*kw reductions over everything
  # but the channel. XLA:CPU runs such reductions as scalar loops (as kh*kw separate ones, ~8x
  # the forward; as one variadic reduce, still 2 to 4x slower than this). Instead a scan over
  # the batch adds each image's products to kh*kw per-pixel running sums, elementwise work that
  # XLA vectorises on data that stays in cache; the pixels are summed once at the end.
  # Accumulated in float32 at least so that low-precision inputs keep the kernel gradient.
  kh, kw = kernel.shape[:2]
  acc = jnp.promote_types(g.dtype, jnp.float32)
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))

  def add_image(sums, image):
    xp_i, g_i = image
    taps = _taps(xp_i, kh, kw, strides, g_i.shape[:2])
    return tuple(s + (tap * g_i).astype(acc) for s, tap in zip(sums, taps)), None

  zeros = tuple(jnp.zeros(g.shape[1:], acc) for _ in range(kh * kw))
  sums, _ = jax.lax.scan(add_image, zeros, (xp, g))
  dkernel = jnp.stack([s.sum(axis=(0, 1)) for s in sums])
  return dx, dkernel.reshape(kernel.shape).astype(kernel.dtype)


_shifted.defvjp(_shifted_fwd, _shifted_bwd)


def depthwise_conv(x: jax.Array, kernel: jax.Array, strides=1, padding: Padding = "SAME",
                   impl: str = "auto") -> jax.Array:
  """Depthwise 2-D convolution, NHWC.

  Args:
    x: `[B, H, W, C]`.
    kernel: `[kh, kw, 1, C]`.
    strides: int or (sh, sw).
    padding: 'SAME' (TensorFlow rule: output ceil(H / s), the odd pixel of padding at the
      bottom/right), 'VALID', an int, or ((top, bottom), (left, right)).
    impl: 'auto' (shifted slices when lowered for CPU, the grouped conv on any other platform),
      'shifted' or 'lax' to force one formulation.

  Returns:
    `[B, Ho, Wo, C]`.
  """
  if impl == "shifted":
    return depthwise_conv_shifted(x, kernel, strides, padding)
  if impl == "lax":
    return depthwise_conv_lax(x, kernel, strides, padding)
  if impl != "auto":
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
  return jax.lax.platform_dependent(
      x, kernel,
      cpu=lambda a, w: depthwise_conv_shifted(a, w, strides, padding),
      default=lambda a, w: depthwise_conv_lax(a, w, strides, padding))


class DepthwiseConv(nn.Module):
  """Depthwise conv layer: params 'kernel' `[k, k, 1, C]` (+ 'bias' `[C]`), like
  `nn.Conv(C, (k, k), feature_group_count=C)` but with TF 'SAME' padding and a fast CPU path.

  Attributes:
    kernel_size: k (square kernel).
    strides: int or (sh, sw).
    padding: see `depthwise_conv`.
    use_bias: add a per-channel bias.
    impl: 'auto', 'shifted' or 'lax' (see `depthwise_conv`).
    dtype: computation dtype (params stay `param_dtype`).
  """
  kernel_size: int
  strides: Union[int, tuple[int, int]] = 1
  padding: Padding = "SAME"
  use_bias: bool = False
  impl: str = "auto"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x `[B, H, W, C]` -> `[B, Ho, Wo, C]`."""
    c = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init,
                        (self.kernel_size, self.kernel_size, 1, c), self.param_dtype)
    x = x.astype(self.dtype)
    y = depthwise_conv(x, kernel.astype(self.dtype), self.strides, self.padding, self.impl)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (c,), self.param_dtype).astype(self.dtype)
    return y
