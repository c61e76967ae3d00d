"""rrjax.data.views: the eval view and the random resized crop."""

import io

import numpy as np
import pytest
from PIL import Image

from rrjax.data import views


def test_eval_view():
  image = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
  assert views.eval_view(image, 28) is image  # Native size: untouched.
  assert views.eval_view(image, 64).shape == (64, 64, 3)
  flat = np.full((300, 200, 3), 77, np.uint8)
  np.testing.assert_array_equal(views.eval_view(flat, 224), np.full((224, 224, 3), 77))
  # A large image is resized to 256/224 of S and centre-cropped: a centred square of a
  # quarter of the short side survives, the border does not.
  framed = np.zeros((448, 448, 3), np.uint8)
  framed[:8] = 255
  framed[168:280, 168:280] = 200
  view = views.eval_view(framed, 224)
  assert view[0].max() == 0 and view[112, 112, 0] == 200


def test_train_view_and_crop_boxes():
  rng = np.random.default_rng(0)
  for shape in ((28, 28), (40, 17), (5, 300)):
    for _ in range(200):
      top, left, h, w = views.random_crop_box(shape, rng, scale=(0.35, 1.0))
      assert 0 <= top and top + h <= shape[0] and 0 <= left and left + w <= shape[1]
      assert h > 0 and w > 0
  image = np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8)
  a = views.train_view(image, 32, np.random.default_rng(5))
  b = views.train_view(image, 32, np.random.default_rng(5))
  assert a.shape == (32, 32, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="crop scale"):
    views.random_crop_box((8, 8), rng, scale=(0.5, 1.5))


def _photo(height, width, seed=0):
  """Smooth colour gradients plus texture: compresses and downsamples like a photo."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width] / max(height, width)
  base = np.stack([np.sin(6 * x + 1), np.cos(5 * y), np.sin(4 * (x + y))], -1)
  image = 127 + 90 * base + rng.normal(0, 8, (height, width, 3))
  return np.clip(image, 0, 255).astype(np.uint8)


def _encode(image, fmt, **kw):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format=fmt, **kw)
  return buffer.getvalue()


def test_encoded_png_views_equal_the_pixel_views():
  image = _photo(90, 70)
  png = _encode(image, "PNG")
  np.testing.assert_array_equal(views.decode(png), image)
  np.testing.assert_array_equal(views.eval_view(png, 48), views.eval_view(image, 48))
  for seed in range(5):
    np.testing.assert_array_equal(views.train_view(png, 32, np.random.default_rng(seed)),
                                  views.train_view(image, 32, np.random.default_rng(seed)))
  grey = _encode(image[..., 0], "PNG")
  np.testing.assert_array_equal(views.decode(grey), np.repeat(image[..., :1], 3, -1))


def test_jpeg_views_decode_at_reduced_size_close_to_the_full_decode():
  jpeg = _encode(_photo(960, 1280), "JPEG", quality=90)
  full = views.decode(jpeg)
  # A small output from a large image: the DCT-scaled decode (1/4 here) then the resample.
  reduced = views.eval_view(jpeg, 224)
  exact = views.eval_view(full, 224)
  assert reduced.shape == exact.shape == (224, 224, 3)
  assert np.abs(reduced.astype(int) - exact.astype(int)).mean() < 0.6
  for seed in range(5):
    a = views.train_view(jpeg, 112, np.random.default_rng(seed))
    b = views.train_view(full, 112, np.random.default_rng(seed))
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.8
  # The reduced decode's box lands where the full one's does: no drift towards an edge.
  ramp = np.tile(np.linspace(0, 255, 1001).astype(np.uint8)[None, :, None], (1001, 1, 3))
  ramp_jpeg = _encode(ramp, "JPEG", quality=95)
  drift = (views.eval_view(ramp_jpeg, 64).astype(int)
           - views.eval_view(views.decode(ramp_jpeg), 64).astype(int))
  assert abs(drift[:, -1].mean()) < 0.5 and abs(drift[:, 0].mean()) < 0.5
  # No reduction when the crop needs every decoded pixel: equal to the full decode's view.
  small = _encode(_photo(240, 300), "JPEG", quality=90)
  np.testing.assert_array_equal(views.eval_view(small, 224),
                                views.eval_view(views.decode(small), 224))


def test_undecodable_bytes_raise():
  with pytest.raises((OSError, ValueError)):
    views.eval_view(b"not an image", 32)
