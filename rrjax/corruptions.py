"""Forward operators A (corruptions) built from a spec string.

    A = rrjax.corruptions.build("mask(0.5,0.95)|noise(0.1)")
    y = A(key, images)                 # float [B, H, W, C] in [0, 1] -> same shape and dtype
    params = A.sample(key, images.shape)
    y == A.apply(key, params, images)  # the per-image parameters A(key, images) used

Grammar: operators joined by `|`, applied left to right; whitespace is ignored. Each is one of

    mask(p)        mask(lo,hi)        zero a fraction p of the pixel positions
    noise(sigma)   noise(lo,hi)       add Gaussian noise of std sigma
    blur(n,sigma)  blur(n,lo,hi)      Gaussian blur, kernel size n, std sigma
    identity       identity()         no corruption

A range `lo,hi` draws the parameter per image from U[lo, hi). `str(A)` is the canonical spec
(`mask(0.9)`, `noise(0.1,0.3)`, `blur(21,5)`, `mask(0.5)|noise(0.1)`) and `build(str(A))` gives
the same outputs for the same key.

Semantics, all in [0, 1] pixel space and never clipped (the paper corrupts before the encoder's
own normalisation):
  * mask: exactly int(H*W*p) pixel positions per image are set to 0, the same positions in every
    channel. With a range the count is floor(H*W*p_i) in float32, clipped to
    [int(H*W*lo), int(H*W*hi)].
  * noise: x + sigma * N(0, 1), i.i.d. per pixel and channel.
  * blur: torchvision's Gaussian blur: taps at -(n-1)/2 .. (n-1)/2 weighted exp(-t^2 / 2 sigma^2)
    and normalised to sum 1, applied separably (rows, then columns) with reflect padding (edge
    pixel not repeated), so (n-1)/2 must be smaller than H and W. n is odd and sigma > 0.

Paper settings (Jalal et al., NeurIPS 2021): mask 50/75/90% (`mask(0.5)`, `mask(0.75)`,
`mask(0.9)`); noise std 0.1/0.3/0.5 (`noise(0.1)` ...); blur `blur(21,5)` and `blur(37,9)`;
unknown-severity training with `mask(0.5,0.95)` and `noise(0.1,0.3)`.

Randomness lives apart from the operator, as in deepinv: `sample(key, shape)` draws the
per-image parameters from `fold_in(key, 0)` and `apply(key, params, images)` draws the rest
(mask positions, noise) from `fold_in(key, 1)`; both split their key per image, so image i's
corruption does not depend on the batch size. In a composition, operator i uses `fold_in(key, i)`.
The per-pixel draws of `apply` come from an unrolled Threefry-2x32 keyed per image (the generator
of jax.random, which on CPU runs its own about 20x slower), and the mask selects its positions
without sorting; both are measured in `benchmarks/operators.py`.
Operators are immutable, hashable and compared by spec, so they can be static arguments of
`jax.jit`; keys may be typed (`jax.random.key`) or raw uint32 (`jax.random.PRNGKey`).
"""

import dataclasses
import functools
import math
import re
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

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


def _image_keys(key: jax.Array, stream: int, batch_size: int) -> jax.Array:
  """Per-image keys `[B]` of one stream (0: parameters, 1: corruption) of `key`."""
  return jax.random.split(jax.random.fold_in(key, stream), batch_size)


# Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
# SC 2011), the generator of jax.random's default keys. On CPU jax lowers its own as a rolled
# loop over whole arrays, about 20x slower than this unrolled form, which XLA fuses into one
# vectorised loop (benchmarks/README.md, operators.py).
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def _threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array,
                  x1: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Threefry-2x32-20 of the counters `(x0, x1)` under the key `(k0, k1)`.

  All four are uint32 arrays that broadcast together; returns the two uint32 output words.
  """
  ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(_PARITY))
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for block in range(1, 6):
    for r in _ROTATIONS[(block - 1) % 2]:
      x0 = x0 + x1
      x1 = jax.lax.shift_left(x1, jnp.uint32(r)) | jax.lax.shift_right_logical(
          x1, jnp.uint32(32 - r))
      x1 = x0 ^ x1
    x0 = x0 + ks[block % 3]
    x1 = x1 + ks[(block + 1) % 3] + jnp.uint32(block)
  return x0, x1


def _image_bits(key: jax.Array, batch_size: int, size: int) -> jax.Array:
  """`[B, size]` uint32 random words; row i depends only on image i's corruption key.

  Each image's key (stream 1 of `key`, as `_image_keys`) gives a Threefry key, which encrypts
  the counters (j, 0), j < size. Only the first output word is kept: XLA:CPU computes each
  output of a fused loop apart, so using both words would cost as much and add a copy.
  """
  seeds = jax.vmap(lambda k: jax.random.bits(k, (2,), jnp.uint32))(
      _image_keys(key, 1, batch_size))

  def draw(seed):
    counter = jax.lax.iota(jnp.uint32, size)
    return _threefry2x32(seed[0], seed[1], counter, jnp.zeros_like(counter))[0]

  return _stored_per_image(draw, seeds)


def _stored_per_image(fn, *args: jax.Array) -> jax.Array:
  """`jax.vmap(fn)(*args)`, computed one image per loop iteration on CPU.

  XLA:CPU fuses a producer into its consumer and recomputes it at every read of an element, so
  a consumer that reads each element many times repeats all of the producer's work: erf_inv
  reading the generated words, the blur's second axis reading 21 shifted windows of the
  first (4 to 8x slower, measured). The loop stores each image's result before it is read.
  Other platforms get one vectorised call.
  """
  return jax.lax.platform_dependent(
      *args, cpu=lambda *a: jax.lax.map(lambda xs: fn(*xs), a), default=jax.vmap(fn))


def _standard_normal(bits: jax.Array) -> jax.Array:
  """float32 N(0, 1) draws, one per uint32 word of `bits`, by `jax.random.normal`'s transform.

  The top 23 bits pick one of the 2^23 odd multiples of 2^-23 in (-1, 1), exactly
  representable, and sqrt(2) erfinv maps that uniform variable to N(0, 1); the tails are cut
  at 5.3 sigma.
  """
  m = jax.lax.shift_right_logical(bits, jnp.uint32(9)).astype(jnp.int32)
  uniform = (2 * m + (1 - 2**23)).astype(jnp.float32) * jnp.float32(2.0**-23)
  return jnp.float32(math.sqrt(2)) * jax.lax.erf_inv(uniform)


# Probe offsets of the selection search, in standard deviations of where the wanted key should
# lie. With seven probes and the midpoint a row needs about 3 passes over its keys, a batch of
# 64 to 256 images (the slowest row) 5 to 8, at 28 and at 224 px (measured); fewer probes need
# more passes.
_PROBES = (-3.0, -1.5, -0.5, 0.0, 0.5, 1.5, 3.0)
_KEY_BITS = 31  # Keys below 2^31, so the search's exclusive upper end 2^31 fits in uint32.


def _count_below(keys: jax.Array, probes: jax.Array) -> jax.Array:
  """`[B, P]` int32: how many of the keys `[B, N]` of each row are below each probe `[B, P]`.

  One variadic reduction with P accumulators: XLA:CPU fuses the comparisons into it and reads
  the keys once, where a sum over a `[B, P, N]` comparison is materialised first (100x slower).
  """
  below = tuple((keys < probes[:, i, None]).astype(jnp.int32) for i in range(probes.shape[1]))
  counts = jax.lax.reduce(below, (jnp.int32(0),) * len(below),
                          lambda a, b: tuple(u + v for u, v in zip(a, b)), (1,))
  return jnp.stack(counts, axis=1)


def _smallest(keys: jax.Array, count: jax.Array) -> jax.Array:
  """Marks the `count[b]` smallest keys of each row: exactly `count[b]` True in row b.

  Selection without sorting, by a search for a threshold t with exactly `count` keys below it.
  Each row keeps an interval [lo, hi) with `count(keys < lo) <= count <= count(keys < hi)`;
  each pass counts the keys below a few probes in one read of `keys` and shrinks the interval
  to the probes nearest the wanted count. The probes sit where the wanted key should be if the
  keys inside the interval are uniform (interpolation search, about 3 passes for uniform keys),
  plus the midpoint, which bounds the passes by 32 whatever the keys. The masked set (the
  `count` smallest keys) does not depend on how many passes the other rows needed.

  Two equal keys at the threshold (rare for uniform 31-bit keys: a chance of about N / 2^31 per
  row) cannot be separated by a threshold; the first ones by position are taken.

  Args:
    keys: `[B, N]` uint32, all below 2^31.
    count: `[B]` integer in [0, N].

  Returns:
    `[B, N]` bool.
  """
  n = keys.shape[1]
  k = count.astype(jnp.int32)
  offsets = jnp.asarray(_PROBES, jnp.float32)

  def searching(state):
    lo, hi, c_lo, c_hi = state
    return jnp.any((c_lo != k) & (c_hi != k) & (hi - lo > 1))

  def search(state):
    lo, hi, c_lo, c_hi = state
    inside = jnp.maximum(c_hi - c_lo, 1).astype(jnp.float32)
    rank = (k - c_lo).astype(jnp.float32)
    width = (hi - lo).astype(jnp.float32)
    # The wanted key is the rank-th of `inside` keys spread over [lo, hi): a binomial position.
    spread = (jnp.sqrt(rank * (inside - rank) / inside) + 0.5) / inside * width
    guess = lo.astype(jnp.float32) + rank / inside * width
    probes = guess[:, None] + spread[:, None] * offsets
    probes = jnp.clip(probes, 0, 2.0**_KEY_BITS).astype(jnp.uint32)
    probes = jnp.concatenate([probes, (lo + (hi - lo) // 2)[:, None]], axis=1)
    probes = jnp.clip(probes, lo[:, None], hi[:, None])  # [B, P]
    below = _count_below(keys, probes)
    fits_lo, fits_hi = below <= k[:, None], below >= k[:, None]
    # Counts grow with the probe, so the largest fitting probe has the largest fitting count.
    return (jnp.max(jnp.where(fits_lo, probes, lo[:, None]), axis=1),
            jnp.min(jnp.where(fits_hi, probes, hi[:, None]), axis=1),
            jnp.max(jnp.where(fits_lo, below, c_lo[:, None]), axis=1),
            jnp.min(jnp.where(fits_hi, below, c_hi[:, None]), axis=1))

  b = keys.shape[0]
  start = (jnp.zeros((b,), jnp.uint32), jnp.full((b,), 2**_KEY_BITS, jnp.uint32),
           jnp.zeros((b,), jnp.int32), jnp.full((b,), n, jnp.int32))
  lo, hi, c_lo, c_hi = jax.lax.while_loop(searching, search, start)
  threshold = jnp.where(c_hi == k, hi, lo)
  selected = keys < threshold[:, None]
  # Keys equal to the threshold still to take: 0 unless equal keys straddle the count.
  tied = k - jnp.where(c_hi == k, c_hi, c_lo)

  def break_ties(selected):
    equal = keys == threshold[:, None]
    return selected | (equal & (jnp.cumsum(equal, axis=1, dtype=jnp.int32) <= tied[:, None]))

  return jax.lax.cond(jnp.any(tied > 0), break_ties, lambda s: s, selected)


def _per_image_uniform(key: jax.Array, batch_size: int, lo: float, hi: float) -> jax.Array:
  """`[B]` float32 draws from U[lo, hi), or lo everywhere when lo == hi."""
  if lo == hi:
    return jnp.full((batch_size,), lo, jnp.float32)
  draw = lambda k: jax.random.uniform(k, (), jnp.float32, minval=lo, maxval=hi)
  return jax.vmap(draw)(_image_keys(key, 0, batch_size))


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
    keys = jax.lax.shift_right_logical(_image_bits(key, b, h * w), jnp.uint32(32 - _KEY_BITS))
    masked = _smallest(keys, params["count"]).reshape(b, h, w, 1)
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
    noise = _standard_normal(_image_bits(key, b, math.prod(images.shape[1:])))
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
    rows = _stored_per_image(functools.partial(_blur_axis, axis=1), images, weights)
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


OPERATORS: dict[str, type[Operator]] = {op.name: op for op in (Mask, Noise, Blur, Identity)}

_ALLOWED = " | ".join(form for op in OPERATORS.values() for form in op.forms)
# A name, optionally followed by a parenthesised argument list without nested parentheses.
_PART = re.compile(r"\s*([A-Za-z_]\w*)\s*(?:\(([^()]*)\))?\s*")


def build(spec: str) -> Operator:
  """Parses `spec` (see the module docstring) into an operator.

  Raises:
    ValueError: naming the malformed part and listing the allowed forms.
  """
  if not isinstance(spec, str):
    raise TypeError(f"corruption spec must be a str, got {type(spec).__name__} {spec!r}")
  if not spec.strip():
    raise ValueError(f"bad corruption spec {spec!r}: empty spec; allowed forms: {_ALLOWED}")
  ops = tuple(_parse_part(part, spec) for part in spec.split("|"))
  return ops[0] if len(ops) == 1 else Compose(ops)


def _parse_part(part: str, spec: str) -> Operator:
  """Parses one `name(args)` of `spec`."""
  def bad(reason: str) -> ValueError:
    where = "" if part.strip() == spec.strip() else f" in {spec!r}"
    return ValueError(f"bad corruption spec part {part.strip()!r}{where}: {reason}; "
                      f"allowed forms: {_ALLOWED}")

  if not part.strip():
    raise bad("empty part")
  match = _PART.fullmatch(part)
  if match is None:
    raise bad("expected name or name(args) with balanced parentheses")
  name, args = match.groups()
  if name not in OPERATORS:
    raise bad(f"unknown operator {name!r}; known: {', '.join(OPERATORS)}")
  try:
    numbers = tuple(_number(arg) for arg in args.split(",")) if args and args.strip() else ()
    return OPERATORS[name].from_args(numbers)
  except ValueError as e:
    raise bad(str(e)) from None


def _number(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise ValueError(f"argument {text.strip()!r} is not a number") from None
  if not math.isfinite(value):
    raise ValueError(f"argument {text.strip()!r} is not a finite number")
  return value
