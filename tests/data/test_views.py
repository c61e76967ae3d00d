"""rrjax.data.views: the eval view and the random resized crop."""

import numpy as np
import pytest

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
