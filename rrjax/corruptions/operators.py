"""The forward operators A: mask, noise, blur, down, box, poisson, motion, identity, and their
composition and random choice.

    A = Mask(0.5, 0.95)                # or rrjax.corruptions.build("mask(0.5,0.95)")
    y = A(key, images)                 # float [B, H, W, C] in [0, 1] -> same shape and dtype
    params = A.sample(key, images.shape)
    y == A.apply(key, params, images)  # the per-image parameters A(key, images) used

Semantics, all in [0, 1] pixel space and never clipped (the paper corrupts before the encoder's
own normalisation; poisson clips only its photon rate):
  * mask: exactly int(H*W*p) pixel positions per image are set to 0, the same positions in every
    channel. With a range the count is floor(H*W*p_i) in float32, clipped to
    [int(H*W*lo), int(H*W*hi)].
  * noise: x + sigma * N(0, 1), i.i.d. per pixel and channel.
  * blur: torchvision's Gaussian blur: taps at -(n-1)/2 .. (n-1)/2 weighted exp(-t^2 / 2 sigma^2)
    and normalised to sum 1, applied separably (rows, then columns) with reflect padding (edge
    pixel not repeated), so (n-1)/2 must be smaller than H and W. n is odd and sigma > 0.
  * down: super-resolution's measurement. y[i, j] = mean of x over the f x f block holding
    (i, j): the area (box-filter) downsampling by the integer f, replicated back to H x W by
    nearest neighbour so that encoders see one shape. Replication carries exactly the
    measurement's ceil(H/f) x ceil(W/f) values and nothing else (it is the box filter's
    adjoint, up to the 1/f^2 scale); bilinear upsampling would invent a smoothness the
    measurement does not have. When f does not divide H or W the last block of a row or column
    is partial and averages the pixels it has. f = 1 is the identity. A fixed f only: a range
    of integer factors would be a handful of operators, which `oneof` spells exactly.
  * box: one square occlusion per image: side = round(sqrt(s*H*W)), at most min(H, W), set to 0
    in every channel, its top-left corner uniform over the (H-side+1) x (W-side+1) positions.
    With a range the side is computed from s_i in float32. s = 0 is the identity.
  * poisson: shot noise of a photon-limited sensor: y = Poisson(peak * clip(x, 0, 1)) / peak,
    i.i.d. per pixel and channel: E[y] = clip(x, 0, 1), Var[y] = clip(x, 0, 1) / peak. peak in
    (0, 1e6]; larger is less noise, and no noise (severity 0) is the limit peak -> infinity,
    which no peak expresses (the identity is `identity`).
  * motion: linear motion blur: correlation with a segment of odd length n through the centre at
    `angle` degrees counter-clockwise from the horizontal (as displayed), rasterised with
    bilinear weights and normalised to sum 1 (`motion_kernel`; angle 0 and 90 are the
    horizontal and vertical n-tap box filters), with blur's reflect padding. Without an angle
    each image draws one from U[0, 180). n = 1 is the identity.
  * oneof: each image gets one alternative, drawn with probabilities proportional to the
    weights (uniform without), with that alternative's own random parameters.
A range `lo,hi` draws the parameter per image from U[lo, hi).

Randomness lives apart from the operator, as in deepinv: `sample(key, shape)` draws the
per-image parameters from `fold_in(key, 0)` and `apply(key, params, images)` draws the rest
(mask positions, noise, box positions, photon counts) from `fold_in(key, 1)`; both split their
key per image, so image i's corruption does not depend on the batch size. In a composition,
operator i uses `fold_in(key, i)`; in `oneof`, alternative j uses `fold_in(key, j + 1)` for
both, and the choice is a parameter (stream 0).
The per-pixel draws and the mask's selection are `rrjax.corruptions.kernels`.
Operators are immutable, hashable and compared by spec, so they can be static arguments of
`jax.jit`; keys may be typed (`jax.random.key`) or raw uint32 (`jax.random.PRNGKey`).
"""

import dataclasses
import functools
import itertools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from rrjax.corruptions import kernels

Params = Any  # a pytree of per-image arrays, leading axis B


