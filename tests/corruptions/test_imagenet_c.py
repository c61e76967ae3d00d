"""rrjax.corruptions.imagenet_c: every corruption x severity keeps shape, dtype and range, is
deterministic per seed and random only where the definition is, distorts more with severity,
rejects bad arguments; the helpers against Pillow, scikit-image, SciPy and a literal loop.

The comparison with the reference implementation (imagecorruptions) is
test_imagenet_c_reference.py (`make test-reference`)."""

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage import color, data, transform

from rrjax.corruptions import imagenet_c
from rrjax.corruptions.imagenet_c import NAMES, SEVERITIES, corrupt

# The corruptions that draw nothing: the same output for any rng.
DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate",
                 "jpeg_compression"}
CASES = [(name, severity) for name in NAMES for severity in SEVERITIES]


def _astronaut(size):
  return transform.resize(data.astronaut(), (size, size), anti_aliasing=True).astype(np.float32)


IMAGE32 = _astronaut(32)


def test_names_and_severities():
  assert NAMES == ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur",
                   "glass_blur", "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness",
                   "contrast", "elastic_transform", "pixelate", "jpeg_compression")
  assert SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name,severity", CASES)
def test_shape_dtype_range_and_seeds(name, severity):
  x = IMAGE32.copy()
  y = corrupt(name, severity, x, np.random.default_rng(0))
  assert y.shape == x.shape and y.dtype == np.float32
  assert np.all(np.isfinite(y)) and y.min() >= 0 and y.max() <= 1
  assert np.array_equal(x, IMAGE32), "the input was modified"
  assert not np.array_equal(y, x), "no corruption"
  again = corrupt(name, severity, x, np.random.default_rng(0))
  assert np.array_equal(y, again), "not deterministic for a fixed seed"
  other = corrupt(name, severity, x, np.random.default_rng(1))
  if name in DETERMINISTIC:
    assert np.array_equal(y, other)
  else:
    assert not np.array_equal(y, other), "the seed changes nothing"


@pytest.mark.parametrize("shape", [(8, 8, 3), (13, 40, 3), (41, 9, 3), (224, 224, 3)])
def test_any_size(shape):
  x = np.random.default_rng(3).random(shape, dtype=np.float32)
  for name in NAMES:
    y = corrupt(name, 5, x, np.random.default_rng(0))
    assert y.shape == shape and y.dtype == np.float32, name
    assert np.all(np.isfinite(y)) and y.min() >= 0 and y.max() <= 1, name


def test_float64_input():
  y = corrupt("fog", 2, IMAGE32.astype(np.float64), np.random.default_rng(0))
  assert y.dtype == np.float32
  assert np.array_equal(y, corrupt("fog", 2, IMAGE32, np.random.default_rng(0)))


def test_global_random_state_untouched():
  np.random.seed(123)
  expected = np.random.random(4)
  np.random.seed(123)
  outputs = [corrupt(name, 3, IMAGE32, np.random.default_rng(5)) for name in NAMES]
  assert np.array_equal(np.random.random(4), expected), "np.random's global state was used"
  np.random.seed(999)  # another global state: the same outputs
  for name, out in zip(NAMES, outputs):
    assert np.array_equal(corrupt(name, 3, IMAGE32, np.random.default_rng(5)), out), name


# Severity raises the distortion: the mean squared difference to the clean image (64 px
# astronaut, averaged over 3 seeds) does not decrease from one severity to the next, except
# where ImageNet-C's own parameters make it decrease (the reference shows the same, see
# test_imagenet_c_reference.py's statistics):
#   glass_blur 3 -> 4: (sigma, d, sweeps) (1, 2, 3) -> (1.1, 3, 2), one sweep fewer (MSE x0.88);
#   frost 3 -> 4: weights (.7 x + .7 F) -> (.65 x + .7 F): less of the image but the same frost,
#     and the frost is brighter than most pixels, so the image moves less (x0.93).
KNOWN_DECREASES = {("glass_blur", 3), ("frost", 3)}


@pytest.mark.parametrize("name", NAMES)
def test_severity_increases_distortion(name):
  x = _astronaut(64)
  mse = [np.mean([np.mean((corrupt(name, s, x, np.random.default_rng(seed)) - x)**2)
                  for seed in range(3)]) for s in SEVERITIES]
  for s in SEVERITIES[:-1]:
    if (name, s) in KNOWN_DECREASES:
      assert mse[s] < mse[s - 1], f"{name} {s} -> {s + 1} no longer decreases: update the list"
    else:
      assert mse[s] >= mse[s - 1], f"{name} severity {s + 1} distorts less than {s}: {mse}"
  assert mse[-1] > 1.1 * mse[0], f"{name}: {mse}"


