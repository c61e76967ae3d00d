"""The random draws and the selection the operators run on, written for XLA:CPU's speed.

    keys = image_keys(key, stream, B)        # per-image keys [B] of one stream of `key`
    bits = image_bits(key, B, size)          # [B, size] uint32, row i from image i's key
    z = standard_normal(bits)                # float32 N(0, 1), one per word
    masked = smallest(keys, count)           # [B, N] bool: the count[b] smallest keys of row b
    counts = poisson(key, lam)               # [B, N] float32 Poisson(lam) counts, row i likewise

On CPU jax lowers its own Threefry as a rolled loop over whole arrays, about 20x slower than
the unrolled form here, and selecting positions by sorting is slower than the threshold search
of `smallest`; both are measured in `benchmarks/operators.py`. The numbers are the same on
every platform: only how they are computed is tuned for XLA:CPU (`stored_per_image`).
"""

import math

import jax
import jax.numpy as jnp


def image_keys(key: jax.Array, stream: int, batch_size: int) -> jax.Array:
  """Per-image keys `[B]` of one stream (0: parameters, 1: corruption) of `key`."""
  return jax.random.split(jax.random.fold_in(key, stream), batch_size)


# Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
# SC 2011), the generator of jax.random's default keys. On CPU jax lowers its own as a rolled
# loop over whole arrays, about 20x slower than this unrolled form, which XLA fuses into one
# vectorised loop (benchmarks/README.md, operators.py).
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array,
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


def image_bits(key: jax.Array, batch_size: int, size: int) -> jax.Array:
  """`[B, size]` uint32 random words; row i depends only on image i's corruption key.

  Each image's key (stream 1 of `key`, as `image_keys`) gives a Threefry key, which encrypts
  the counters (j, 0), j < size. Only the first output word is kept: XLA:CPU computes each
  output of a fused loop apart, so using both words would cost as much and add a copy.
  """
  seeds = jax.vmap(lambda k: jax.random.bits(k, (2,), jnp.uint32))(
      image_keys(key, 1, batch_size))

  def draw(seed):
    counter = jax.lax.iota(jnp.uint32, size)
    return threefry2x32(seed[0], seed[1], counter, jnp.zeros_like(counter))[0]

  return stored_per_image(draw, seeds)


def stored_per_image(fn, *args: jax.Array) -> jax.Array:
  """`jax.vmap(fn)(*args)`, computed one image per loop iteration on CPU.

  XLA:CPU fuses a producer into its consumer and recomputes it at every read of an element, so
  a consumer that reads each element many times repeats all of the producer's work: erf_inv
  reading the generated words, the blur's second axis reading 21 shifted windows of the
  first (4 to 8x slower, measured). The loop stores each image's result before it is read.
  Other platforms get one vectorised call.
  """
  return jax.lax.platform_dependent(
      *args, cpu=lambda *a: jax.lax.map(lambda xs: fn(*xs), a), default=jax.vmap(fn))


def standard_normal(bits: jax.Array) -> jax.Array:
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
KEY_BITS = 31  # Keys below 2^31, so the search's exclusive upper end 2^31 fits in uint32.


def _count_below(keys: jax.Array, probes: jax.Array) -> jax.Array:
  """`[B, P]` int32: how many of the keys `[B, N]` of each row are below each probe `[B, P]`.

  One variadic reduction with P accumulators: XLA:CPU fuses the comparisons into it and reads
  the keys once, where a sum over a `[B, P, N]` comparison is materialised first (100x slower).
  """
  below = tuple((keys < probes[:, i, None]).astype(jnp.int32) for i in range(probes.shape[1]))
  counts = jax.lax.reduce(below, (jnp.int32(0),) * len(below),
                          lambda a, b: tuple(u + v for u, v in zip(a, b)), (1,))
  return jnp.stack(counts, axis=1)