class Operator:
  """A forward operator `A(key, images) -> images`, immutable and identified by its spec."""

  name: ClassVar[str]
  forms: ClassVar[tuple[str, ...]]  # the spec forms, e.g. ("mask(p)", "mask(lo,hi)")

  @classmethod
  def from_args(cls, args: tuple[float, ...]) -> "Operator":
    """Builds the operator from the numbers between its parentheses."""
    arities = [form.count(",") + 1 if "(" in form else 0 for form in cls.forms]
    if len(args) not in arities:
      raise ValueError(f"{cls.name} takes {' or '.join(map(str, arities))} arguments, "
                       f"got {len(args)}")
    return cls(*args)

  def __call__(self, key: jax.Array, images: jax.Array) -> jax.Array:
    """Corrupts `images` float `[B, H, W, C]`; returns the same shape and dtype."""
    if images.ndim != 4 or not jnp.issubdtype(images.dtype, jnp.floating):
      raise ValueError(f"{self}: expected float images [B, H, W, C], got {images.dtype} "
                       f"{images.shape}")
    return _sample_and_apply(self, key, images)

  def sample(self, key: jax.Array, shape: tuple[int, ...]) -> Params:
    """Draws the per-image parameters for images of `shape` `[B, H, W, C]`."""
    raise NotImplementedError

  def apply(self, key: jax.Array, params: Params, images: jax.Array) -> jax.Array:
    """Corrupts `images` `[B, H, W, C]` with the parameters from `sample`."""
    raise NotImplementedError

  @property
  def random(self) -> bool:
    """Whether the output depends on the key."""
    raise NotImplementedError

  def __repr__(self) -> str:
    return f"build({str(self)!r})"

  def __eq__(self, other) -> bool:
    return isinstance(other, Operator) and str(self) == str(other)

  def __hash__(self) -> int:
    return hash(str(self))


@functools.partial(jax.jit, static_argnums=0)
def _sample_and_apply(op: Operator, key: jax.Array, images: jax.Array) -> jax.Array:
  # Compiled as one program: run eagerly, the blur's shifted slices would each compile alone.
  return op.apply(key, op.sample(key, images.shape), images)


def _fmt(x: float) -> str:
  # repr is the shortest string that parses back to the same float; "5.0" reads better as "5".
  text = repr(float(x))
  return text[:-2] if text.endswith(".0") else text


def _value_or_range(lo: float, hi: float) -> str:
  return _fmt(lo) if lo == hi else f"{_fmt(lo)},{_fmt(hi)}"


def _per_image_uniform(key: jax.Array, batch_size: int, lo: float, hi: float) -> jax.Array:
  """`[B]` float32 draws from U[lo, hi), or lo everywhere when lo == hi."""
  if lo == hi:
    return jnp.full((batch_size,), lo, jnp.float32)
  draw = lambda k: jax.random.uniform(k, (), jnp.float32, minval=lo, maxval=hi)
  return jax.vmap(draw)(kernels.image_keys(key, 0, batch_size))


