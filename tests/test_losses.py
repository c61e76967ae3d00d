"""Tests for rrjax.losses against loop-by-loop float64 transcriptions of the formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import losses

LOSS_NAMES = ("st", "mse", "ss", "sum", "ntxent", "clip")


def _unit_rows(rng, n, d):
  x = rng.standard_normal((n, d))
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# Slow references: explicit loops over i, j in float64, written from the docstring formulas.


def _ref_st(s, t, tau):
  n = len(s)
  total = 0.0
  for i in range(n):
    denom = sum(math.exp(s[i] @ t[j] / tau) for j in range(n))
    total += -s[i] @ t[i] / tau + math.log(denom)
  return total / n


def _ref_mse(s, t, tau):
  del tau
  return sum(-s[i] @ t[i] for i in range(len(s))) / len(s)


def _ref_ss(s, t, tau):
  n = len(s)
  total = 0.0
  for i in range(n):
    denom = sum(math.exp(s[i] @ s[j] / tau) for j in range(n) if j != i)
    total += -s[i] @ t[i] / tau + math.log(denom)
  return total / n


def _ref_sum(s, t, tau):
  n = len(s)
  total = 0.0
  for i in range(n):
    denom = sum(math.exp(s[i] @ t[j] / tau) for j in range(n))
    denom += sum(math.exp(s[i] @ s[j] / tau) for j in range(n) if j != i)
    total += -s[i] @ t[i] / tau + math.log(denom)
  return total / n


def _ref_ntxent(s, t, tau):
  n = len(s)
  z = np.concatenate([t, s])
  total = 0.0
  for k in range(2 * n):
    pos = k + n if k < n else k - n
    denom = sum(math.exp(z[k] @ z[l] / tau) for l in range(2 * n) if l != k)
    total += -z[k] @ z[pos] / tau + math.log(denom)
  return total / (2 * n)


def _ref_clip(s, t, tau):
  n = len(s)
  rows = cols = 0.0
  for i in range(n):
    rows += -s[i] @ t[i] / tau + math.log(sum(math.exp(s[i] @ t[j] / tau) for j in range(n)))
    cols += -s[i] @ t[i] / tau + math.log(sum(math.exp(s[j] @ t[i] / tau) for j in range(n)))
  return 0.5 * (rows + cols) / n


REFERENCES = {"st": _ref_st, "mse": _ref_mse, "ss": _ref_ss, "sum": _ref_sum,
              "ntxent": _ref_ntxent, "clip": _ref_clip}


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("n,d", [(2, 3), (5, 8), (16, 4)])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_matches_loop_reference(name, n, d, tau):
  rng = np.random.default_rng(n * 100 + d)
  s, t = _unit_rows(rng, n, d), _unit_rows(rng, n, d)
  got = losses.get(name)(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32),
                         temperature=tau)
  assert got.shape == () and got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), REFERENCES[name](s, t, tau), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["st", "ss", "sum", "ntxent", "clip"])
def test_gradient_matches_central_differences(name):
  # float64 makes central differences accurate to ~1e-9, so 1e-6 is a real check.
  rng = np.random.default_rng(1)
  s0, t0 = _unit_rows(rng, 4, 3), _unit_rows(rng, 4, 3)
  with jax.enable_x64(True):
    s, t = jnp.asarray(s0), jnp.asarray(t0)
    fn = losses.get(name)
    loss = jax.jit(lambda s_: fn(s_, t, temperature=0.2))
    assert loss(s).dtype == jnp.float64
    grad = np.asarray(jax.grad(loss)(s))
    eps = 1e-6
    numeric = np.zeros_like(s0)
    for idx in np.ndindex(*s0.shape):
      step = np.zeros_like(s0)
      step[idx] = eps
      numeric[idx] = (float(loss(s + step)) - float(loss(s - step))) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_st_prefers_matching_pairs():
  # Orthonormal teachers: the matched student sits at the minimum log(1 + (N-1) e^{-1/tau}).
  n, tau = 6, 0.1
  t = jnp.eye(n, 8)
  matched = losses.st(t, t, temperature=tau)
  shuffled = losses.st(jnp.roll(t, 1, axis=0), t, temperature=tau)
  np.testing.assert_allclose(float(matched), math.log1p((n - 1) * math.exp(-1 / tau)),
                             rtol=1e-5)
  assert float(shuffled) > float(matched) + 1 / tau


def test_st_is_a_nonnegative_cross_entropy():
  rng = np.random.default_rng(2)
  for _ in range(5):
    s, t = _unit_rows(rng, 8, 4), _unit_rows(rng, 8, 4)
    assert float(losses.st(s, t, temperature=0.05)) >= 0.0


def test_st_is_stable_at_small_temperature():
  # exp(1 / 1e-3) overflows float32; logsumexp must not.
  rng = np.random.default_rng(3)
  s, t = _unit_rows(rng, 4, 5), _unit_rows(rng, 4, 5)
  assert np.isfinite(float(losses.st(jnp.asarray(s, jnp.float32), t, temperature=1e-3)))


def test_mse_is_half_squared_distance_minus_one():
  rng = np.random.default_rng(4)
  s, t = _unit_rows(rng, 7, 5), _unit_rows(rng, 7, 5)
  expected = np.mean(np.sum((s - t) ** 2, axis=-1)) / 2 - 1
  np.testing.assert_allclose(float(losses.mse(s, t, temperature=123.0)), expected, rtol=1e-5)


def test_clip_is_symmetrised_st():
  rng = np.random.default_rng(5)
  s, t = _unit_rows(rng, 6, 4), _unit_rows(rng, 6, 4)
  expected = 0.5 * (losses.st(s, t) + losses.st(t, s))
  np.testing.assert_allclose(float(losses.clip(s, t)), float(expected), rtol=1e-6)


def test_batch_of_one():
  # With one pair only the positive is left in the denominator (loss 0), except for `ss`,
  # whose denominator excludes the positive and is then empty: it refuses.
  rng = np.random.default_rng(6)
  s, t = _unit_rows(rng, 1, 4), _unit_rows(rng, 1, 4)
  for name in ("st", "sum", "ntxent", "clip"):
    np.testing.assert_allclose(float(losses.get(name)(s, t)), 0.0, atol=1e-6, err_msg=name)
  with pytest.raises(ValueError, match="N=1"):
    losses.ss(s, t)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_differentiable_wrt_student_under_jit(name):
  # The masked -inf logits must not leak NaNs into the gradient.
  rng = np.random.default_rng(7)
  s, t = _unit_rows(rng, 5, 6), _unit_rows(rng, 5, 6)
  grad = jax.jit(jax.grad(losses.get(name)))(jnp.asarray(s, jnp.float32),
                                             jnp.asarray(t, jnp.float32))
  assert grad.shape == s.shape
  assert np.all(np.isfinite(np.asarray(grad)))
  if name != "mse":  # mse's gradient is -t / N regardless of s, nonzero anyway.
    assert np.any(np.asarray(grad) != 0)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bf16_inputs_give_float32(name):
  rng = np.random.default_rng(8)
  s, t = _unit_rows(rng, 4, 8), _unit_rows(rng, 4, 8)
  got = losses.get(name)(jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16))
  assert got.dtype == jnp.float32
  # Only the bf16 rounding of the inputs separates it from the float32 result.
  np.testing.assert_allclose(float(got), float(losses.get(name)(s, t)), rtol=0.05, atol=0.05)


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match=r"\(4, 3\) and \(4, 5\)"):
    losses.st(jnp.zeros((4, 3)), jnp.zeros((4, 5)))


def test_unknown_name_lists_known_ones():
  with pytest.raises(ValueError, match="'cosine'.*st, mse, ss, sum, ntxent, clip"):
    losses.get("cosine")
  assert losses.names() == list(LOSS_NAMES)


def test_normalize():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]])
  y = losses.normalize(x)
  np.testing.assert_allclose(np.asarray(y), [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(losses.normalize(x, eps=1.0))[2], [1e-3, 0.0])