@pytest.mark.parametrize("name", ["fog ", "Gaussian_noise", "speckle_noise", "", "gaussian_blur"])
def test_unknown_name(name):
  with pytest.raises(ValueError, match="unknown ImageNet-C corruption"):
    corrupt(name, 1, IMAGE32, np.random.default_rng(0))


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, True, "3", None])
def test_bad_severity(severity):
  with pytest.raises(ValueError, match="severity must be an int in 1..5"):
    corrupt("fog", severity, IMAGE32, np.random.default_rng(0))


def test_numpy_int_severity():
  y = corrupt("contrast", np.int64(2), IMAGE32, np.random.default_rng(0))
  assert np.array_equal(y, corrupt("contrast", 2, IMAGE32, np.random.default_rng(0)))


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 1), (32, 32, 4), (7, 32, 3), (32, 7, 3),
                                   (1, 32, 32, 3)])
def test_bad_shape(shape):
  with pytest.raises(ValueError, match=r"image must be \[H, W, 3\] with H, W >= 8"):
    corrupt("fog", 1, np.zeros(shape, np.float32), np.random.default_rng(0))


def test_integer_image_rejected():
  with pytest.raises(ValueError, match="image must be float"):
    corrupt("fog", 1, (IMAGE32 * 255).astype(np.uint8), np.random.default_rng(0))


@pytest.mark.parametrize("rng", [None, 0, np.random.RandomState(0)])
def test_bad_rng(rng):
  with pytest.raises(TypeError, match="np.random.Generator"):
    corrupt("fog", 1, IMAGE32, rng)


# The helpers against independent implementations.


def _literal_glass_sweeps(x8, d, offsets):
  """The definition's loop, as written, on a NumPy array (its tuple "swap" copies)."""
  x = x8.copy()
  h, w = x.shape[:2]
  for sweep in offsets:
    for i, row in enumerate(range(h - d, d, -1)):
      for j, col in enumerate(range(w - d, d, -1)):
        dx, dy = sweep[i, j]
        x[row, col], x[row + dy, col + dx] = x[row + dy, col + dx], x[row, col]
  return x


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("shape", [(16, 20), (9, 12)])
def test_glass_sweeps_equal_the_sequential_loop(shape, severity):
  rng = np.random.default_rng(severity)
  h, w = shape
  _, d, _ = imagenet_c._GLASS_BLUR[severity - 1]
  x8 = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  offsets = imagenet_c._glass_offsets(shape, severity, rng)
  source = np.arange(h * w)
  for sweep in offsets:
    source = imagenet_c._glass_sweep(source, h, w, d, sweep)
  ours = x8.reshape(h * w, 3)[source].reshape(h, w, 3)
  np.testing.assert_array_equal(ours, _literal_glass_sweeps(x8, d, offsets))


@pytest.mark.parametrize("shape", [(32, 32), (37, 50), (8, 8), (100, 76)])
def test_pixelate_equals_pillow(shape):
  h, w = shape
  x = np.random.default_rng(0).random((h, w, 3)).astype(np.float32)
  for severity in SEVERITIES:
    factor = imagenet_c._PIXELATE[severity - 1]
    small = (int(w * factor), int(h * factor))
    expected = np.stack([
        np.asarray(Image.fromarray(x[..., c], mode="F").resize(small, Image.BOX)
                   .resize((w, h), Image.NEAREST)) for c in range(3)], axis=-1)
    np.testing.assert_allclose(corrupt("pixelate", severity, x, np.random.default_rng(0)),
                               expected, atol=1e-6)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_equals_hsv(severity):
  x = np.concatenate([IMAGE32, np.zeros((1, 32, 3), np.float32)])  # black has no hue
  hsv = color.rgb2hsv(x.astype(np.float64))
  hsv[..., 2] = np.clip(hsv[..., 2] + imagenet_c._BRIGHTNESS[severity - 1], 0, 1)
  expected = np.clip(color.hsv2rgb(hsv), 0, 1)
  np.testing.assert_allclose(corrupt("brightness", severity, x, np.random.default_rng(0)),
                             expected, atol=1e-6)


def test_jpeg_equals_pillow():
  pixels = np.round(IMAGE32 * 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="JPEG", quality=15)
  expected = np.asarray(Image.open(buf)) / np.float32(255)
  np.testing.assert_array_equal(corrupt("jpeg_compression", 3, IMAGE32,
                                        np.random.default_rng(0)), expected)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_defocus_equals_direct_correlation(severity):
  x = _astronaut(24).astype(np.float64)  # smaller than the 21 x 21 kernel: repeated mirroring
  kernel = imagenet_c._disk_kernel(*imagenet_c._DEFOCUS_BLUR[severity - 1])
  # 1, except where the disk reaches the grid's edge and the definition's mirrored smoothing
  # counts its rim twice (radius 8 and 10).
  assert kernel.sum() == pytest.approx([1, 1, 1, 1.0129755, 1.0107858][severity - 1], abs=1e-7)
  np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-15)
  np.testing.assert_allclose(kernel, kernel.T, atol=1e-15)
  expected = np.stack([ndimage.correlate(x[..., c], kernel, mode="mirror") for c in range(3)],
                      axis=-1)
  np.testing.assert_allclose(corrupt("defocus_blur", severity, x, np.random.default_rng(0)),
                             np.clip(expected, 0, 1), atol=1e-6)