def _init_range(op, what: str, valid, requirement: str) -> None:
  """Fills `op.hi` for a fixed value, makes lo/hi floats, checks both and their order."""
  # Frozen dataclasses: normalise ints to floats so the canonical spec formats one way.
  object.__setattr__(op, "lo", float(op.lo))
  object.__setattr__(op, "hi", op.lo if op.hi is None else float(op.hi))
  for value in (op.lo, op.hi):
    if not valid(value):
      raise ValueError(f"{what} {_fmt(value)} {requirement}")
  if op.lo > op.hi:
    raise ValueError(f"{what} range lo {_fmt(op.lo)} > hi {_fmt(op.hi)}")


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Mask(Operator):
  """Zeroes a fraction in [lo, hi] of the pixel positions, the same ones in every channel."""

  name: ClassVar[str] = "mask"
  forms: ClassVar[tuple[str, ...]] = ("mask(p)", "mask(lo,hi)")
  lo: float
  hi: float | None = None

  def __post_init__(self):
    _init_range(self, "mask fraction", lambda p: 0 <= p <= 1, "not in [0, 1]")

  def __str__(self) -> str:
    return f"mask({_value_or_range(self.lo, self.hi)})"

  @property
  def random(self) -> bool:
    return self.hi > 0 and self.lo < 1

  def sample(self, key, shape):
    """`{"fraction": [B] float32, "count": [B] int32}`, count = masked positions per image."""
    batch_size, hw = shape[0], shape[1] * shape[2]
    fraction = _per_image_uniform(key, batch_size, self.lo, self.hi)
    if self.lo == self.hi:
      # Counted in Python: float32(p) * H * W can fall just below an integer that int() reaches.
      count = jnp.full((batch_size,), int(hw * self.lo), jnp.int32)
    else:
      count = jnp.clip(jnp.floor(fraction * hw).astype(jnp.int32), int(hw * self.lo),
                       int(hw * self.hi))
    return {"fraction": fraction, "count": count}

  def apply(self, key, params, images):
    b, h, w, _ = images.shape
    # The `count` positions with the smallest of i.i.d. uniform keys: a uniformly random subset
    # of exactly `count` positions, whatever the count (traced or not).
    keys = jax.lax.shift_right_logical(kernels.image_bits(key, b, h * w),
                                       jnp.uint32(32 - kernels.KEY_BITS))
    masked = kernels.smallest(keys, params["count"]).reshape(b, h, w, 1)
    return jnp.where(masked, jnp.zeros((), images.dtype), images)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Noise(Operator):
  """Adds i.i.d. Gaussian noise of std sigma in [lo, hi], unclipped."""

  name: ClassVar[str] = "noise"
  forms: ClassVar[tuple[str, ...]] = ("noise(sigma)", "noise(lo,hi)")
  lo: float
  hi: float | None = None

  def __post_init__(self):
    _init_range(self, "noise sigma", lambda v: 0 <= v < math.inf, "not a finite number >= 0")

  def __str__(self) -> str:
    return f"noise({_value_or_range(self.lo, self.hi)})"

  @property
  def random(self) -> bool:
    return self.hi > 0

  def sample(self, key, shape):
    """`{"sigma": [B] float32}`."""
    return {"sigma": _per_image_uniform(key, shape[0], self.lo, self.hi)}

  def apply(self, key, params, images):
    b = images.shape[0]
    noise = kernels.standard_normal(kernels.image_bits(key, b, math.prod(images.shape[1:])))
    noise = noise.reshape(images.shape).astype(images.dtype)
    return images + params["sigma"].astype(images.dtype)[:, None, None, None] * noise


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Blur(Operator):
  """Gaussian blur with an odd kernel size n and std sigma in [lo, hi], reflect padded."""

  name: ClassVar[str] = "blur"
  forms: ClassVar[tuple[str, ...]] = ("blur(n,sigma)", "blur(n,lo,hi)")
  n: int
  lo: float
  hi: float | None = None

  def __post_init__(self):
    if not (float(self.n).is_integer() and self.n >= 1 and self.n % 2 == 1):
      raise ValueError(f"blur kernel size {_fmt(self.n)} not an odd integer >= 1")
    object.__setattr__(self, "n", int(self.n))
    _init_range(self, "blur sigma", lambda v: 0 < v < math.inf, "not a finite number > 0")

  def __str__(self) -> str:
    return f"blur({self.n},{_value_or_range(self.lo, self.hi)})"

  @property
  def random(self) -> bool:
    return self.lo != self.hi

  def sample(self, key, shape):
    """`{"sigma": [B] float32}`."""
    return {"sigma": _per_image_uniform(key, shape[0], self.lo, self.hi)}

  def apply(self, key, params, images):
    del key  # Only sigma is random, and it is in params.
    _, h, w, _ = images.shape
    r = (self.n - 1) // 2
    if r >= h or r >= w:
      raise ValueError(f"{self}: reflect padding by {r} needs images larger than {r}x{r} "
                       f"pixels, got {h}x{w}")
    taps = jnp.arange(self.n, dtype=jnp.float32) - r
    weights = jnp.exp(-taps**2 / (2 * params["sigma"][:, None]**2))
    weights = (weights / weights.sum(axis=1, keepdims=True)).astype(images.dtype)  # [B, n]
    rows = kernels.stored_per_image(functools.partial(_blur_axis, axis=1), images, weights)
    return jax.vmap(functools.partial(_blur_axis, axis=0))(rows, weights)


