"""Fixtures of the data tests: an image folder, a synthetic fashion_mnist_local, mock TFDS."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

from tests.data.data_util import save, write_fashion_idx


@pytest.fixture
def folder(tmp_path):
  """3 classes (created unsorted), PNG and JPEG, RGB / grey / RGBA, varying sizes."""
  rng = np.random.default_rng(1)
  root = tmp_path / "images"
  expected = {}
  for split, count in (("train", 4), ("test", 2)):
    for cls in ("zebra", "ant", "moth"):
      for i in range(count):
        h, w = 10 + i, 12 + 2 * i
        kind = i % 4
        if kind == 0:  # RGB PNG
          pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
          save(str(root / split / cls / f"{i}.png"), pixels)
          expected[(split, cls, f"{i}.png")] = pixels
        elif kind == 1:  # grey PNG
          grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
          save(str(root / split / cls / f"{i}.PNG"), grey)
          expected[(split, cls, f"{i}.PNG")] = np.repeat(grey[..., None], 3, -1)
        elif kind == 2:  # RGBA PNG: alpha dropped
          rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
          save(str(root / split / cls / f"{i}.png"), rgba)
          expected[(split, cls, f"{i}.png")] = rgba[..., :3]
        else:  # JPEG (lossy: compared loosely)
          pixels = np.full((h, w, 3), 40 * (i + 1), np.uint8)
          save(str(root / split / cls / f"{i}.jpg"), pixels)
          expected[(split, cls, f"{i}.jpg")] = pixels
  (root / "train" / "ant" / "notes.txt").write_text("not an image")
  return root, expected


@pytest.fixture(scope="module")
def fmnist_synthetic(tmp_path_factory):
  """fashion_mnist_local prepared from synthetic IDX files: (data_dir, {split: arrays})."""
  idx_dir = tmp_path_factory.mktemp("idx")
  data = write_fashion_idx(str(idx_dir))
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  # Through TFDS's registry, as any TFDS dataset.
  tfds.builder("fashion_mnist_local", data_dir=data_dir, idx_dir=str(idx_dir)
               ).download_and_prepare()
  return data_dir, data


@pytest.fixture
def mock_tfds(monkeypatch):
  """`tfds.testing.mock_data`, with its batched read repaired.

  TFDS 4.9.10's mock data source stores `functools.partial(_getitems, generator=...)` on an
  instance, so `__getitems__` is called without `self` and fails; `_getitems` only needs `self`
  for serialized reads, which sources never ask for.
  """
  original = mocking._getitems
  monkeypatch.setattr(mocking, "_getitems",
                      lambda keys, generator, serialized=False: original(
                          None, keys, generator, serialized))
  return tfds.testing.mock_data