def smallest(keys: jax.Array, count: jax.Array) -> jax.Array:
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
    probes = jnp.clip(probes, 0, 2.0**KEY_BITS).astype(jnp.uint32)
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
  start = (jnp.zeros((b,), jnp.uint32), jnp.full((b,), 2**KEY_BITS, jnp.uint32),
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


def _uniform(bits: jax.Array) -> jax.Array:
  """float32 uniforms in the open interval (0, 1): the odd multiples of 2^-24, from 23 bits."""
  m = jax.lax.shift_right_logical(bits, jnp.uint32(9)).astype(jnp.int32)
  return (2 * m + 1).astype(jnp.float32) * jnp.float32(2.0**-24)


# Below this mean a Poisson count is drawn by inversion, at or above it by PTRS (as jax.random).
_POISSON_INVERSION_BELOW = 10.0
_POISSON_MAX_TRIES = 1000  # PTRS accepts at least 85% of its tries; this bound is never reached.
# stirlerr(k) = log k! - (k + 1/2) log k + k - log(2 pi) / 2 for k = 1 .. 9; a series above.
_STIRLERR = tuple(math.lgamma(k + 1) - (k + 0.5) * math.log(k) + k - 0.5 * math.log(2 * math.pi)
                  for k in range(1, 10))


def _poisson_log_pmf(k: jax.Array, lam: jax.Array) -> jax.Array:
  """log P(K = k) for K ~ Poisson(lam), float32, k >= 0 integral and lam >= 1.

  `k log lam - lam - log k!` cancels catastrophically in float32 once lam is in the thousands;
  Loader's form ("Fast and accurate computation of binomial probabilities", 2000)
  `-lam phi((k - lam) / lam) - log(2 pi k) / 2 - stirlerr(k)`, phi(d) = (1 + d) log1p(d) - d
  (a series for small |d|), keeps the error near float32's eps and needs no lgamma.
  """
  ks = jnp.maximum(k, 1.0)
  d = (ks - lam) / lam
  # phi(d) = sum_{j>=2} (-d)^j / (j (j-1)); nine terms for |d| < 0.1, error below 1e-10 d^2.
  series = d * d * (1 / 2 - d * (1 / 6 - d * (1 / 12 - d * (1 / 20 - d * (1 / 30 - d * (
      1 / 42 - d * (1 / 56 - d * (1 / 72 - d / 90))))))))
  phi = jnp.where(jnp.abs(d) < 0.1, series, (1 + d) * jnp.log1p(d) - d)
  inv = 1 / ks
  stirlerr = inv * (1 / 12 - inv * inv * (1 / 360 - inv * inv / 1260))  # error < 1e-10, k >= 10
  for i, value in enumerate(_STIRLERR, start=1):
    stirlerr = jnp.where(k == i, jnp.float32(value), stirlerr)
  loader = -lam * phi - 0.5 * jnp.log(2 * math.pi * ks) - stirlerr
  return jnp.where(k == 0, -lam, loader)


def poisson(key: jax.Array, lam: jax.Array) -> jax.Array:
  """float32 Poisson(lam) counts `[B, N]` for means `lam` `[B, N]` float32 in [0, 2^24).

  Row i depends only on image i's key (stream 1 of `key`, as `image_bits`) and on its own
  means. Element j draws from the Threefry counters (j, t), t = 0, 1, ...: a mean below 10 by
  inversion of the CDF with one word of t = 0 (a search up from 0, on average lam + 1 steps),
  a larger one by Hormann's transformed rejection with squeeze (PTRS; "The transformed
  rejection method for generating Poisson random variables", 1993, as jax.random.poisson),
  try t taking both words of t. Both are exact up to float32 rounding of the CDF and of the
  acceptance test. jax.random.poisson draws the same distribution, but on CPU its rolled
  Threefry and per-try key splits make it about 15x slower than a NumPy loop (measured).
  """
  seeds = jax.vmap(lambda k: jax.random.bits(k, (2,), jnp.uint32))(
      image_keys(key, 1, lam.shape[0]))
  return stored_per_image(_poisson_row, seeds, lam.astype(jnp.float32))


def _poisson_row(seed: jax.Array, lam: jax.Array) -> jax.Array:
  """Poisson counts `[N]` float32 for one image's means `lam` `[N]` under Threefry key `seed`."""
  n = lam.shape[0]

  def words(counter, t):
    return threefry2x32(seed[0], seed[1], counter, jnp.full_like(counter, t))

  w0, w1 = words(jax.lax.iota(jnp.uint32, n), 0)
  small = lam < _POISSON_INVERSION_BELOW
  zeros = jnp.zeros_like(lam)

  def rejection():
    lam_big = jnp.where(small, _POISSON_INVERSION_BELOW, lam)
    # Every element's first try in one pass. About 12% are rejected; they go on in compacted
    # arrays of at most a quarter of the elements, one round unless more are left. An
    # element's count depends only on its counters, so not on the round it is in.
    k, accepted = _ptrs_try(w0, w1, lam_big)
    cap = max(n // 4, 1)

    def round_(state):
      k, accepted = state
      index = jnp.nonzero(~accepted, size=cap, fill_value=n)[0]
      lam_c = lam_big.at[index].get(mode="fill", fill_value=_POISSON_INVERSION_BELOW)
      k_c = _ptrs_loop(words, index.astype(jnp.uint32), lam_c, index == n)
      return k.at[index].set(k_c, mode="drop"), accepted.at[index].set(True, mode="drop")

    return jax.lax.while_loop(lambda state: jnp.any(~state[1]), round_, (k, accepted | small))[0]

  # Each method runs only where some element needs it (the other's elements are ignored).
  k_small = jax.lax.cond(jnp.any(small), lambda: _poisson_inversion(
      _uniform(w0), jnp.where(small, lam, 0.0)), lambda: zeros)
  k_big = jax.lax.cond(jnp.all(small), lambda: zeros, rejection)
  return jnp.where(small, k_small, k_big)


def _poisson_inversion(u: jax.Array, lam: jax.Array) -> jax.Array:
  """The smallest k with P(K <= k) >= u, K ~ Poisson(lam), by a search up from 0.

  Stops where the pmf underflows (k about 50 for lam just below 10), so a u beyond the float32
  CDF's last value cannot loop forever.
  """
  def going(state):
    k, p, cdf = state
    return jnp.any((u > cdf) & (p > 0))

  def step(state):
    k, p, cdf = state
    more = (u > cdf) & (p > 0)
    k = jnp.where(more, k + 1, k)
    p = jnp.where(more, p * lam / k, p)
    return k, p, jnp.where(more, cdf + p, cdf)

  p0 = jnp.exp(-lam)
  return jax.lax.while_loop(going, step, (jnp.zeros_like(lam), p0, p0))[0]


def _ptrs_try(w0: jax.Array, w1: jax.Array, lam: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One PTRS try (as jax.random's _poisson_rejection) from two words, means >= 10: (k, ok)."""
  b = 0.931 + 2.53 * jnp.sqrt(lam)
  a = -0.059 + 0.02483 * b
  inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
  v_r = 0.9277 - 3.6224 / (b - 2)
  u = _uniform(w0) - 0.5  # In (-1/2, 1/2): us > 0 below.
  v = _uniform(w1)
  us = 0.5 - jnp.abs(u)
  k = jnp.floor((2 * a / us + b) * u + lam + 0.43)
  squeeze = (us >= 0.07) & (v <= v_r)
  reject = (k < 0) | ((us < 0.013) & (v > us))
  log_test = jnp.log(v * inv_alpha / (a / (us * us) + b))
  return k, squeeze | (~reject & (log_test <= _poisson_log_pmf(jnp.maximum(k, 0), lam)))


def _ptrs_loop(words, counter: jax.Array, lam: jax.Array, done: jax.Array) -> jax.Array:
  """PTRS tries 1, 2, ... until every element not `done` is accepted; the accepted counts."""
  def going(state):
    t, _, accepted = state
    return jnp.any(~accepted) & (t < _POISSON_MAX_TRIES)

  def step(state):
    t, k_out, accepted = state
    t = t + 1
    k, accept = _ptrs_try(*words(counter, t), lam)
    accept = accept & ~accepted
    return t, jnp.where(accept, k, k_out), accepted | accept

  return jax.lax.while_loop(going, step, (jnp.uint32(0), jnp.zeros_like(lam), done))[1]
