"""The 15 ImageNet-C corruptions at severities 1 to 5, on the host (NumPy, SciPy, Pillow).

    y = corrupt("fog", 3, image, np.random.default_rng(0))   # float32 [H, W, 3] in [0, 1]

ImageNet-C (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", ICLR 2019) is the ImageNet validation set under 15 corruptions,
each at 5 severities, in four groups: noise (gaussian_noise, shot_noise, impulse_noise), blur
(defocus_blur, glass_blur, motion_blur, zoom_blur), weather (snow, frost, fog) and digital
(brightness, contrast, elastic_transform, pixelate, jpeg_compression). A model's corruption
error is its top-1 error averaged over the 5 severities, and mCE the mean over corruptions of
that error divided by AlexNet's. The functions here are written from the published definitions,
the ImageNet-C release (github.com/hendrycks/robustness, ImageNet-C/imagenet_c) and its
size-independent port, the PyPI package `imagecorruptions` 1.1.2 (Michaelis et al., 2019), which
the reference tests compare against (tests/corruptions/test_imagenet_c_reference.py). Every
parameter table below is theirs (the same in both, except elastic_transform's: see below),
indexed by severity s = 1..5. Parameters the definition gives in pixels stay in pixels at any
image size, as the reference's do: a 28 px image gets the same 10 px defocus disk as a 224 px
one.

x is the image in [0, 1], float [H, W, 3]; every output is clipped to [0, 1], as the reference
clips before it scales to [0, 255]. The output is not rounded to 8 bits (the reference's
`corrupt` truncates it with np.uint8, and the released dataset is JPEG files); the 8-bit steps
inside a definition (glass_blur, snow, pixelate's Pillow resize, jpeg_compression) are kept.
U, N and Poisson are draws from the caller's np.random.Generator, nothing else: the same
seed gives the same output, and the global np.random state is never read or changed.

Noise
  gaussian_noise     x + N(0, c^2), c = .08 .12 .18 .26 .38
  shot_noise         Poisson(c x) / c, c = 60 25 12 5 3
  impulse_noise      salt and pepper: each value (pixel and channel apart) is replaced with
                     probability c by 0 or 1 (even odds), c = .03 .06 .09 .17 .27
Blur
  defocus_blur       x correlated, per channel, with a disk of radius r (pixels with
                     dx^2 + dy^2 <= r^2 on a (2 max(r, 8) + 1)^2 grid, normalised), the disk
                     itself smoothed by a 3x3 (r <= 8) or 5x5 Gaussian of std a, all borders
                     mirrored (d c b | a b c d); (r, a) = (3, .1) (4, .5) (6, .5) (8, .5) (10, .5).
                     The disks of radius 8 and 10 touch the grid's edge, so the mirrored
                     smoothing makes their kernels sum to 1.013 and 1.011, not 1 (kept).
  glass_blur         G_sigma(x), truncated to 8 bits; then `iterations` sweeps over the pixels
                     (rows from H - d down to d + 1, in each columns from W - d down to d + 1),
                     each pixel taking the current value of the one (dy, dx) away, dx and dy
                     uniform integers in [-d, d - 1]; then G_sigma again. G_sigma: Gaussian of
                     std sigma, truncated at 4 sigma, borders repeated. (sigma, d, iterations) =
                     (.7, 1, 2) (.9, 2, 1) (1, 2, 3) (1.1, 3, 2) (1.5, 4, 2). The definition's
                     code means to swap the two pixels, `x[h, w], x[h', w'] = x[h', w'],
                     x[h, w]`, but on a NumPy array the right side holds views, so the second
                     assignment writes back the value just copied: a copy, not a swap. The
                     ImageNet-C images were made so, imagecorruptions does the same, and so
                     does this (a true swap gives other images: 22 to 35 dB PSNR from the
                     reference's on the same draws at 224 px).
  motion_blur        sum_i k_i shift(x, -(round(i sin t), round(i cos t))) for i = 0 .. 2r,
                     k_i proportional to exp(-i^2 / 2 sigma^2) summing to 1, shifts repeating the
                     border, stopping (weights not renormalised) at the first shift as long as
                     the image; angle t ~ U(-45, 45) degrees; (r, sigma) = (10, 3) (15, 5) (15, 8)
                     (15, 12) (20, 15). round(v) is ceil(v - 1/2).
  zoom_blur          (x + sum_z Z_z(x)) / (n + 1) over the n zoom factors z = 1, 1 + d, ..
                     < z_max (np.arange(1, z_max, d)): (z_max, d) = (1.11, .01) (1.16, .01)
                     (1.21, .02) (1.26, .02) (1.31, .03). Z_z: the centre ceil(H/z) x ceil(W/z)
                     crop zoomed by z with bilinear interpolation (scipy.ndimage.zoom, order 1),
                     its top-left H x W kept
Weather
  snow               a layer N(m, s^2) per pixel, zoomed by Z_k, values < t set to 0, clipped
                     to [0, 1], motion-blurred with (r, sigma) and an angle ~ U(-135, -45),
                     rounded to 8 bits; the image x' = b x + (1 - b) max(x, 1.5 gray(x) + .5)
                     with gray = .299 R + .587 G + .114 B; y = x' + layer + layer rotated 180
                     degrees. (m, s, k, t, r, sigma, b) = (.1, .3, 3, .5, 10, 4, .8)
                     (.2, .3, 2, .5, 12, 4, .7) (.55, .3, 4, .9, 12, 8, .7)
                     (.55, .3, 4.5, .85, 12, 8, .65) (.55, .3, 2.5, .85, 12, 12, .55)
  frost              a x + b F, F a frost texture in [0, 1]; (a, b) = (1, .4) (.8, .6) (.7, .7)
                     (.65, .7) (.6, .75). F here is procedural (see below).
  fog                (x + c P) max(x) / (max(x) + c), P the plasma fractal (diamond-square on a
                     periodic 2^k x 2^k grid, 2^k >= max(H, W), cropped to H x W, scaled to
                     [0, 1]); the random displacement at the level with step 2^k / 2^j is
                     U(-w_j^2, w_j^2), w_0 = 100, w_{j+1} = w_j / decay (the definition draws
                     w U(-w, w)); (c, decay) = (1.5, 2) (2, 2) (2.5, 1.7) (2.5, 1.5) (3, 1.4)
Digital
  brightness         in HSV, V <- min(V + c, 1), hue and saturation kept, c = .1 .2 .3 .4 .5;
                     computed as x V' / V (RGB is linear in V at fixed H and S), V = max_c x
  contrast           (x - m) c + m, m the per-channel mean, c = .4 .3 .2 .1 .05
  elastic_transform  x sampled bilinearly at (i + dy, j + dx) with mirrored borders
                     (d c b a | a b c d); dx, dy = alpha G_(H/100, W/100)(U(-H/200, H/200)),
                     G truncated at 3 sigma with mirrored borders; alpha = 250 (.05, .065, .085,
                     .1, .12). This is imagecorruptions' definition, whose displacement scales
                     with the image; the ImageNet-C release's (224 px only) first applies a random
                     affine map (cv2.warpAffine) and uses other constants.
  pixelate           Pillow's BOX resize to int(W c) x int(H c), then its NEAREST resize back:
                     each coarse pixel the mean of the pixels whose centres fall in it, each
                     output pixel the coarse pixel under its centre; c = .6 .5 .4 .3 .25
  jpeg_compression   Pillow (libjpeg) JPEG round trip of round(255 x) at quality
                     q = 25 18 15 10 7

Differs from the reference (imagecorruptions 1.1.2, itself a port of the ImageNet-C code):
  * Every random corruption (the three noises, glass_blur, motion_blur, snow, frost, fog,
    elastic_transform) draws from an np.random.Generator instead of the global np.random, so a
    seed gives other draws than the reference's. Fed the reference's draws (the `_*_from`
    helpers), glass_blur, motion_blur, snow, fog and elastic_transform give its output to
    within float rounding; the reference tests check this.
  * impulse_noise: each value is replaced independently with probability c, as the reference's
    call, scikit-image's random_noise(mode="s&p"), does in the scikit-image tested (0.26); its
    draws come from a Generator it makes itself, unseeded, so even the reference cannot be
    repeated. The 2018 scikit-image that made ImageNet-C may have sampled the positions
    differently in detail (not checked here).
  * frost: the reference blends crops of five frost photographs (CC-licensed, not shipped here).
    F here is a procedural texture, different in every detail but with about their colour and
    contrast (mean RGB .57 .66 .70 and std .10 to .11, averaged over the five the definition
    draws from; ours: the same mean, std .09 to .11): a smooth haze from low-pass filtered noise
    plus fern-like ice crystals, straight stems 6 to 32 px long with side branches at 45 to 70
    degrees, generated on at least 96 x 96 pixels and cropped (`_frost_texture`). Its crystal
    structure is not the photographs' (no large-scale swirls, no bright plates, one look
    instead of five), so frost scores are not comparable with published ImageNet-C frost
    scores; on the reference tests' photos the mean of (frost - clean) is within .006 of the
    reference's, its std 7% to 10% lower.
  * defocus_blur: the disk is correlated in float64 by FFT (scipy.signal.fftconvolve) after
    mirror padding, the reference uses cv2.filter2D and cv2.GaussianBlur (BORDER_REFLECT_101,
    the same borders): equal to within float rounding.
  * motion_blur and snow's blur follow imagecorruptions' shift-and-add kernel; the ImageNet-C
    release used ImageMagick's motion blur (Wand), which imagecorruptions replaced by it.
  * pixelate: the resizes are Pillow's, done here in float (the reference resizes 8-bit images,
    rounding the coarse pixels): within half a gray level. The ImageNet-C release enlarges with
    BOX, which picks the same pixel as NEAREST except at exact ties.
  * elastic_transform: imagecorruptions' definition (above), not the release's affine + elastic.
  * zoom_blur keeps the top-left H x W of each zoomed crop (imagecorruptions); the release kept
    the centre, the same at 224 px for all factors but one pixel apart for some other sizes.
The deterministic ones (defocus_blur, zoom_blur, brightness, contrast, pixelate,
jpeg_compression) match the reference to within float rounding or half a gray level; the
measured PSNRs are in the reference tests.

Time per 224 x 224 image, the slowest severity, one call each on the 2-core development
machine under a load average of 2.6 (another job running): zoom_blur 70 ms (one scipy zoom per
factor, up to 16), pixelate 23 ms, frost 16 ms, shot_noise 6 ms, glass_blur, elastic_transform
and defocus_blur 5 ms, jpeg_compression 5 ms, snow 4 ms, motion_blur 3 ms, brightness 2 ms,
gaussian_noise 2 ms, fog, contrast and impulse_noise 1 ms. glass_blur's sequential pixel copies
are resolved by pointer jumping (`_glass_sweep`), not a Python loop over pixels.
"""

