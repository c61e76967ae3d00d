"""rrjax.evaluation.restoration: each classical inverse improves PSNR on smooth images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import corruptions
from rrjax.evaluation import restoration


def smooth_images(batch=4, size=32, seed=0) -> np.ndarray:
  """float32 `[B, size, size, 3]` in [0.05, 0.95]: sums of three low-frequency sinusoids."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  out = np.zeros((batch, size, size, 3))
  for _ in range(3):
    fy, fx = rng.uniform(0.5, 2.5, (2, batch, 1, 1, 3)) / size
    phase = rng.uniform(0, 2 * np.pi, (batch, 1, 1, 3))
    out += np.sin(2 * np.pi * (fy * yy[..., None] + fx * xx[..., None]) + phase)
  return (0.5 + 0.15 * out).astype(np.float32)


def psnr(a, b) -> float:
  """PSNR in dB for a peak of 1."""
  return float(-10 * np.log10(np.mean((np.asarray(a) - np.asarray(b))**2)))


# Gains measured 2026-11-24: +23, +14, +10, +15, +16 dB; the margins leave room but still fail
# a restorer that only partly works (e.g. the FFT's boundary seam cost deblurring 20 dB).
@pytest.mark.parametrize("spec,min_gain", [("mask(0.5)", 15), ("mask(0.9)", 8),
                                           ("noise(0.3)", 6), ("blur(9,2)", 8),
                                           ("noise(0.1)|mask(0.5)", 10)])
def test_improves_psnr(spec, min_gain):
  x = smooth_images()
  y = corruptions.build(spec)(jax.random.key(0), jnp.asarray(x))
  restored = restoration.restore(corruptions.build(spec), y)
  assert restored.shape == x.shape and restored.dtype == x.dtype
  assert psnr(restored, x) > psnr(y, x) + min_gain


def test_deblur_nearly_exact_without_noise():
  # The mirror extension makes the FFT's circular blur the operator's blur, edges included.
  x = smooth_images(batch=2)
  y = corruptions.build("blur(9,2)")(jax.random.key(0), jnp.asarray(x))
  assert psnr(restoration.deblur(y, 9, 2.0, reg=1e-4), x) > 40


def test_inpaint_keeps_observed_pixels():
  x = smooth_images(batch=2)
  y = corruptions.build("mask(0.75)")(jax.random.key(1), jnp.asarray(x))
  restored = restoration.inpaint(y)
  observed = np.asarray(y).any(axis=-1)
  np.testing.assert_array_equal(np.asarray(restored)[observed], np.asarray(y)[observed])
  assert np.asarray(restored).all(axis=-1).all()  # nothing left at exactly zero


def test_identity_unchanged():
  x = jnp.asarray(smooth_images(batch=1))
  np.testing.assert_array_equal(restoration.restore(corruptions.build("identity"), x), x)


@pytest.mark.parametrize("spec", ["mask(0.5)", "noise(0.1,0.3)", "blur(5,1)"])
def test_jit_equals_eager(spec):
  op = corruptions.build(spec)
  y = op(jax.random.key(2), jnp.asarray(smooth_images(batch=2, size=16)))
  with jax.disable_jit():
    eager = restoration.restore(op, y)
  np.testing.assert_allclose(restoration.restore(op, y), eager, atol=1e-5)


def test_unknown_operator_raises():
  with pytest.raises(TypeError, match="no restoration"):
    restoration.restore(object(), jnp.zeros((1, 4, 4, 3)))


def test_restored_operator_is_restore_after_the_operator():
  op = corruptions.build("mask(0.5)")
  wrapped = restoration.Restored(op)
  x = jnp.asarray(smooth_images(2, 16))
  key = jax.random.key(3)
  np.testing.assert_array_equal(wrapped(key, x), restoration.restore(op, op(key, x)))
  assert wrapped.random and str(wrapped) == "restored(mask(0.5))"
  # Hashable and compared by operator: usable as a static jit argument.
  assert wrapped == restoration.Restored(corruptions.build("mask(0.5)"))
  assert hash(wrapped) == hash(restoration.Restored(op))
  assert wrapped != restoration.Restored(corruptions.build("mask(0.9)"))
  assert not restoration.Restored(corruptions.build("blur(5,1)")).random
  with pytest.raises(TypeError, match="Operator"):
    restoration.Restored("mask(0.5)")
