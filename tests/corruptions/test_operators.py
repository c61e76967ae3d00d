"""rrjax.corruptions.operators: every operator by name (shape, determinism, sample/apply) and
each against its definition."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats

from rrjax import corruptions
from rrjax.corruptions import host_ops, operators

# One fixed and one range spec per registered operator, and compositions.
SPECS = {
    "mask": ["mask(0.75)", "mask(0.5,0.95)"],
    "noise": ["noise(0.3)", "noise(0.1,0.3)"],
    "blur": ["blur(5,1.5)", "blur(7,0.5,2)"],
    "identity": ["identity"],
    "down": ["down(2)", "down(3)"],  # A fixed factor only; 3 does not divide 16.
    "box": ["box(0.25)", "box(0.1,0.5)"],
    "poisson": ["poisson(20)", "poisson(5,50)"],
    "motion": ["motion(5,30)", "motion(7)"],  # A fixed angle, and one drawn per image.
    "jpeg": ["jpeg(50)", "jpeg(10,90)"],  # Against PIL: test_jpeg.py.
    "oneof": ["oneof(mask(0.9);noise(0.1,0.5);blur(5,1.5))",
              "oneof(3:box(0.1,0.5)|noise(0.1);1:oneof(down(2);motion(5)))"],
    "compose": ["mask(0.5)|noise(0.1)", "noise(0.1,0.3)|blur(5,0.5,2)|mask(0.25,0.75)"],
}
# The ImageNet-C corruptions (host_ops: NumPy on the host), one severity each, 1 to 5 in turn;
# against their definitions and the reference: test_imagenet_c*.py, test_host_ops.py.
SPECS.update({name: [f"{name}({i % 5 + 1})"] for i, name in enumerate(host_ops.OPERATORS)})
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
  # Between them every operator, fixed or with a range, but poisson
  # (test_poisson_range_draws_a_peak_per_image).
  for spec in SPECS["compose"] + SPECS["oneof"][1:]:
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


@pytest.mark.parametrize("spec", ["down(1)", "box(0)", "motion(1)", "motion(1,45)",
                                  "oneof(identity)"])
def test_severity_zero_is_the_identity(spec, key):
  x = _images()
  np.testing.assert_array_equal(corruptions.build(spec)(key, x), x)


def _down_reference(images, f):
  """Block means (a partial last block averages what it has), replicated, in float64."""
  x = np.asarray(images, np.float64)
  out = np.empty_like(x)
  for i in range(0, x.shape[1], f):
    for j in range(0, x.shape[2], f):
      out[:, i:i + f, j:j + f] = x[:, i:i + f, j:j + f].mean(axis=(1, 2), keepdims=True)
  return out


@pytest.mark.parametrize("f, shape", [(2, (2, 8, 6, 3)), (3, (2, 7, 10, 3)), (4, (1, 9, 9, 1)),
                                      (16, (1, 5, 7, 2))])
def test_down_is_block_means_replicated(f, shape, key):
  # Divisible sizes, partial last blocks in both directions, a factor beyond the image.
  x = _images(shape)
  y = corruptions.build(f"down({f})")(key, x)
  np.testing.assert_allclose(y, _down_reference(x, f), atol=1e-6)
  # Replication: each block holds one value, so the measurement is recovered exactly.
  np.testing.assert_array_equal(np.asarray(y)[:, ::f, ::f],
                                np.asarray(y)[:, ::f, ::f].repeat(f, 1).repeat(f, 2)[:, ::f, ::f])


def _box_of(y):
  """(top, left, height, width) of the zeroed all-channel region of each image, or None."""
  zero = np.all(np.asarray(y) == 0, axis=-1)
  boxes = []
  for z in zero:
    rows, cols = np.nonzero(z)
    if rows.size == 0:
      boxes.append(None)
      continue
    top, left = rows.min(), cols.min()
    height, width = rows.max() - top + 1, cols.max() - left + 1
    assert z.sum() == height * width  # A filled rectangle.
    boxes.append((top, left, height, width))
  return boxes


@pytest.mark.parametrize("s, shape, side", [(0.25, (4, 16, 16, 3), 8), (0.1, (8, 12, 20, 3), 5),
                                            (1.0, (4, 8, 12, 1), 8), (0.001, (2, 8, 8, 1), 0)])
def test_box_zeroes_one_square_of_the_area(s, shape, side, key):
  x = _images(shape)
  y = np.asarray(corruptions.build(f"box({s})")(key, x))
  for b, box in enumerate(_box_of(y)):
    if side == 0:
      assert box is None
      continue
    assert box[2:] == (side, side)  # round(sqrt(s H W)), at most min(H, W).
    outside = np.ones(shape[1:3], bool)
    outside[box[0]:box[0] + side, box[1]:box[1] + side] = False
    np.testing.assert_array_equal(y[b][outside], np.asarray(x)[b][outside])


def test_box_position_is_uniform(key):
  # 6x6 images, side 3: 16 corner positions, each with probability 1/16.
  b = 3200
  y = corruptions.build("box(0.25)")(key, jnp.ones((b, 6, 6, 1)))
  corners = np.array([box[0] * 4 + box[1] for box in _box_of(y)])
  counts = np.bincount(corners, minlength=16)
  assert scipy.stats.chisquare(counts).pvalue > 1e-4, counts


def test_box_range_uses_each_images_side(key):
  op = corruptions.build("box(0.1,0.5)")
  x = _images()
  sides = np.asarray(op.sample(key, x.shape)["side"])
  assert len(set(sides.tolist())) > 1 and np.all((sides >= 5) & (sides <= 11))
  for box, side in zip(_box_of(op(key, x)), sides):
    assert box[2:] == (side, side)


# Per image: (constant x, peak). Means 6 (inversion), 35 and 1500 (rejection), 0.5; a rate
# clipped to 0 and to 1; a peak so large that the noise all but vanishes.
_POISSON_CASES = ((0.3, 20.0), (0.7, 50.0), (0.5, 3000.0), (1.0, 0.5), (-0.5, 7.0), (1.5, 30.0),
                  (0.4, 1e6))


@pytest.fixture(scope="module")
def poisson_draws():
  """The operator's output for `_POISSON_CASES`, one image each, 32x32x3: one compilation."""
  x = jnp.stack([jnp.full((32, 32, 3), v, jnp.float32) for v, _ in _POISSON_CASES])
  params = {"peak": jnp.asarray([peak for _, peak in _POISSON_CASES], jnp.float32)}
  apply = jax.jit(corruptions.build("poisson(1)").apply)  # apply reads only params' peak.
  return np.asarray(apply(jax.random.key(0), params, x))