def test_motion_blur_kernel():
  # angle 0: output column c gathers the input's columns c .. c + 2r with weights
  # exp(-i^2 / 2 sigma^2) / sum; an impulse spreads to the left along its row.
  x = np.zeros((9, 40))
  x[4, 30] = 1
  out = imagenet_c._motion_blur_from(x, radius=10, sigma=3, angle=0.0)
  weights = np.exp(-np.arange(21)**2 / 18)
  weights /= weights.sum()
  expected = np.zeros_like(x)
  expected[4, 30 - np.arange(21)] = weights
  np.testing.assert_allclose(out, expected, atol=1e-15)
  # 90 degrees: along the column, upwards.
  out = imagenet_c._motion_blur_from(x.T.copy(), radius=10, sigma=3, angle=90.0)
  np.testing.assert_allclose(out, expected.T, atol=1e-15)


@pytest.mark.parametrize("severity,factor", zip(SEVERITIES, [0.4, 0.3, 0.2, 0.1, 0.05]))
def test_contrast_scales_about_channel_means(severity, factor):
  y = corrupt("contrast", severity, IMAGE32, np.random.default_rng(0))
  np.testing.assert_allclose(y.mean(axis=(0, 1)), IMAGE32.mean(axis=(0, 1)), atol=1e-6)
  np.testing.assert_allclose(y.std(axis=(0, 1)), factor * IMAGE32.std(axis=(0, 1)), rtol=1e-4)


# The noise tables, on flat images where clipping is negligible (64 x 64 x 3 values).
@pytest.mark.parametrize("severity,std", zip(SEVERITIES[:3], [0.08, 0.12, 0.18]))
def test_gaussian_noise_std(severity, std):
  x = np.full((64, 64, 3), 0.5, np.float32)  # 2.8 std from the bounds at most
  y = corrupt("gaussian_noise", severity, x, np.random.default_rng(0))
  assert (y - x).std() == pytest.approx(std, rel=0.03)
  assert abs((y - x).mean()) < 0.01


@pytest.mark.parametrize("severity,photons", zip(SEVERITIES, [60, 25, 12, 5, 3]))
def test_shot_noise_variance(severity, photons):
  x = np.full((64, 64, 3), 0.2, np.float32)  # Poisson(0.2 c) / c stays below 1 but rarely
  y = corrupt("shot_noise", severity, x, np.random.default_rng(0))
  assert y.var() == pytest.approx(0.2 / photons, rel=0.06)
  assert y.mean() == pytest.approx(0.2, abs=0.01)
  np.testing.assert_allclose(y * photons, np.round(y * photons), atol=1e-4)  # counts / c


@pytest.mark.parametrize("severity,amount", zip(SEVERITIES, [0.03, 0.06, 0.09, 0.17, 0.27]))
def test_impulse_noise_fraction(severity, amount):
  x = np.full((64, 64, 3), 0.5, np.float32)
  y = corrupt("impulse_noise", severity, x, np.random.default_rng(0))
  salt, pepper = np.mean(y == 1), np.mean(y == 0)
  assert salt + pepper == pytest.approx(amount, abs=0.015)
  assert salt == pytest.approx(pepper, abs=0.015)
  assert np.all((y == 0) | (y == 1) | (y == 0.5))


def test_zoom_by_one_is_identity():
  np.testing.assert_array_equal(imagenet_c._zoomed_centre(IMAGE32, 1.0), IMAGE32)


def test_plasma_fractal():
  rng = np.random.default_rng(0)
  plasma = imagenet_c._plasma_fractal(64, 2.0, lambda shape: rng.uniform(-1, 1, shape))
  assert plasma.shape == (64, 64) and plasma.min() == 0 and plasma.max() == 1
  # Smooth: neighbours differ far less than random pixels do.
  step = np.abs(np.diff(plasma, axis=1)).mean()
  assert step < 0.2 * np.abs(plasma - rng.permutation(plasma.ravel()).reshape(64, 64)).mean()


@pytest.mark.parametrize("size", [224, 28])
def test_frost_texture_statistics(size):
  # About the ImageNet-C frost photographs' colour and contrast (mean RGB .57 .66 .70 and std
  # .10 to .11, averaged over the five the definition draws from); at any image size.
  textures = [imagenet_c._frost_texture(size, size, np.random.default_rng(seed))
              for seed in range(4)]
  mean = np.mean([t.mean(axis=(0, 1)) for t in textures], axis=0)
  std = np.mean([t.std(axis=(0, 1)) for t in textures], axis=0)
  np.testing.assert_allclose(mean, [0.57, 0.66, 0.70], atol=0.05)
  assert np.all((std > 0.05) & (std < 0.15)), std
