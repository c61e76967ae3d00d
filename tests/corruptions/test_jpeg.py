"""rrjax.corruptions.jpeg: the JPEG operator against PIL's (libjpeg's) encoder and decoder, and
as an operator (spec, shape, determinism, per-image quality, q = 100, monotonicity)."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import data

from rrjax.corruptions.jpeg import Jpeg, quantisation_tables

PHOTOS = ("astronaut", "chelsea", "coffee")

# One compilation per input shape: the quality is a traced per-image parameter.
_codec = jax.jit(lambda quality, x: Jpeg(50).apply(None, {"quality": quality}, x))


def _crop(image, h, w):
  top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
  return image[top:top + h, left:left + w]


def _photos(h, w):
  """uint8 `[3, h, w, 3]` centre crops of skimage's photos."""
  return np.stack([_crop(getattr(data, name)(), h, w) for name in PHOTOS])


def _jpeg(images8, quality):
  """Our round trip of uint8 images `[B, H, W, C]` at per-image qualities, as uint8."""
  quality = np.broadcast_to(quality, images8.shape[:1])
  out = _codec(jnp.asarray(quality, jnp.int32), jnp.asarray(images8 / 255, jnp.float32))
  return np.round(np.asarray(out) * 255).astype(np.uint8)


def _pil(image8, quality):
  """PIL's round trip (libjpeg defaults: 4:2:0, standard tables, islow DCT, fancy upsampling)."""
  buf = io.BytesIO()
  Image.fromarray(image8).save(buf, format="JPEG", quality=quality)
  return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64))**2)
  return np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("shape", [(128, 128), (100, 76)])
@pytest.mark.parametrize("quality", [10, 50, 90])
def test_matches_pil(shape, quality):
  photos = _photos(*shape)
  ours = _jpeg(photos, quality)
  for name, image, out in zip(PHOTOS, photos, ours):
    psnr = _psnr(out, _pil(image, quality))
    assert psnr > 35, f"{name} {shape} q={quality}: PSNR {psnr:.1f} dB vs PIL"


@pytest.mark.parametrize("quality", [10, 50, 90])
def test_grayscale_matches_pil(quality):
  image = _crop(data.camera(), 100, 76)
  out = _jpeg(image[None, ..., None], quality)[0, ..., 0]
  assert _psnr(out, _pil(image, quality)) > 35


@pytest.mark.parametrize("quality", [1, 10, 37, 50, 77, 100])
def test_tables_are_libjpegs(quality):
  buf = io.BytesIO()
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="JPEG", quality=quality)
  pil_tables = Image.open(buf).quantization  # natural (row-major) order
  ours = np.asarray(quantisation_tables(jnp.array([quality])))[0].reshape(2, 64)
  np.testing.assert_array_equal(ours, np.array([pil_tables[0], pil_tables[1]]))


def test_spec_and_validation():
  assert str(Jpeg(50)) == "jpeg(50)" and str(Jpeg(10, 90)) == "jpeg(10,90)"
  assert Jpeg.from_args((10, 90)) == Jpeg(10.0, 90.0)
  assert not Jpeg(50).random and not Jpeg(50, 50).random and Jpeg(10, 90).random
  for bad in [(0,), (101,), (float("nan"),), (90, 10)]:
    with pytest.raises(ValueError):
      Jpeg(*bad)
  with pytest.raises(ValueError, match="channels"):
    Jpeg(50)(jax.random.key(0), jnp.zeros((1, 16, 16, 4)))


def test_shape_dtype_determinism_and_jit(key):
  x = jnp.asarray(_photos(40, 36)[:2] / 255, jnp.float16)  # 40x36: not a multiple of 16
  op = Jpeg(30)
  y = op(key, x)
  assert y.shape == x.shape and y.dtype == x.dtype
  np.testing.assert_array_equal(op(key, x), y)
  np.testing.assert_array_equal(op(jax.random.key(1), x), y)  # not random
  np.testing.assert_array_equal(jax.jit(op)(key, x), y)
  # Out-of-range inputs are clipped first, as an 8-bit encoder would see them.
  np.testing.assert_array_equal(op(key, x * 3 - 1), op(key, jnp.clip(x * 3 - 1, 0, 1)))


def test_per_image_range_uses_sampled_quality(key):
  x = jnp.asarray(np.concatenate([_photos(32, 32), _photos(32, 32)[:, ::-1]]) / 255,
                  jnp.float32)
  op = Jpeg(10, 90)
  quality = np.asarray(op.sample(key, x.shape)["quality"])
  assert quality.dtype == np.int32 and np.all((10 <= quality) & (quality <= 90))
  assert len(set(quality.tolist())) > 1
  y = op(key, x)
  for i, q in enumerate(quality):
    np.testing.assert_array_equal(y[i], Jpeg(int(q))(key, x[i:i + 1])[0])


def test_quality_100_is_near_identity():
  photos = _photos(128, 128)
  for image, out in zip(photos, _jpeg(photos, 100)):
    assert _psnr(out, image) > 38  # 4:2:0 chroma dominates the loss
  gray = _crop(data.camera(), 100, 76)[None, ..., None]
  assert _psnr(_jpeg(gray, 100), gray) > 50


def test_psnr_increases_with_quality():
  qualities = np.array([5, 10, 25, 50, 75, 90, 100])
  for image in _photos(128, 128):
    # One batch of the same image at a different quality each.
    outs = _jpeg(np.repeat(image[None], len(qualities), axis=0), qualities)
    psnrs = [_psnr(out, image) for out in outs]
    assert np.all(np.diff(psnrs) > 0), psnrs