import io
import math

import numpy as np
from PIL import Image
from scipy import ndimage, signal

NAMES: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)

# The parameters per severity, in the order of the definitions above (index severity - 1).
_GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # std
_SHOT_NOISE = (60, 25, 12, 5, 3)  # photons at x = 1
_IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)  # fraction of values replaced
_DEFOCUS_BLUR = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # radius, alias blur std
_GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # std, d, sweeps
_MOTION_BLUR = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # radius, std
# np.arange as the definition writes it: the same floats, so the same zoomed sizes.
_ZOOM_BLUR = (np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
              np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03))
# mean, std, zoom, threshold, blur radius, blur std, image weight
_SNOW = ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
         (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
         (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))
_FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # image, frost weights
_FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # fog weight, wibble decay
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to V
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # factor about the mean
_ELASTIC = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)  # alpha
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # resolution factor
_JPEG = (25, 18, 15, 10, 7)  # quality

# The procedural frost (`_frost_texture`), in pixels: generated on at least this many pixels a
# side and cropped, so that its look does not depend on the image's size.
_FROST_CANVAS = 96
_FROST_TINT = np.array([0.82, 0.94, 1.0])  # bluish white: the photos' mean colour, up to scale
_GRAY = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma, as cv2.COLOR_RGB2GRAY


