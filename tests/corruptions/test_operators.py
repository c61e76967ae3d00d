"""rrjax.corruptions.operators: every operator by name (shape, determinism, sample/apply) and
each against its definition."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from rrjax import corruptions

# One fixed and one range spec per registered operator, and compositions.
SPECS = {
    "mask": ["mask(0.75)", "mask(0.5,0.95)"],
    "noise": ["noise(0.3)", "noise(0.1,0.3)"],
    "blur": ["blur(5,1.5)", "blur(7,0.5,2)"],
    "identity": ["identity"],
    "compose": ["mask(0.5)|noise(0.1)", "noise(0.1,0.3)|blur(5,0.5,2)|mask(0.25,0.75)"],
}
ALL_SPECS = [spec for specs in SPECS.values() for spec in specs]


def _images(shape=(4, 16, 16, 3)):
  # Strictly positive, so exact zeros in an output come only from a mask. Drawn with numpy to
  # spare a compilation per shape.
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.uniform(0.1, 1.0, shape), jnp.float32)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_shape_dtype_determinism_and_jit(spec, key):
  op = corruptions.build(spec)
  x = _images()
  y = op(key, x)
  assert y.shape == x.shape and y.dtype == x.dtype
  np.testing.assert_array_equal(op(key, x), y)
  np.testing.assert_allclose(jax.jit(op)(key, x), y, atol=1e-6)
  other = op(jax.random.key(1), x)
  assert op.random == (not np.array_equal(other, y))


def test_raw_keys_draw_like_typed_keys(key):
  op = corruptions.build(SPECS["compose"][-1])
  x = _images()
  np.testing.assert_array_equal(op(jax.random.PRNGKey(0), x), op(key, x))


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_sample_then_apply_is_call(spec, key):
  op = corruptions.build(spec)
  x = _images()
  params = op.sample(key, x.shape)
  # Compiled apart: equal up to float reassociation.
  np.testing.assert_allclose(jax.jit(op.apply)(key, params, x), op(key, x), atol=1e-6)


def test_mask_zeroes_exact_count_in_every_channel(key):
  x = _images((8, 16, 16, 3))
  y = np.asarray(corruptions.build("mask(0.9)")(key, x))
  zero = y == 0
  np.testing.assert_array_equal(zero, np.repeat(zero[..., :1], 3, axis=-1))
  np.testing.assert_array_equal(zero[..., 0].sum(axis=(1, 2)), int(16 * 16 * 0.9))
  np.testing.assert_array_equal(y[~zero], np.asarray(x)[~zero])
  # Positions differ between images.
  assert not np.array_equal(zero[0], zero[1])


def test_mask_range_counts_vary_within_bounds(key):
  op = corruptions.build("mask(0.5,0.95)")
  x = _images((8, 16, 16, 3))
  counts = (np.asarray(op(key, x))[..., 0] == 0).sum(axis=(1, 2))
  np.testing.assert_array_equal(counts, op.sample(key, x.shape)["count"])
  assert len(set(counts.tolist())) > 1
  assert counts.min() >= int(256 * 0.5) and counts.max() <= int(256 * 0.95)


@pytest.mark.parametrize("spec", ["mask(0.9)", "mask(0.5,0.95)", "mask(0.25)"])
def test_mask_positions_are_uniform_and_unstructured(spec, key):
  # 4096 independent 8x8 masks. Each position is masked with the same frequency (chi-square
  # over the 64 positions), and the count in the top half is hypergeometric given the image's
  # count (mean and variance), which a sort- or stride-shaped bias would break.
  op = corruptions.build(spec)
  b, n = 4096, 64
  x = jnp.ones((b, 8, 8, 1))
  masked = np.asarray(op(key, x))[..., 0] == 0
  counts = masked.sum(axis=(1, 2))
  np.testing.assert_array_equal(counts, op.sample(key, x.shape)["count"])
  p = counts.mean() / n
  per_position = masked.sum(axis=0).reshape(-1)
  # Positions of one image are negatively correlated (fixed total): n - 1 degrees of freedom.
  chi2 = ((per_position - b * p)**2).sum() / (b * p * (1 - p)) * (n - 1) / n
  assert scipy.stats.chi2.sf(chi2, n - 1) > 1e-4, chi2
  top = masked[:, :4].sum(axis=(1, 2)).astype(np.float64)
  mean = counts / 2
  var = counts * (n - counts) / (4 * (n - 1))
  z = (top - mean).sum() / np.sqrt(var.sum())
  assert abs(z) < 5, z
  # Sum of squared deviations over its expectation: about 1, relative error about 2.2%.
  assert abs(((top - mean)**2).sum() / var.sum() - 1) < 0.15


def test_corruption_of_an_image_does_not_depend_on_the_batch(key):
  x = _images((8, 16, 16, 3))
  for spec in SPECS["compose"]:  # Between them every operator, fixed and with a range.
    op = corruptions.build(spec)
    np.testing.assert_allclose(op(key, x[:3]), op(key, x)[:3], atol=1e-6, err_msg=spec)


def test_noise_is_gaussian(key):
  x = jnp.zeros((4, 32, 32, 3))
  z = np.asarray(corruptions.build("noise(1)")(key, x)).reshape(-1)
  # 12288 draws: Kolmogorov-Smirnov against N(0, 1), and images are not copies of each other.
  assert scipy.stats.kstest(z, "norm").pvalue > 1e-4
  assert abs(np.corrcoef(z[:3072], z[3072:6144])[0, 1]) < 0.06


def test_noise_std_matches_sigma_and_is_unclipped(key):
  x = _images((1, 64, 64, 3))
  y = np.asarray(corruptions.build("noise(0.3)")(key, x))
  diff = y - np.asarray(x)
  # 12288 samples: the sample std is within 3% of sigma with overwhelming probability.
  assert abs(diff.std() / 0.3 - 1) < 0.03
  assert abs(diff.mean()) < 0.02
  assert y.min() < 0 and y.max() > 1


def test_noise_range_per_image_std(key):
  op = corruptions.build("noise(0.1,0.3)")
  x = _images((8, 16, 16, 3))
  diff = np.asarray(op(key, x)) - np.asarray(x)
  stds = diff.std(axis=(1, 2, 3))
  sigma = np.asarray(op.sample(key, x.shape)["sigma"])
  # 768 samples per image: relative std error about 2.5%.
  np.testing.assert_allclose(stds, sigma, rtol=0.1)
  assert np.all((sigma >= 0.1) & (sigma < 0.3))
  assert np.all((stds > 0.09) & (stds < 0.33))
  assert stds.max() - stds.min() > 0.02


def _blur_reference(images, n, sigma):
  """Direct 2-D correlation with the full n x n Gaussian kernel, reflect padded, in float64."""
  taps = np.arange(n) - (n - 1) / 2
  g = np.exp(-taps**2 / (2 * sigma**2))
  kernel = np.outer(g, g) / np.outer(g, g).sum()
  r = (n - 1) // 2
  padded = np.pad(np.asarray(images, np.float64), ((0, 0), (r, r), (r, r), (0, 0)),
                  mode="reflect")
  _, h, w, _ = images.shape
  out = np.zeros(images.shape)
  for u in range(n):
    for v in range(n):
      out += kernel[u, v] * padded[:, u:u + h, v:v + w]
  return out


@pytest.mark.parametrize("n, sigma, size", [(1, 1.0, 16), (5, 1.5, 16), (21, 5.0, 16),
                                            (37, 9.0, 28)])
def test_blur_matches_direct_convolution(n, sigma, size, key):
  x = _images((2, size, size + 3, 3))
  y = corruptions.build(f"blur({n},{sigma})")(key, x)
  np.testing.assert_allclose(y, _blur_reference(x, n, sigma), atol=1e-5)


def test_blur_range_uses_each_images_sigma(key):
  op = corruptions.build("blur(9,0.5,3)")
  x = _images((4, 16, 16, 3))
  y = np.asarray(op(key, x))
  sigma = np.asarray(op.sample(key, x.shape)["sigma"])
  assert len(set(sigma.tolist())) == len(sigma)
  for i, s in enumerate(sigma):
    np.testing.assert_allclose(y[i:i + 1], _blur_reference(x[i:i + 1], 9, float(s)), atol=1e-5)


def test_blur_kernel_larger_than_image_is_rejected(key):
  op = corruptions.build("blur(9,2)")
  for shape in [(1, 4, 8, 1), (1, 8, 4, 1)]:
    with pytest.raises(ValueError, match=re.escape("blur(9,2)") + f".*{shape[1]}x{shape[2]}"):
      op(key, _images(shape))
  # Half-width 4 needs at least 5 pixels per side.
  assert op(key, _images((1, 5, 5, 1))).shape == (1, 5, 5, 1)


def test_identity_returns_input(key):
  x = _images()
  np.testing.assert_array_equal(corruptions.build("identity")(key, x), x)


def test_composition_order(key):
  x = _images()
  assert np.any(np.asarray(corruptions.build("noise(0.1)|mask(0.5)")(key, x)) == 0)
  assert not np.any(np.asarray(corruptions.build("mask(0.5)|noise(0.1)")(key, x)) == 0)


def test_operators_are_static_args(key):
  x = _images()
  run = jax.jit(lambda op, k, im: op(k, im), static_argnums=0)
  np.testing.assert_array_equal(run(corruptions.build("mask(0.5)"), key, x),
                                run(corruptions.build(" mask(0.5) "), key, x))
  assert corruptions.build("mask(0.5)") != corruptions.build("mask(0.75)")