@pytest.mark.parametrize("case", range(4))
def test_poisson_counts_follow_scipy(case, poisson_draws):
  # The counts y * peak of 3072 pixels at one x against scipy.stats.poisson by chi-square, and
  # mean ~ x, variance ~ x / peak.
  x, peak = _POISSON_CASES[case]
  lam = x * peak
  y = poisson_draws[case].reshape(-1).astype(np.float64)
  counts = y * peak
  np.testing.assert_allclose(counts, np.round(counts), atol=1e-3 * max(1, lam))
  counts = np.round(counts).astype(int)
  dist = scipy.stats.poisson(lam)
  lo, hi = int(dist.ppf(0.002)), int(dist.ppf(0.998))
  edges = np.unique(np.linspace(lo, hi + 1, 20).astype(int))  # Bins [e_i, e_i+1), tails merged.
  observed = np.bincount(np.searchsorted(edges, counts, side="right"), minlength=edges.size + 1)
  expected = np.diff(np.concatenate([[0], dist.cdf(edges - 1), [1]])) * counts.size
  used = expected > 0
  chi2 = ((observed[used] - expected[used])**2 / expected[used]).sum()
  assert scipy.stats.chi2.sf(chi2, used.sum() - 1) > 1e-4, (observed, expected)
  n = counts.size
  assert abs(y.mean() - x) < 5 * np.sqrt(x / peak / n)
  assert abs(y.var() / (x / peak) - 1) < 5 * np.sqrt(2 / n) + 5 / np.sqrt(n * lam)


def test_poisson_clips_the_rate_and_vanishes_at_large_peak(poisson_draws):
  np.testing.assert_array_equal(poisson_draws[4], 0)  # Rate clip(-0.5) = 0: no photons.
  assert abs(poisson_draws[5].mean() - 1) < 5 / np.sqrt(30 * 3072)  # Rate clip(1.5) = 1.
  # Severity 0 is peak -> infinity: at 1e6 the std is 6e-4.
  np.testing.assert_allclose(poisson_draws[6], 0.4, atol=4e-3)


def test_poisson_range_draws_a_peak_per_image(key):
  op = corruptions.build("poisson(5,50)")
  x = _images()
  y = np.asarray(op(key, x))
  peak = np.asarray(op.sample(key, x.shape)["peak"])
  assert np.all((peak >= 5) & (peak < 50)) and len(set(peak.tolist())) == 4
  # Per image (768 pixels): E (y - x)^2 = mean(x) / peak; relative std error below 7%.
  np.testing.assert_allclose(((y - np.asarray(x))**2).mean(axis=(1, 2, 3)),
                             np.asarray(x).mean(axis=(1, 2, 3)) / peak, rtol=0.3)
  np.testing.assert_array_equal(op(key, x[:3]), y[:3])  # Image i's draws ignore the batch.