def _blur_axis(image: jax.Array, weights: jax.Array, axis: int) -> jax.Array:
  """Correlates one image `[H, W, C]` along `axis` with `weights` `[n]`, reflect padded.

  The kernel differs per image, so rather than a convolution it is n shifted multiply-adds,
  which XLA fuses into one pass.
  """
  n = weights.shape[0]
  r = (n - 1) // 2
  size = image.shape[axis]
  pad = [(0, 0)] * 3
  pad[axis] = (r, r)
  padded = jnp.pad(image, pad, mode="reflect")
  out = jnp.zeros_like(image)
  for j in range(n):
    out = out + weights[j] * jax.lax.slice_in_dim(padded, j, j + size, axis=axis)
  return out


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Identity(Operator):
  """Returns the images unchanged."""

  name: ClassVar[str] = "identity"
  forms: ClassVar[tuple[str, ...]] = ("identity",)  # `identity()` parses too: no arguments.

  def __str__(self) -> str:
    return "identity"

  @property
  def random(self) -> bool:
    return False

  def sample(self, key, shape):
    return {}

  def apply(self, key, params, images):
    return images


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Compose(Operator):
  """Applies `ops` left to right; operator i uses `fold_in(key, i)`."""

  ops: tuple[Operator, ...]

  def __str__(self) -> str:
    return "|".join(map(str, self.ops))

  @property
  def random(self) -> bool:
    return any(op.random for op in self.ops)

  def sample(self, key, shape):
    """A tuple with each operator's parameters (every operator keeps the shape)."""
    return tuple(op.sample(jax.random.fold_in(key, i), shape) for i, op in enumerate(self.ops))

  def apply(self, key, params, images):
    for i, (op, op_params) in enumerate(zip(self.ops, params)):
      images = op.apply(jax.random.fold_in(key, i), op_params, images)
    return images


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Down(Operator):
  """Super-resolution's measurement: f x f block means, replicated back to the input size."""

  name: ClassVar[str] = "down"
  forms: ClassVar[tuple[str, ...]] = ("down(f)",)
  f: int

  def __post_init__(self):
    if not (float(self.f).is_integer() and self.f >= 1):
      raise ValueError(f"down factor {_fmt(self.f)} not an integer >= 1")
    object.__setattr__(self, "f", int(self.f))

  def __str__(self) -> str:
    return f"down({self.f})"

  @property
  def random(self) -> bool:
    return False

  def sample(self, key, shape):
    return {}

  def apply(self, key, params, images):
    del key, params  # Deterministic.
    f = self.f
    if f == 1:
      return images
    b, h, w, c = images.shape
    hb, wb = -(-h // f), -(-w // f)  # Blocks per side; the last one may be partial.
    acc = jnp.promote_types(images.dtype, jnp.float32)
    padded = jnp.pad(images.astype(acc), ((0, 0), (0, hb * f - h), (0, wb * f - w), (0, 0)))
    sums = padded.reshape(b, hb, f, wb, f, c).sum(axis=(2, 4))
    # Pixels per block, counted in Python: f*f except in a partial last row or column.
    counts = np.outer(np.minimum(f, h - f * np.arange(hb)), np.minimum(f, w - f * np.arange(wb)))
    counts = jnp.asarray(counts, acc)[None, :, :, None]
    means = sums / counts  # [B, hb, wb, C]: the low-resolution measurement.
    up = jnp.repeat(jnp.repeat(means, f, axis=1), f, axis=2)[:, :h, :w]
    return up.astype(images.dtype)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Box(Operator):
  """Zeroes one random square covering a fraction in [lo, hi] of the image, in every channel."""

  name: ClassVar[str] = "box"
  forms: ClassVar[tuple[str, ...]] = ("box(s)", "box(lo,hi)")
  lo: float
  hi: float | None = None

  def __post_init__(self):
    _init_range(self, "box fraction", lambda s: 0 <= s <= 1, "not in [0, 1]")

  def __str__(self) -> str:
    return f"box({_value_or_range(self.lo, self.hi)})"

  @property
  def random(self) -> bool:
    return self.hi > 0  # The position (and with a range the side) is drawn.

  def sample(self, key, shape):
    """`{"fraction": [B] float32, "side": [B] int32}`, side = round(sqrt(s H W)) <= min(H, W)."""
    batch_size, h, w = shape[:3]
    fraction = _per_image_uniform(key, batch_size, self.lo, self.hi)
    if self.lo == self.hi:
      # In Python (float64), as mask's count.
      side = jnp.full((batch_size,), min(round(math.sqrt(self.lo * h * w)), h, w), jnp.int32)
    else:
      side = jnp.minimum(jnp.round(jnp.sqrt(fraction * (h * w))), min(h, w)).astype(jnp.int32)
    return {"fraction": fraction, "side": side}

  def apply(self, key, params, images):
    b, h, w, _ = images.shape
    side = params["side"]

    def corner(k, side):
      # floor(u * positions), u ~ U[0, 1) in float32: uniform up to 2^-24 per position.
      u = jax.random.uniform(k, (2,), jnp.float32)
      positions = jnp.stack([h - side + 1, w - side + 1])
      at = jnp.minimum(jnp.floor(u * positions.astype(jnp.float32)).astype(jnp.int32),
                       positions - 1)
      return at[0], at[1]

    top, left = jax.vmap(corner)(kernels.image_keys(key, 1, b), side)
    rows = jax.lax.broadcasted_iota(jnp.int32, (1, h, 1, 1), 1)
    cols = jax.lax.broadcasted_iota(jnp.int32, (1, 1, w, 1), 2)
    at = lambda v: v[:, None, None, None]
    inside = ((rows >= at(top)) & (rows < at(top + side)) & (cols >= at(left))
              & (cols < at(left + side)))
    return jnp.where(inside, jnp.zeros((), images.dtype), images)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Poisson(Operator):
  """Shot noise of a sensor collecting `peak` photons at intensity 1, peak in [lo, hi]."""

  name: ClassVar[str] = "poisson"
  forms: ClassVar[tuple[str, ...]] = ("poisson(peak)", "poisson(lo,hi)")
  lo: float
  hi: float | None = None
  MAX_PEAK: ClassVar[float] = 1e6  # Counts stay far below 2^24: exact in float32.

  def __post_init__(self):
    _init_range(self, "poisson peak", lambda v: 0 < v <= self.MAX_PEAK, "not in (0, 1e6]")

  def __str__(self) -> str:
    return f"poisson({_value_or_range(self.lo, self.hi)})"

  @property
  def random(self) -> bool:
    return True

  def sample(self, key, shape):
    """`{"peak": [B] float32}`."""
    return {"peak": _per_image_uniform(key, shape[0], self.lo, self.hi)}

  def apply(self, key, params, images):
    b = images.shape[0]
    peak = params["peak"][:, None]
    lam = peak * jnp.clip(images.reshape(b, -1).astype(jnp.float32), 0, 1)
    counts = kernels.poisson(key, lam)
    return (counts / peak).reshape(images.shape).astype(images.dtype)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Motion(Operator):
  """Linear motion blur: a line of odd length n at `angle` degrees (drawn per image if None)."""

  name: ClassVar[str] = "motion"
  forms: ClassVar[tuple[str, ...]] = ("motion(n)", "motion(n,angle)")
  n: int
  angle: float | None = None

  def __post_init__(self):
    if not (float(self.n).is_integer() and self.n >= 1 and self.n % 2 == 1):
      raise ValueError(f"motion length {_fmt(self.n)} not an odd integer >= 1")
    object.__setattr__(self, "n", int(self.n))
    if self.angle is not None:
      if not math.isfinite(self.angle):
        raise ValueError(f"motion angle {self.angle} not a finite number")
      # The segment is symmetric about its centre: angles modulo 180 are the same operator.
      object.__setattr__(self, "angle", float(self.angle) % 180 + 0.0)

  def __str__(self) -> str:
    return f"motion({self.n})" if self.angle is None else f"motion({self.n},{_fmt(self.angle)})"

  @property
  def random(self) -> bool:
    return self.angle is None and self.n > 1

  def sample(self, key, shape):
    """`{"angle": [B] float32}` in degrees, U[0, 180) unless fixed."""
    angle = (0.0, 180.0) if self.angle is None else (self.angle, self.angle)
    return {"angle": _per_image_uniform(key, shape[0], *angle)}

  def apply(self, key, params, images):
    del key  # Only the angle is random, and it is in params.
    _, h, w, _ = images.shape
    n, r = self.n, (self.n - 1) // 2
    if r >= h or r >= w:
      raise ValueError(f"{self}: reflect padding by {r} needs images larger than {r}x{r} "
                       f"pixels, got {h}x{w}")
    padded = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    window = lambda i, j: padded[:, i:i + h, j:j + w]
    out = jnp.zeros_like(images)
    if self.angle is not None:
      # A fixed kernel, known when tracing: only its about 2n nonzero taps are summed.
      kernel = motion_kernel(n, np.float64(self.angle), np)
      for i, j in zip(*np.nonzero(kernel)):
        out = out + jnp.asarray(kernel[i, j], images.dtype) * window(i, j)
      return out
    # Per image, every tap: n^2 shifted multiply-adds, which XLA fuses into one pass.
    kernel = motion_kernel(n, params["angle"], jnp).astype(images.dtype)  # [B, n, n]
    for i in range(n):
      for j in range(n):
        out = out + kernel[:, i, j, None, None, None] * window(i, j)
    return out


def motion_kernel(n: int, angle, xp):
  """The motion-blur kernel `[..., n, n]` (rows top to bottom) for `angle` `[...]` degrees.

  A segment of length n through the centre at `angle` counter-clockwise from the horizontal as
  displayed (0: along a row, 90: along a column, 45: bottom-left to top-right): n points 1 pixel
  apart at t = -(n-1)/2 .. (n-1)/2 along it, (x, y) = (t cos, -t sin), each spread over its 4
  nearest pixels by bilinear (linear interpolation) weights, normalised to sum 1. Angle 0 gives
  the horizontal n-tap box filter. `xp` is numpy (float64, weights below 1e-9 dropped: a
  fixed angle) or jax.numpy (float32, traced angles).
  """
  r = (n - 1) // 2
  t = xp.arange(n) - r
  theta = xp.deg2rad(xp.asarray(angle))[..., None]
  x, y = t * xp.cos(theta), -t * xp.sin(theta)  # [..., n] points
  grid = xp.arange(n) - r
  # Bilinear splatting: a point at x gives pixel j the weight max(0, 1 - |x - j|).
  wx = xp.maximum(0, 1 - xp.abs(x[..., :, None] - grid))  # [..., point, column]
  wy = xp.maximum(0, 1 - xp.abs(y[..., :, None] - grid))  # [..., point, row]
  kernel = (wy[..., :, :, None] * wx[..., :, None, :]).sum(axis=-3)
  if xp is np:
    kernel = np.where(kernel < 1e-9, 0.0, kernel)
  return kernel / kernel.sum(axis=(-2, -1), keepdims=True)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class OneOf(Operator):
  """Each image gets one of `ops`, drawn with probabilities proportional to `weights`."""

  name: ClassVar[str] = "oneof"
  forms: ClassVar[tuple[str, ...]] = ("oneof(A;B;...)", "oneof(w:A;w:B;...)")
  ops: tuple[Operator, ...]
  weights: tuple[float, ...] | None = None  # None: uniform.

  @classmethod
  def from_args(cls, args):
    raise ValueError("oneof takes operators, not numbers: oneof(A;B;...) or oneof(w:A;w:B;...)")

  def __post_init__(self):
    ops = tuple(self.ops)
    if not ops or not all(isinstance(op, Operator) for op in ops):
      raise ValueError("oneof needs at least one alternative")
    object.__setattr__(self, "ops", ops)
    if self.weights is not None:
      weights = tuple(float(v) for v in self.weights)
      if len(weights) != len(ops):
        raise ValueError(f"oneof has {len(ops)} alternatives but {len(weights)} weights")
      for v in weights:
        if not 0 < v < math.inf:
          raise ValueError(f"oneof weight {_fmt(v)} not a finite number > 0")
      # Equal weights are the uniform choice: one canonical spec for it.
      object.__setattr__(self, "weights", None if len(set(weights)) == 1 else weights)

  def __str__(self) -> str:
    if self.weights is None:
      return f"oneof({';'.join(map(str, self.ops))})"
    return f"oneof({';'.join(f'{_fmt(v)}:{op}' for v, op in zip(self.weights, self.ops))})"

  @property
  def random(self) -> bool:
    return any(op.random for op in self.ops) or len(set(self.ops)) > 1

  @property
  def probabilities(self) -> tuple[float, ...]:
    weights = self.weights or (1.0,) * len(self.ops)
    return tuple(v / sum(weights) for v in weights)

  def sample(self, key, shape):
    """`{"index": [B] int32, "ops": (each alternative's parameters, ...)}`.

    Image i's alternative is the number of cumulative probabilities at or below its U[0, 1)
    draw; alternative j's parameters come from `fold_in(key, j + 1)`.
    """
    u = _per_image_uniform(key, shape[0], 0.0, 1.0)
    index = jnp.zeros(shape[0], jnp.int32)
    for edge in itertools.accumulate(self.probabilities[:-1]):
      index = index + (u >= jnp.float32(edge)).astype(jnp.int32)
    return {"index": index, "ops": tuple(op.sample(jax.random.fold_in(key, j + 1), shape)
                                         for j, op in enumerate(self.ops))}

  def apply(self, key, params, images):
    # Every alternative corrupts the whole batch (with `fold_in(key, j + 1)`) and each image
    # keeps its own: exact and one program, at the cost of running all of them.
    out = None
    for j, (op, op_params) in enumerate(zip(self.ops, params["ops"])):
      y = op.apply(jax.random.fold_in(key, j + 1), op_params, images)
      out = y if out is None else jnp.where((params["index"] == j)[:, None, None, None], y, out)
    return out
