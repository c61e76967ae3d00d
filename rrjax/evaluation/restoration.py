"""Classical pixel-space restoration: the paper's appendix route `R(restore(A(x)))`.

    x_hat = restore(build("mask(0.9)"), y)  # float [B, H, W, C] -> same shape and dtype
    route = Restored(build("mask(0.9)"))    # restore(A, A(key, x)), as an operator

Each operator of `rrjax.corruptions` has a classical inverse that knows the operator (its type
and severity) but nothing learned:

  * mask -> inpainting by diffusion. A pixel is taken as missing where all its channels are
    exactly 0: the operator is known, and mask writes exact zeros in every channel, while a
    real image pixel is all-zero only on pure black (which the fill then barely changes, since
    its neighbours are dark too). Missing pixels start at the image's mean observed colour and
    are then repeatedly replaced by the 3x3 mean of their neighbours while observed pixels are
    held fixed: a fixed number of Jacobi steps towards the harmonic interpolant.
  * noise -> Wiener filter in Fourier space. A flat signal spectrum would make the Wiener filter
    a constant gain, so the signal spectrum is taken as the natural-image power law
    S(f) ~ 1/|f|^2, scaled per image and channel so that its total power is the observed
    variance minus the known noise variance. The mean (DC) passes unchanged.
  * blur -> Wiener deconvolution with the known Gaussian kernel and a flat regularisation
    constant `reg`: X = conj(K) Y / (|K|^2 + reg), on the image's mirror extension, whose
    periodic repetition is the operator's reflect padding: the FFT's circular convolution is
    then the operator's blur exactly, with no boundary seam.
  * identity -> the images unchanged; a composition restores its operators in reverse order.

A severity range `lo,hi` is restored at its midpoint: the per-image draw is not observed.
Limitation: in `mask|noise` the noise hides the exact zeros, so the inpainting finds no missing
pixels; `noise|mask` (mask last) restores both.
"""

import functools

import jax
import jax.numpy as jnp

from rrjax.corruptions import Blur, Compose, Identity, Mask, Noise, Operator


def inpaint(images: jax.Array, iterations: int = 200) -> jax.Array:
  """Fills the all-channel-zero pixels of `images` `[B, H, W, C]`; returns the same shape."""
  known = jnp.any(images != 0, axis=-1, keepdims=True)  # [B, H, W, 1]
  count = jnp.maximum(known.sum(axis=(1, 2), keepdims=True), 1)
  mean = images.sum(axis=(1, 2), keepdims=True) / count  # observed colour, [B, 1, 1, C]
  start = jnp.where(known, images, mean)

  def step(_, x):
    # Edge padding: a border pixel averages its existing neighbours, no zeros leak in.
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    box = sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
    return jnp.where(known, images, box)

  return jax.lax.fori_loop(0, iterations, step, start)


def _freq_sq(h: int, w: int) -> jax.Array:
  """Squared frequency |f|^2 in cycles per pixel of an `h x w` FFT grid, `[h, w]`."""
  fy, fx = jnp.fft.fftfreq(h), jnp.fft.fftfreq(w)
  return fy[:, None]**2 + fx[None, :]**2


def denoise(images: jax.Array, sigma: float) -> jax.Array:
  """Wiener filter of `images` `[B, H, W, C]` with i.i.d. noise of std `sigma`; same shape."""
  _, h, w, _ = images.shape
  y = jnp.fft.fft2(images, axes=(1, 2))
  f2 = _freq_sq(h, w)[None, :, :, None]
  dc = f2 == 0
  shape = jnp.where(dc, 0.0, 1.0 / jnp.where(dc, 1.0, f2))  # 1/|f|^2, no DC term
  # Parseval with the unnormalised FFT: non-DC power sums to (HW)^2 var(x), noise is HW sigma^2
  # per frequency.
  signal_var = jnp.maximum(images.var(axis=(1, 2), keepdims=True) - sigma**2, 1e-8)
  spectrum = (h * w)**2 * signal_var * shape / shape.sum()
  gain = jnp.where(dc, 1.0, spectrum / (spectrum + h * w * sigma**2))
  return jnp.fft.ifft2(gain * y, axes=(1, 2)).real.astype(images.dtype)


