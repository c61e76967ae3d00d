"""rrjax.corruptions.imagenet_c against the reference implementation, imagecorruptions 1.1.2
(the size-independent port of the ImageNet-C code), on two photos at 224 x 224.

  * Deterministic corruptions: PSNR of ours against the reference's output, both in [0, 255]
    before any 8-bit rounding (the reference's corruption functions, not its `corrupt`, which
    truncates to uint8).
  * glass_blur, motion_blur, snow, fog, elastic_transform: fed the reference's own random draws
    (np.random seeded as the reference is, its draws repeated in its order), ours must give its
    output (PSNR).
  * Every random corruption: the mean and std of (corrupted - clean), averaged over fixed seeds,
    against the reference's (whose draws come from np.random, ours from a Generator).

Run in the reference venv (`make test-reference`; imagecorruptions and
opencv-python-headless there). The reference predates NumPy 2, scikit-image 0.19 and
setuptools 81; three test-only patches let it run unchanged rather than skipping:
  * `pkg_resources` (gone from setuptools >= 81), imported by imagecorruptions for one
    function, resource_filename: a stand-in module during the import only.
  * fog: `np.float_` (removed in NumPy 2) is set to np.float64 during each test.
  * glass_blur: `gaussian(..., multichannel=True)` (removed in scikit-image 0.19) is replaced,
    during each test, by scikit-image's gaussian with channel_axis=-1, the same filter.
"""

import contextlib
import importlib
import os
import sys
import types

import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage import filters

from rrjax.corruptions import imagenet_c

pytestmark = pytest.mark.reference


@contextlib.contextmanager
def _pkg_resources_stand_in():
  """A `pkg_resources` with resource_filename alone, in sys.modules for the block only."""
  if importlib.util.find_spec("pkg_resources") is not None:
    yield
    return
  stand_in = types.ModuleType("pkg_resources")
  stand_in.resource_filename = lambda package, path: os.path.join(
      os.path.dirname(sys.modules[package].__file__), path)
  sys.modules["pkg_resources"] = stand_in
  try:
    yield
  finally:
    del sys.modules["pkg_resources"]


with _pkg_resources_stand_in():
  imagecorruptions = pytest.importorskip("imagecorruptions")
reference = importlib.import_module("imagecorruptions.corruptions")

PHOTOS = ("astronaut", "chelsea")
SIZE = 224


@pytest.fixture(autouse=True)
def _modern_libraries(monkeypatch):
  monkeypatch.setattr(np, "float_", np.float64, raising=False)

  def gaussian(image, sigma=1, multichannel=None, **kwargs):
    if multichannel:
      kwargs["channel_axis"] = -1
    return filters.gaussian(image, sigma=sigma, **kwargs)

  monkeypatch.setattr(reference, "gaussian", gaussian)


def _photo(name):
  """uint8 `[224, 224, 3]`: the centre square of skimage's photo, resized (bicubic)."""
  image = Image.fromarray(getattr(data, name)()[..., :3])
  w, h = image.size
  side = min(w, h)
  left, top = (w - side) // 2, (h - side) // 2
  image = image.crop((left, top, left + side, top + side))
  return np.asarray(image.resize((SIZE, SIZE), Image.BICUBIC))


def _reference(name, severity, photo, seed=0):
  """The reference's output in [0, 255], float64, np.random seeded with `seed`."""
  np.random.seed(seed)
  out = getattr(reference, name)(Image.fromarray(photo), severity)
  return np.clip(np.asarray(out, np.float64), 0, 255)


def _ours(name, severity, photo, seed=0):
  out = imagenet_c.corrupt(name, severity, photo / np.float32(255), np.random.default_rng(seed))
  return out.astype(np.float64) * 255


def _psnr(a, b):
  mse = np.mean((a - b)**2)
  return np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse)


# PSNR bounds (dB). Measured (astronaut / chelsea, the lowest over severities; Pillow 13,
# scikit-image 0.26, SciPy 1.17, OpenCV 5.0): defocus_blur 150 / 150, zoom_blur 148 / 149,
# brightness 153 / 151, contrast 156 / 155, jpeg_compression 158 / 156: float rounding alone,
# so 100 dB. pixelate 53 / 53: the reference resizes 8-bit images and Pillow rounds each
# coarse pixel to a gray level, ours is not rounded (half a level at most, 1/sqrt(12) rms:
# 57 dB for rounding everywhere).
DETERMINISTIC = {"defocus_blur": 100, "zoom_blur": 100, "brightness": 100, "contrast": 100,
                 "pixelate": 50, "jpeg_compression": 100}


@pytest.mark.parametrize("photo_name", PHOTOS)
@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_match_reference(name, photo_name):
  photo = _photo(photo_name)
  psnr = [_psnr(_ours(name, s, photo), _reference(name, s, photo))
          for s in imagenet_c.SEVERITIES]
  assert min(psnr) > DETERMINISTIC[name], f"{name} on {photo_name}: PSNR {np.round(psnr, 1)}"