def corrupt(name: str, severity: int, image: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
  """ImageNet-C's corruption `name` at `severity` (1 to 5) of one image.

  Args:
    name: one of NAMES.
    severity: an int in SEVERITIES.
    image: float [H, W, 3] in [0, 1], H and W at least 8.
    rng: every random draw comes from it (deterministic corruptions do not use it).

  Returns:
    float32 [H, W, 3] in [0, 1].

  Raises:
    ValueError: an unknown name, a severity outside 1..5, or an image that is not a float
      [H, W, 3] array with H, W >= 8.
    TypeError: rng is not an np.random.Generator.
  """
  if name not in _CORRUPTIONS:
    raise ValueError(f"unknown ImageNet-C corruption {name!r}; expected one of "
                     f"{', '.join(NAMES)}")
  if (isinstance(severity, bool) or not isinstance(severity, (int, np.integer))
      or severity not in SEVERITIES):
    raise ValueError(f"severity must be an int in 1..5, got {severity!r}")
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 8:
    raise ValueError(f"image must be [H, W, 3] with H, W >= 8, got shape {image.shape}")
  if not np.issubdtype(image.dtype, np.floating):
    raise ValueError(f"image must be float in [0, 1], got dtype {image.dtype}")
  if not isinstance(rng, np.random.Generator):
    raise TypeError(f"rng must be an np.random.Generator, got {type(rng).__name__}")
  out = _CORRUPTIONS[name](image.astype(np.float64), severity - 1, rng)
  return np.clip(out, 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Each corruption `_<name>(x, s, rng)`: x float64 [H, W, 3], s = severity - 1, the Generator;
# returns float64 [H, W, 3], before `corrupt` clips it. Noise.


def _gaussian_noise(x, s, rng):
  return x + rng.normal(0.0, _GAUSSIAN_NOISE[s], x.shape)


def _shot_noise(x, s, rng):
  photons = _SHOT_NOISE[s]
  return rng.poisson(np.clip(x, 0, 1) * photons) / photons


def _impulse_noise(x, s, rng):
  hit = rng.random(x.shape) < _IMPULSE_NOISE[s]
  salt = rng.random(x.shape) < 0.5
  return np.where(hit, salt.astype(x.dtype), x)


# ---------------------------------------------------------------------------------------------
# Blur.


def _disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
  """The defocus kernel `[2R + 1, 2R + 1]`, R = max(radius, 8).

  The disk dx^2 + dy^2 <= radius^2 (normalised), then smoothed by a 3-tap (radius <= 8) or
  5-tap Gaussian of std `alias_blur` along each axis with mirrored borders, as the definition's
  cv2.GaussianBlur (whose default border is BORDER_REFLECT_101, scipy's "mirror"). It sums to 1
  while the disk stays inside the grid (radius 3, 4, 6); the disks of radius 8 and 10 reach the
  grid's edge, whose mirror adds their rim again: sums 1.0130 and 1.0108, so severities 4 and 5
  also brighten by 1.3% and 1.1%, as in the definition.
  """
  half = max(radius, 8)
  yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
  disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
  disk /= disk.sum()
  taps = np.arange(3 if radius <= 8 else 5) - (1 if radius <= 8 else 2)
  gauss = np.exp(-taps**2 / (2 * alias_blur**2))
  gauss /= gauss.sum()
  disk = ndimage.correlate1d(disk, gauss, axis=0, mode="mirror")
  return ndimage.correlate1d(disk, gauss, axis=1, mode="mirror")


def _correlate_mirror(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """`x [H, W, C]` correlated per channel with an odd square `kernel [K, K]`, borders mirrored.

  Mirror padding (numpy's "reflect": d c b | a b c d) then an FFT convolution with the flipped
  kernel, which is faster than a direct 21 x 21 correlation and equal to float rounding.
  """
  half = kernel.shape[0] // 2
  padded = np.pad(x, ((half, half), (half, half), (0, 0)), mode="reflect")
  return signal.fftconvolve(padded, kernel[::-1, ::-1, None], mode="valid", axes=(0, 1))


def _defocus_blur(x, s, rng):
  del rng
  return _correlate_mirror(x, _disk_kernel(*_DEFOCUS_BLUR[s]))


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian blur of `x [H, W, C]` over H and W (truncated at 4 sigma, borders repeated).

  scikit-image's `gaussian(x, sigma, channel_axis=-1)`, which the definition calls.
  """
  return ndimage.gaussian_filter(x, (sigma, sigma, 0), mode="nearest", truncate=4.0)


def _glass_offsets(shape: tuple[int, ...], severity: int,
                   rng: np.random.Generator) -> np.ndarray:
  """glass_blur's draws: int `[sweeps, H - 2d, W - 2d, 2]` offsets (dx, dy) in [-d, d).

  Row i, column j of a sweep belong to pixel (H - d - i, W - d - j): the visiting order.
  """
  _, d, sweeps = _GLASS_BLUR[severity - 1]
  n_h, n_w = max(shape[0] - 2 * d, 0), max(shape[1] - 2 * d, 0)
  return rng.integers(-d, d, size=(sweeps, n_h, n_w, 2))


def _glass_sweep(source: np.ndarray, h: int, w: int, d: int,
                 offsets: np.ndarray) -> np.ndarray:
  """One sweep of glass_blur's local copies, on `source [H * W]`: the pixel at each position.

  Visiting the pixels (rows H - d down to d + 1, in each row columns W - d down to d + 1), each
  p takes what q = p + (dy, dx) holds at that moment: q's value from this sweep if q was
  visited before p (q is visited and later in raster order), else from before the sweep. That
  recursion, final(p) = final(q) or start(q), is resolved for all pixels at once by pointer
  jumping along the links p -> q (which always go forward in raster order, so they end), in
  about log2 of the longest chain gathers, instead of H W sequential steps.

  Args:
    source: int `[H * W]`, the flat index of the original pixel at each flat position.
    h, w, d: the image's size and the offset bound.
    offsets: int `[H - 2d, W - 2d, 2]` (dx, dy), in visiting order (`_glass_offsets`).

  Returns:
    int `[H * W]`, `source` after the sweep.
  """
  rows, cols = np.arange(d + 1, h - d + 1), np.arange(d + 1, w - d + 1)
  ahead = offsets[::-1, ::-1]  # raster order: [i, j] is pixel (rows[i], cols[j])
  here = (rows[:, None] * w + cols[None, :]).ravel()
  there = ((rows[:, None] + ahead[..., 1]) * w + cols[None, :] + ahead[..., 0]).ravel()
  visited = np.zeros(h * w, bool)
  visited[here] = True
  target = np.arange(h * w)  # whose value before the sweep p ends with, unless linked
  target[here] = there
  link = np.arange(h * w)  # p -> q where p copies q's value from this sweep
  chained = visited[there] & (there > here)
  link[here[chained]] = there[chained]
  while True:
    jumped = link[link]
    if np.array_equal(jumped, link):
      break
    link = jumped
  return source[target[link]]


def _glass_blur_from(x: np.ndarray, severity: int, offsets: np.ndarray) -> np.ndarray:
  """glass_blur of `x [H, W, C]` with the offsets `[sweeps, H - 2d, W - 2d, 2]` (dx, dy)."""
  sigma, d, sweeps = _GLASS_BLUR[severity - 1]
  h, w, c = x.shape
  x8 = np.floor(np.clip(_gaussian(x, sigma), 0, 1) * 255).astype(np.uint8)  # np.uint8(. 255)
  source = np.arange(h * w)
  for sweep in range(sweeps):
    source = _glass_sweep(source, h, w, d, offsets[sweep])
  return _gaussian(x8.reshape(h * w, c)[source].reshape(h, w, c) / 255.0, sigma)


def _glass_blur(x, s, rng):
  return _glass_blur_from(x, s + 1, _glass_offsets(x.shape, s + 1, rng))


def _motion_blur_from(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
  """Shift-and-add motion blur of `x [H, W]` or `[H, W, C]` along `angle` degrees.

  sum_i k_i x(p - (dy_i, dx_i)) over i = 0 .. 2 radius, k_i proportional to
  exp(-i^2 / 2 sigma^2) with sum 1, dy_i = -ceil(i sin(angle) - 1/2) and
  dx_i = -ceil(i cos(angle) - 1/2), the border repeated; the sum stops at the first shift
  as long as the image (its weights are dropped, not redistributed), as the definition does.
  """
  width = 2 * radius + 1
  weights = np.exp(-np.arange(width)**2 / (2 * sigma**2))
  weights /= weights.sum()
  t = np.deg2rad(angle)
  steps = np.arange(width)
  dys = -np.ceil(steps * np.sin(t) - 0.5).astype(int)
  dxs = -np.ceil(steps * np.cos(t) - 0.5).astype(int)
  h, w = x.shape[:2]
  pad = ((width, width), (width, width)) + ((0, 0),) * (x.ndim - 2)
  padded = np.pad(x, pad, mode="edge")
  out = np.zeros_like(x, dtype=np.float64)
  for weight, dy, dx in zip(weights, dys, dxs):
    if abs(dy) >= h or abs(dx) >= w:
      break
    out += weight * padded[width - dy:width - dy + h, width - dx:width - dx + w]
  return out


def _motion_blur(x, s, rng):
  return _motion_blur_from(x, *_MOTION_BLUR[s], rng.uniform(-45, 45))


def _zoomed_centre(x: np.ndarray, factor: float) -> np.ndarray:
  """The centre ceil(H/f) x ceil(W/f) of `x [H, W, C]` zoomed by f (bilinear, scipy's zoom).

  Its size, round(ceil(H/f) f) x round(ceil(W/f) f), is at least H x W.
  """
  h, w = x.shape[:2]
  ch, cw = math.ceil(h / factor), math.ceil(w / factor)
  top, left = (h - ch) // 2, (w - cw) // 2
  return ndimage.zoom(x[top:top + ch, left:left + cw], (factor, factor, 1), order=1)


def _zoom_blur(x, s, rng):
  del rng
  factors = _ZOOM_BLUR[s]
  out = x.copy()
  for factor in factors:
    out += _zoomed_centre(x, factor)[:x.shape[0], :x.shape[1]]
  return out / (len(factors) + 1)


# ---------------------------------------------------------------------------------------------
# Weather.


def _snow_from(x: np.ndarray, severity: int, noise: np.ndarray, angle: float) -> np.ndarray:
  """snow of `x [H, W, 3]` from the layer's draws `noise [H, W]` ~ N(m, s^2) and blur `angle`."""
  _, _, zoom, threshold, radius, sigma, weight = _SNOW[severity - 1]
  h, w = x.shape[:2]
  layer = _zoomed_centre(noise[..., None], zoom)[..., 0]  # blurred first, cropped after
  layer = np.clip(np.where(layer < threshold, 0.0, layer), 0, 1)
  layer = _motion_blur_from(layer, radius, sigma, angle)
  layer = (np.round(layer * 255).astype(np.uint8) / 255.0)[:h, :w, None]
  gray = (x @ _GRAY)[..., None]
  x = weight * x + (1 - weight) * np.maximum(x, gray * 1.5 + 0.5)
  return x + layer + layer[::-1, ::-1]


def _snow(x, s, rng):
  mean, std = _SNOW[s][:2]
  noise = rng.normal(mean, std, x.shape[:2])
  return _snow_from(x, s + 1, noise, rng.uniform(-135, -45))


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
  """Periodic Gaussian-filtered white noise `[H, W]`, about unit std (for H, W >> sigma)."""
  noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
  return noise * (2 * math.sqrt(math.pi) * sigma)  # 1 / std of filtered unit white noise


def _ice_crystals(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
  """Fern-like ice crystals `[h, w]` in [0, 1), periodic (drawn modulo the size).

  Stems (one per 110 px^2 on average) start anywhere, point any way and are U(6, 32) px long;
  from every 3.5 px along a stem two branches leave at +-U(45, 70) degrees (one angle per
  stem), each U(.4, 1) times .45 of the stem left beyond it long. Every path is drawn as points
  0.5 px apart splatted bilinearly, weighted by a per-stem brightness U(.4, 1), blurred (std
  .6 px) and mapped through 1 - exp(-1.6 v).
  """
  n = rng.poisson(h * w / 110)
  y0, x0 = rng.uniform(0, h, n), rng.uniform(0, w, n)
  angle = rng.uniform(0, 2 * np.pi, n)
  length = rng.uniform(6, 32, n)
  bright = rng.uniform(0.4, 1.0, n)
  spread = np.deg2rad(rng.uniform(45, 70, n))
  step = 0.5
  # Stems: [n, m] points.
  t = np.arange(0, 32, step)
  stem_y = y0[:, None] + t * np.sin(angle)[:, None]
  stem_x = x0[:, None] + t * np.cos(angle)[:, None]
  stem_w = np.where(t < length[:, None], bright[:, None], 0.0)
  # Branches: [n, k, 2 sides, p] points.
  base = np.arange(1.5, 32, 3.5)
  jitter = rng.uniform(0.4, 1, (n, base.size, 2))
  branch_len = 0.45 * (length[:, None] - base)[:, :, None] * jitter  # [n, k, 2], <= 0: none
  s = np.arange(step, 0.45 * 32, step)
  side = angle[:, None] + spread[:, None] * np.array([1, -1])  # [n, 2]
  by = (y0[:, None] + base * np.sin(angle)[:, None])[:, :, None, None]
  bx = (x0[:, None] + base * np.cos(angle)[:, None])[:, :, None, None]
  branch_y = by + s * np.sin(side)[:, None, :, None]
  branch_x = bx + s * np.cos(side)[:, None, :, None]
  branch_w = np.where(s < branch_len[..., None], bright[:, None, None, None], 0.0)
  ys = np.concatenate([stem_y.ravel(), branch_y.ravel()])
  xs = np.concatenate([stem_x.ravel(), branch_x.ravel()])
  ws = np.concatenate([stem_w.ravel(), branch_w.ravel()]) * step
  keep = ws > 0
  ys, xs, ws = ys[keep], xs[keep], ws[keep]
  iy, ix = np.floor(ys).astype(int), np.floor(xs).astype(int)
  fy, fx = ys - iy, xs - ix
  density = np.zeros(h * w)
  for oy, ox, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                     (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
    flat = ((iy + oy) % h) * w + (ix + ox) % w
    density += np.bincount(flat, ws * wt, minlength=h * w)
  density = ndimage.gaussian_filter(density.reshape(h, w), 0.6, mode="wrap")
  return 1 - np.exp(-1.6 * density)


def _frost_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
  """A procedural frost texture `[h, w, 3]` in [0, 1] (not ImageNet-C's photographs).

  Luminance .58 + .045 haze + .33 crystals, clipped to [0, 1], tinted bluish white: haze is
  smooth noise (std 16 px, plus half of std 3 px), crystals `_ice_crystals`. Generated on at
  least `_FROST_CANVAS` pixels a side and cropped, so the texture looks the same at any size.
  """
  ch, cw = max(h, _FROST_CANVAS), max(w, _FROST_CANVAS)
  haze = _smooth_noise((ch, cw), 16, rng) + 0.5 * _smooth_noise((ch, cw), 3, rng)
  lum = np.clip(0.58 + 0.045 * haze + 0.33 * _ice_crystals(ch, cw, rng), 0, 1)
  return (lum[..., None] * _FROST_TINT)[:h, :w]


def _frost_from(x: np.ndarray, severity: int, texture: np.ndarray) -> np.ndarray:
  """frost of `x [H, W, 3]` with a texture `[H, W, 3]` in [0, 1]."""
  image_weight, frost_weight = _FROST[severity - 1]
  return image_weight * x + frost_weight * texture


def _frost(x, s, rng):
  return _frost_from(x, s + 1, _frost_texture(*x.shape[:2], rng))


def _plasma_fractal(size: int, decay: float, uniform) -> np.ndarray:
  """Diamond-square plasma `[size, size]` in [0, 1] on a periodic grid; size a power of 2.

  From a zero grid, each level of step 2^j halves the step: the square step sets each cell's
  centre to the mean of its four corners, the diamond step each edge midpoint to the mean of
  its two corners and the two centres beside it (first the midpoints on the grid's rows, then
  those on its columns), each plus w^2 `uniform(shape)` (draws in [-1, 1)), w = 100 at the
  first level and divided by `decay` at each next one. Finally scaled to [0, 1].
  """
  grid = np.zeros((size, size))
  step, wibble = size, 100.0
  while step >= 2:
    half = step // 2
    corner = grid[::step, ::step]
    centre = (corner + np.roll(corner, -1, 0) + np.roll(corner, -1, 1)
              + np.roll(corner, (-1, -1), (0, 1))) / 4
    grid[half::step, half::step] = centre + wibble**2 * uniform(centre.shape)
    centre = grid[half::step, half::step]
    on_rows = (corner + np.roll(corner, -1, 1) + centre + np.roll(centre, 1, 0)) / 4
    grid[::step, half::step] = on_rows + wibble**2 * uniform(on_rows.shape)
    on_cols = (corner + np.roll(corner, -1, 0) + centre + np.roll(centre, 1, 1)) / 4
    grid[half::step, ::step] = on_cols + wibble**2 * uniform(on_cols.shape)
    step, wibble = half, wibble / decay
  grid -= grid.min()
  return grid / grid.max()


def _fog_from(x: np.ndarray, severity: int, plasma: np.ndarray) -> np.ndarray:
  """fog of `x [H, W, 3]` with a plasma map at least H x W (its top-left is used)."""
  weight = _FOG[severity - 1][0]
  peak = x.max()
  h, w = x.shape[:2]
  return (x + weight * plasma[:h, :w, None]) * peak / (peak + weight)


def _fog(x, s, rng):
  size = 1 << (max(x.shape[:2]) - 1).bit_length()  # the next power of 2
  plasma = _plasma_fractal(size, _FOG[s][1], lambda shape: rng.uniform(-1, 1, shape))
  return _fog_from(x, s + 1, plasma)


# ---------------------------------------------------------------------------------------------
# Digital.


def _brightness(x, s, rng):
  del rng
  value = x.max(axis=-1, keepdims=True)
  brighter = np.minimum(value + _BRIGHTNESS[s], 1.0)
  # Black (V = 0) has no hue: HSV maps it to the gray V'.
  return np.where(value > 0, x * (brighter / np.where(value > 0, value, 1.0)), brighter)


def _contrast(x, s, rng):
  del rng
  mean = x.mean(axis=(0, 1), keepdims=True)
  return (x - mean) * _CONTRAST[s] + mean


def _elastic_fields(shape: tuple[int, ...], rng: np.random.Generator):
  """elastic_transform's raw draws: two `[H, W]` fields U(-H/200, H/200) (dx's, then dy's)."""
  bound = shape[0] * 0.005
  return rng.uniform(-bound, bound, shape[:2]), rng.uniform(-bound, bound, shape[:2])


def _elastic_from(x: np.ndarray, severity: int, raw_dx: np.ndarray,
                  raw_dy: np.ndarray) -> np.ndarray:
  """elastic_transform of `x [H, W, C]` from the raw displacement draws `[H, W]` each."""
  alpha = _ELASTIC[severity - 1]
  h, w = x.shape[:2]
  sigma = (0.01 * h, 0.01 * w)
  dx = ndimage.gaussian_filter(raw_dx, sigma, mode="reflect", truncate=3) * alpha
  dy = ndimage.gaussian_filter(raw_dy, sigma, mode="reflect", truncate=3) * alpha
  rows, cols = np.mgrid[0:h, 0:w]
  coords = np.stack([rows + dy.astype(np.float32), cols + dx.astype(np.float32)])
  return np.stack([
      ndimage.map_coordinates(x[..., ch], coords, order=1, mode="reflect")
      for ch in range(x.shape[2])], axis=-1)


def _elastic_transform(x, s, rng):
  return _elastic_from(x, s + 1, *_elastic_fields(x.shape, rng))


def _box_weights(n_in: int, n_out: int) -> np.ndarray:
  """Pillow's BOX resampling from n_in to n_out samples as a matrix `[n_out, n_in]`.

  Output o averages the inputs i whose centres lie in its box: the box filter, 1 on
  (-1/2, 1/2], at ((i - c_o) + 1/2) / s with c_o = (o + 1/2) s and s = n_in / n_out, over
  the window int(c_o - s/2 + 1/2) <= i < int(c_o + s/2 + 1/2); the arithmetic in the order of
  Pillow's precompute_coeffs (Resample.c), so that ties, which occur whenever o s hits
  k + 1/2, fall the same way.
  """
  scale = n_in / n_out
  centre = (np.arange(n_out) + 0.5) * scale
  i = np.arange(n_in)[None, :]
  arg = ((i - centre[:, None]) + 0.5) * (1.0 / scale)
  lo = np.maximum((centre - scale / 2 + 0.5).astype(int), 0)[:, None]
  hi = np.minimum((centre + scale / 2 + 0.5).astype(int), n_in)[:, None]
  weights = ((arg > -0.5) & (arg <= 0.5) & (i >= lo) & (i < hi)).astype(np.float64)
  return weights / weights.sum(axis=1, keepdims=True)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
  """Pillow's NEAREST resampling from n_in to n_out samples: the input index of each output.

  int(p_o) with p_0 = s / 2 and p_{o+1} = p_o + s, s = n_in / n_out, accumulated by repeated
  addition as Pillow's ImagingScaleAffine (Geometry.c) does, which decides the exact ties
  (o + 1/2) s = k: they fall either way, not always up.
  """
  scale = n_in / n_out
  steps = np.full(n_out, scale)
  steps[0] = scale * 0.5
  return np.minimum(np.add.accumulate(steps).astype(int), n_in - 1)


def _pixelate(x, s, rng):
  del rng
  h, w = x.shape[:2]
  factor = _PIXELATE[s]
  small_h, small_w = int(h * factor), int(w * factor)
  small = (_box_weights(h, small_h) @ x.reshape(h, -1)).reshape(small_h, w, -1)
  small = _box_weights(w, small_w)[None] @ small  # [small_h, small_w, C]
  return small[_nearest_index(small_h, h)][:, _nearest_index(small_w, w)]


def _jpeg_compression(x, s, rng):
  del rng
  pixels = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="JPEG", quality=_JPEG[s])
  with Image.open(io.BytesIO(buf.getvalue())) as decoded:
    return np.asarray(decoded.convert("RGB"), np.float64) / 255


_CORRUPTIONS = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}
assert tuple(_CORRUPTIONS) == NAMES