def _mirror(images: jax.Array) -> jax.Array:
  """`[B, H, W, C]` -> `[B, 2H-2, 2W-2, C]`: one period of the whole-sample mirror extension.

  Its periodic repetition is the reflect padding (edge pixel not repeated) the blur uses, so a
  circular convolution of it equals the operator's blur exactly and the FFT sees no seam.
  """
  images = jnp.concatenate([images, images[:, -2:0:-1]], axis=1)
  return jnp.concatenate([images, images[:, :, -2:0:-1]], axis=2)


def deblur(images: jax.Array, n: int, sigma: float, reg: float = 1e-3) -> jax.Array:
  """Wiener deconvolution of a Gaussian blur (`Blur(n, sigma)`) of `images` `[B, H, W, C]`."""
  r = (n - 1) // 2
  _, h, w, _ = images.shape
  y = jnp.fft.fft2(_mirror(images), axes=(1, 2))
  ph, pw = y.shape[1:3]
  taps = jnp.arange(n, dtype=jnp.float32) - r
  weights = jnp.exp(-taps**2 / (2 * sigma**2))
  weights = weights / weights.sum()
  # The kernel centred on pixel (0, 0), wrapping round: a real, zero-phase transfer function.
  kernel = jnp.zeros((ph, pw), jnp.float32).at[:n, :n].set(jnp.outer(weights, weights))
  k = jnp.fft.fft2(jnp.roll(kernel, (-r, -r), axis=(0, 1)))[None, :, :, None]
  x = jnp.fft.ifft2(jnp.conj(k) * y / (jnp.abs(k)**2 + reg), axes=(1, 2)).real
  return x[:, :h, :w].astype(images.dtype)


def _mid(op) -> float:
  return (op.lo + op.hi) / 2


def restorable(op: Operator) -> bool:
  """Whether `restore` has a classical inverse for `op` (mask, noise, blur, identity and their
  compositions)."""
  if isinstance(op, Compose):
    return all(map(restorable, op.ops))
  return isinstance(op, (Mask, Noise, Blur, Identity))


@functools.partial(jax.jit, static_argnames=("op", "reg", "iterations"))
def restore(op: Operator, images: jax.Array, *, reg: float = 1e-3,
            iterations: int = 200) -> jax.Array:
  """Classical inverse of `op` on `images` float `[B, H, W, C]`; returns the same shape.

  Args:
    op: the known forward operator (`corruptions.build(spec)`).
    images: corrupted images.
    reg: the Wiener deconvolution's regularisation constant (blur only).
    iterations: diffusion steps of the inpainting (mask only).
  """
  if isinstance(op, Compose):
    for inner in reversed(op.ops):
      images = restore(inner, images, reg=reg, iterations=iterations)
    return images
  if isinstance(op, Mask):
    return inpaint(images, iterations)
  if isinstance(op, Noise):
    return denoise(images, _mid(op))
  if isinstance(op, Blur):
    return deblur(images, op.n, _mid(op), reg)
  if isinstance(op, Identity):
    return images
  raise TypeError(f"no restoration for operator {op}")


class Restored:
  """The pixel-space route as an operator: `Restored(A)(key, x) = restore(A, A(key, x))`.

  It is hashable and compared by its operator, like `corruptions.Operator`, so it can stand in
  for one where an operator is a static argument of `jax.jit` (`probe.extract_features`).
  """

  def __init__(self, op: Operator):
    if not isinstance(op, Operator):
      raise TypeError(f"Restored wraps a corruptions.Operator, got {type(op).__name__}")
    self.op = op

  def __call__(self, key: jax.Array, images: jax.Array) -> jax.Array:
    """float `[B, H, W, C]` -> the restored corrupted images, same shape."""
    return restore(self.op, self.op(key, images))

  @property
  def random(self) -> bool:
    return self.op.random

  def __str__(self) -> str:
    return f"restored({self.op})"

  __repr__ = __str__

  def __hash__(self) -> int:
    return hash(str(self))

  def __eq__(self, other) -> bool:
    return isinstance(other, Restored) and self.op == other.op