def _same_draws(name, severity, image, seed):
  """Ours on `image [224, 224, 3]` in [0, 1] from the reference's draws after np.random.seed."""
  np.random.seed(seed)
  h, w = image.shape[:2]
  if name == "glass_blur":
    _, d, sweeps = imagenet_c._GLASS_BLUR[severity - 1]
    offsets = np.array([[[np.random.randint(-d, d, size=(2,)) for _ in range(w - d, d, -1)]
                         for _ in range(h - d, d, -1)] for _ in range(sweeps)])
    return imagenet_c._glass_blur_from(image, severity, offsets)
  if name == "motion_blur":
    radius, sigma = imagenet_c._MOTION_BLUR[severity - 1]
    return imagenet_c._motion_blur_from(image, radius, sigma, np.random.uniform(-45, 45))
  if name == "snow":
    mean, std = imagenet_c._SNOW[severity - 1][:2]
    noise = np.random.normal(size=(h, w), loc=mean, scale=std)
    return imagenet_c._snow_from(image, severity, noise, np.random.uniform(-135, -45))
  if name == "fog":
    size = 1 << (max(h, w) - 1).bit_length()
    decay = imagenet_c._FOG[severity - 1][1]
    plasma = imagenet_c._plasma_fractal(size, decay, lambda shape: np.random.uniform(-1, 1, shape))
    return imagenet_c._fog_from(image, severity, plasma)
  if name == "elastic_transform":
    bound = h * 0.005
    raw_dx = np.random.uniform(-bound, bound, size=(h, w))
    raw_dy = np.random.uniform(-bound, bound, size=(h, w))
    return imagenet_c._elastic_from(image, severity, raw_dx, raw_dy)
  raise ValueError(name)


# Measured (astronaut / chelsea, lowest over severities): glass_blur inf / inf (bit-identical),
# motion_blur 314 / 314, snow 150 / 148, fog 319 / 320, elastic_transform 153 / 152.
@pytest.mark.parametrize("photo_name", PHOTOS)
@pytest.mark.parametrize("name", ["glass_blur", "motion_blur", "snow", "fog",
                                  "elastic_transform"])
def test_same_draws_match_reference(name, photo_name):
  photo = _photo(photo_name)
  psnr = []
  for severity in imagenet_c.SEVERITIES:
    ours = np.clip(_same_draws(name, severity, photo / 255.0, seed=severity), 0, 1) * 255
    psnr.append(_psnr(ours, _reference(name, severity, photo, seed=severity)))
  assert min(psnr) > 100, f"{name} on {photo_name}: PSNR {np.round(psnr, 1)}"


def _frost_seeds(per_photo):
  """Seeds after which the reference picks each of its 5 frost photos `per_photo` times."""
  seeds = {k: [] for k in range(5)}
  for seed in range(1000):
    np.random.seed(seed)
    pick = np.random.randint(5)
    if len(seeds[pick]) < per_photo:
      seeds[pick].append(seed)
  return sorted(s for group in seeds.values() for s in group)


# Per corruption: the seeds, then the bounds on |mean ours - mean reference| (in [0, 1]) and on
# |std ours / std reference - 1| of (corrupted - clean), each averaged over the seeds, at every
# severity. The measured worst (astronaut / chelsea) is beside each; the bounds leave room for
# the sampling error of a different set of draws, which the per-seed spread sets.
STATISTICS = {
    # mean 0.0001 / 0.0001, std 0.1% / 0.1%
    "gaussian_noise": (range(8), 0.002, 0.01),
    # mean 0.0002 / 0.0004, std 0.3% / 0.1%
    "shot_noise": (range(8), 0.002, 0.01),
    # mean 0.0007 / 0.0004, std 0.8% / 0.4% (another run: 0.0003 / 0.0003, 1.2% / 0.7%): the
    # reference's draws are unseeded (scikit-image's random_noise makes its own Generator), so
    # these numbers vary from run to run
    "impulse_noise": (range(8), 0.002, 0.03),
    # mean 0.0020 / 0.0005, std 0.4% / 1.4% (the reference takes about a second an image)
    "glass_blur": (range(2), 0.005, 0.03),
    # mean 0.0015 / 0.0003, std 0.6% / 0.4%: one angle per image, the spread across seeds
    "motion_blur": (range(8), 0.005, 0.03),
    # mean 0.0024 / 0.0018, std 1.8% / 0.8%
    "snow": (range(8), 0.01, 0.05),
    # mean 0.0077 / 0.0067, std 0.6% / 0.9%: one seed's mean spreads 0.04 to 0.05 about the
    # average (the plasma's coarsest levels are a handful of draws)
    "fog": (range(64), 0.02, 0.03),
    # mean 0.0053 / 0.0056, std 9.6% / 7.1% (ours is smoother): a different texture (procedural,
    # not the photographs) with about their mean colour and contrast. Seeds balanced so that
    # the reference uses each of its 5 photos 4 times (one photo's mean spreads 0.04 to 0.10).
    "frost": (_frost_seeds(4), 0.02, 0.15),
    # mean 0.0013 / 0.0005, std 1.8% / 0.3%
    "elastic_transform": (range(16), 0.005, 0.05),
}


@pytest.mark.parametrize("photo_name", PHOTOS)
@pytest.mark.parametrize("name", list(STATISTICS))
def test_statistics_match_reference(name, photo_name):
  seeds, mean_bound, std_bound = STATISTICS[name]
  photo = _photo(photo_name)
  clean = photo.astype(np.float64)
  for severity in imagenet_c.SEVERITIES:
    ours, ref = [], []
    for seed in seeds:
      diff = (_ours(name, severity, photo, seed) - clean) / 255
      ours.append((diff.mean(), diff.std()))
      diff = (_reference(name, severity, photo, seed) - clean) / 255
      ref.append((diff.mean(), diff.std()))
    (mean, std), (ref_mean, ref_std) = np.mean(ours, axis=0), np.mean(ref, axis=0)
    message = (f"{name} {severity} on {photo_name}: mean {mean:+.4f} vs {ref_mean:+.4f}, "
               f"std {std:.4f} vs {ref_std:.4f}")
    assert abs(mean - ref_mean) < mean_bound, message
    assert abs(std / ref_std - 1) < std_bound, message
