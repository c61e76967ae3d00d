"""The forward operators A: mask, noise, blur, identity and their composition.

    A = Mask(0.5, 0.95)                # or rrjax.corruptions.build("mask(0.5,0.95)")
    y = A(key, images)                 # float [B, H, W, C] in [0, 1] -> same shape and dtype
    params = A.sample(key, images.shape)
    y == A.apply(key, params, images)  # the per-image parameters A(key, images) used

Semantics, all in [0, 1] pixel space and never clipped (the paper corrupts before the encoder's
own normalisation):
  * mask: exactly int(H*W*p) pixel positions per image are set to 0, the same positions in every
    channel. With a range the count is floor(H*W*p_i) in float32, clipped to
    [int(H*W*lo), int(H*W*hi)].
  * noise: x + sigma * N(0, 1), i.i.d. per pixel and channel.
  * blur: torchvision's Gaussian blur: taps at -(n-1)/2 .. (n-1)/2 weighted exp(-t^2 / 2 sigma^2)
    and normalised to sum 1, applied separably (rows, then columns) with reflect padding (edge
    pixel not repeated), so (n-1)/2 must be smaller than H and W. n is odd and sigma > 0.
A range `lo,hi` draws the parameter per image from U[lo, hi).

Randomness lives apart from the operator, as in deepinv: `sample(key, shape)` draws the
per-image parameters from `fold_in(key, 0)` and `apply(key, params, images)` draws the rest
(mask positions, noise) from `fold_in(key, 1)`; both split their key per image, so image i's
corruption does not depend on the batch size. In a composition, operator i uses `fold_in(key, i)`.
The per-pixel draws and the mask's selection are `rrjax.corruptions.kernels`.
Operators are immutable, hashable and compared by spec, so they can be static arguments of
`jax.jit`; keys may be typed (`jax.random.key`) or raw uint32 (`jax.random.PRNGKey`).
"""

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

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
