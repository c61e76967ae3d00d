"""The two views of an image the loader emits: random-resized-crop training view and eval view.

Both take an image at its native size, as pixels (uint8 `[h, w, 3]`) or as its encoded file
(`bytes`: JPEG, PNG, ...), and return uint8 `[S, S, 3]`. Each is a single PIL bilinear resample
of a (possibly fractional) box of the source image; PIL filters with a support widened by the
downscale factor, so shrinking is antialiased and enlarging is plain bilinear. Resampling the
box directly equals resizing the whole image and cropping, with one rounding to uint8 instead
of two.

Encoded JPEGs are decoded at reduced size where the box allows it: the box is chosen from the
file's header, then libjpeg decodes at 1/2, 1/4 or 1/8 scale (PIL's `draft`, DCT scaling) as
long as the box still covers at least S x S decoded pixels, and the box is resampled from that.
A crop of a large photo then decodes a fraction of the pixels; the view differs from the
full-size decode's by the difference between the DCT downscale and PIL's antialiasing filter
(about 1 grey level on average, `tests/data/test_views.py`).

* `eval_view(image, S)`: resize the short side to round(S * 256 / 224) when it is longer than S
  (else to S), then take the centred S x S crop: the usual "resize 256, centre crop 224" of the
  paper at any S; images at most S on the short side are only resized to S.
* `train_view(image, S, rng)`: torchvision's RandomResizedCrop (area fraction in `scale`,
  aspect ratio log-uniform in `ratio`, 10 tries, then a centre crop clamped to `ratio`),
  resized to S x S, then a horizontal flip with probability 1/2.
"""

import io
import math

import numpy as np
from PIL import Image

from rrjax import errors

DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)
# The ImageNet eval convention: resize to 256, centre crop 224.
_EVAL_RESIZE_RATIO = 256 / 224


# Pixels, or an encoded image file.
Stored = np.ndarray | bytes


def eval_view(image: Stored, size: int) -> np.ndarray:
  """Resize short side + centre crop: uint8 `[h, w, 3]` (or a file's bytes) -> `[size, size, 3]`."""
  image = _open(image)
  height, width = _shape(image)
  short = min(height, width)
  resized_short = round(size * _EVAL_RESIZE_RATIO) if short > size else size
  # The crop, in source pixels: `size` output pixels at `resized_short / short` per pixel.
  side = size * short / resized_short
  top, left = (height - side) / 2, (width - side) / 2
  return _resample(image, (left, top, left + side, top + side), size)


def train_view(image: Stored, size: int, rng: np.random.Generator, *,
               scale: tuple[float, float] = DEFAULT_SCALE,
               ratio: tuple[float, float] = DEFAULT_RATIO) -> np.ndarray:
  """Random resized crop + random horizontal flip: uint8 `[h, w, 3]` (or a file's bytes) ->
  `[size, size, 3]`."""
  image = _open(image)
  top, left, crop_h, crop_w = random_crop_box(_shape(image), rng, scale=scale, ratio=ratio)
  view = _resample(image, (left, top, left + crop_w, top + crop_h), size)
  return view[:, ::-1] if rng.random() < 0.5 else view


def random_crop_box(shape: tuple[int, int], rng: np.random.Generator, *,
                    scale: tuple[float, float] = DEFAULT_SCALE,
                    ratio: tuple[float, float] = DEFAULT_RATIO) -> tuple[int, int, int, int]:
  """torchvision's RandomResizedCrop box `(top, left, height, width)` in an image of `shape`."""
  if not 0 < scale[0] <= scale[1] <= 1:
    raise errors.UserError(f"crop scale must satisfy 0 < lo <= hi <= 1, got {scale}")
  if not 0 < ratio[0] <= ratio[1]:
    raise errors.UserError(f"crop ratio must satisfy 0 < lo <= hi, got {ratio}")
  height, width = shape
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = round(math.sqrt(target_area * aspect))
    h = round(math.sqrt(target_area / aspect))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  # Fallback: the largest centred crop whose aspect ratio lies in `ratio`.
  aspect = width / height
  if aspect < ratio[0]:
    w, h = width, round(width / ratio[0])
  elif aspect > ratio[1]:
    h, w = height, round(height * ratio[1])
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def decode(data: bytes) -> np.ndarray:
  """uint8 `[h, w, 3]` pixels of an encoded image file: grey repeated, alpha dropped, 16-bit
  grey scaled to 8 bits, palettes expanded.

  Raises:
    ValueError (or OSError): the bytes are not an image PIL can decode.
  """
  return _pixels(_open(data))


def _open(image: Stored) -> np.ndarray | Image.Image:
  """Pixels as they are; encoded bytes as a lazily decoded PIL image (only the header read)."""
  if isinstance(image, (bytes, bytearray, memoryview)):
    return Image.open(io.BytesIO(image))
  return image


def _shape(image: np.ndarray | Image.Image) -> tuple[int, int]:
  if isinstance(image, Image.Image):
    return image.size[1], image.size[0]
  return image.shape[:2]


def _pixels(pil: Image.Image) -> np.ndarray:
  """uint8 `[h, w, 3]` of a PIL image of any mode."""
  if pil.mode.startswith("I;16"):
    # 16-bit grey (e.g. medical scans): keep the 8 most significant bits.
    grey = (np.asarray(pil, dtype=np.uint16) >> 8).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  return np.asarray(pil.convert("RGB"))


def _resample(image: np.ndarray | Image.Image, box: tuple[float, float, float, float],
              size: int) -> np.ndarray:
  """Bilinear resample of `box` (left, top, right, bottom) of `image` to `[size, size, 3]`."""
  if isinstance(image, Image.Image):
    return _resample_encoded(image, box, size)
  height, width = image.shape[:2]
  if (height, width) == (size, size) and box == (0, 0, size, size):
    return image
  pil = Image.fromarray(np.ascontiguousarray(image))
  return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR, box=box))


def _resample_encoded(pil: Image.Image, box, size: int) -> np.ndarray:
  """`_resample` of a file not decoded yet: a JPEG decodes at the smallest DCT scale that keeps
  at least `size` decoded pixels across the box; RGB files are resampled straight from the
  decoder's buffer, without a copy."""
  width, height = pil.size
  left, top, right, bottom = box
  if pil.format == "JPEG":
    wanted = (math.ceil(width * size / max(right - left, 1e-9)),
              math.ceil(height * size / max(bottom - top, 1e-9)))
    if wanted[0] < width and wanted[1] < height:
      pil.draft("RGB", wanted)  # The largest reduction keeping both sides >= wanted.
  # libjpeg's 1/s scale maps source x to x / s exactly (the decoded size is ceil(size / s)).
  reduction = next((s for s in (1, 2, 4, 8) if -(-width // s) == pil.size[0]), 1)
  box = tuple(v / reduction for v in box)
  if pil.mode != "RGB":
    pil = Image.fromarray(_pixels(pil))
  if pil.size == (size, size) and box == (0, 0, size, size):
    return np.asarray(pil)
  return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR, box=box))