def _motion_reference_kernel(n, angle):
  """The motion kernel by its own construction: a loop over the n points, splatting each to
  its floor/ceil neighbours (float64), independently of `operators.motion_kernel`."""
  r = (n - 1) // 2
  kernel = np.zeros((n + 1, n + 1))
  theta = np.deg2rad(angle)
  for k in range(n):
    t = k - r
    x, y = t * np.cos(theta) + r, -t * np.sin(theta) + r  # In kernel coordinates.
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    for dy, wy in ((0, 1 - fy), (1, fy)):
      for dx, wx in ((0, 1 - fx), (1, fx)):
        kernel[y0 + dy, x0 + dx] += wy * wx
  assert kernel[n].sum() < 1e-9 and kernel[:, n].sum() < 1e-9
  return kernel[:n, :n] / kernel[:n, :n].sum()


@pytest.mark.parametrize("n", [3, 7])
def test_motion_at_0_and_90_is_a_box_filter(n, key):
  x = _images((2, 12, 15, 3))
  box = np.full(n, 1 / n)
  for angle, axis in ((0, 2), (90, 1), (180, 2)):
    y = corruptions.build(f"motion({n},{angle})")(key, x)
    expected = scipy.ndimage.correlate1d(np.asarray(x, np.float64), box, axis=axis, mode="mirror")
    np.testing.assert_allclose(y, expected, atol=1e-6, err_msg=f"angle {angle}")


def _correlate(images, kernel):
  return np.stack([np.stack([scipy.ndimage.correlate(np.asarray(im[..., c], np.float64), kernel,
                                                     mode="mirror")
                             for c in range(im.shape[-1])], axis=-1) for im in images])


@pytest.mark.parametrize("n, angle", [(5, 30), (9, 45), (7, 112.5), (9, 171)])
def test_motion_matches_scipy_correlate(n, angle, key):
  x = _images((2, 13, 16, 3))
  kernel = _motion_reference_kernel(n, angle)
  np.testing.assert_allclose(operators.motion_kernel(n, angle, np), kernel, atol=1e-12)
  y = corruptions.build(f"motion({n},{angle})")(key, x)
  np.testing.assert_allclose(y, _correlate(x, kernel), atol=1e-6)


def test_motion_draws_an_angle_per_image(key):
  op = corruptions.build("motion(7)")
  x = _images((4, 12, 12, 3))
  angle = np.asarray(op.sample(key, x.shape)["angle"])
  assert np.all((angle >= 0) & (angle < 180)) and len(set(angle.tolist())) == 4
  y = np.asarray(op(key, x))
  for i, a in enumerate(angle):
    np.testing.assert_allclose(y[i:i + 1], _correlate(x[i:i + 1],
                                                      _motion_reference_kernel(7, float(a))),
                               atol=1e-5)


def test_motion_kernel_larger_than_image_is_rejected(key):
  with pytest.raises(ValueError, match=re.escape("motion(9)") + ".*4x8"):
    corruptions.build("motion(9)")(key, _images((1, 4, 8, 1)))


def test_oneof_choices_follow_the_weights(key):
  # 4000 images: chi-square of the chosen alternatives against the weights 3:1:0.5.
  op = corruptions.build("oneof(3:mask(0.9);1:noise(0.5);0.5:identity)")
  index = np.asarray(op.sample(key, (4000, 4, 4, 1))["index"])
  counts = np.bincount(index, minlength=3)
  expected = 4000 * np.array([3, 1, 0.5]) / 4.5
  assert scipy.stats.chisquare(counts, expected).pvalue > 1e-4, counts
  uniform = corruptions.build("oneof(mask(0.9);noise(0.5);identity;box(0.5))")
  counts = np.bincount(np.asarray(uniform.sample(key, (4000, 4, 4, 1))["index"]), minlength=4)
  assert scipy.stats.chisquare(counts).pvalue > 1e-4, counts


def test_oneof_gives_each_image_its_chosen_alternative():
  op = corruptions.build(SPECS["oneof"][1])
  x = _images()
  chosen = set()
  for seed in range(4):
    key = jax.random.key(seed)
    y = np.asarray(op(key, x))
    index = np.asarray(op.sample(key, x.shape)["index"])
    chosen.update(index.tolist())
    for j, alternative in enumerate(op.ops):
      # Alternative j runs on the whole batch with fold_in(key, j + 1).
      expected = np.asarray(alternative(jax.random.fold_in(key, j + 1), x))
      np.testing.assert_allclose(y[index == j], expected[index == j], atol=1e-6, err_msg=str(j))
  assert chosen == set(range(len(op.ops)))


def test_oneof_random_is_whether_the_output_can_vary():
  assert not corruptions.build("oneof(down(2))").random
  assert not corruptions.build("oneof(down(2);down(2))").random
  assert corruptions.build("oneof(down(2);down(4))").random
  assert corruptions.build("oneof(mask(0.5))").random


def test_new_operators_keep_bfloat16(key):
  x = _images().astype(jnp.bfloat16)
  for spec in ("down(3)", "box(0.25)", "motion(5,30)", "oneof(down(2);identity)"):
    assert corruptions.build(spec)(key, x).dtype == jnp.bfloat16, spec
