"""Shared pieces of the data tests: an in-memory source, IDX writers, batch comparisons."""

import gzip
import os

import numpy as np
from PIL import Image

from rrjax.data import source as source_lib


class ArraySource(source_lib.Source):
  """In-memory source whose image i is filled with i % 251 in channel 0 and i // 251 in 1."""

  def __init__(self, n, size=8, split="train", fail_at=None):
    self.fail_at = fail_at
    ids = np.arange(n)
    self.images = np.zeros((n, size, size, 3), np.uint8)
    self.images[..., 0] = (ids % 251)[:, None, None]
    self.images[..., 1] = (ids // 251)[:, None, None]
    # A gradient in channel 2 so that crops and flips change the pixels.
    self.images[..., 2] = np.arange(size, dtype=np.uint8)[None, None, :] * (255 // size)
    self.labels = ids % 3
    super().__init__(name="array", split=split, class_names=["a", "b", "c"], num_base=n,
                     native_size=(size, size), image_size=None)

  def _read_many(self, positions):
    if self.fail_at in positions:
      raise RuntimeError(f"cannot read example {self.fail_at}")
    return [(self.images[p], int(self.labels[p])) for p in positions]


def ids_of(batch):
  """Example ids of an un-augmented batch of an ArraySource at native size."""
  pixels = batch["image"][:, 0, 0, :2].astype(int)
  return pixels[:, 0] + 251 * pixels[:, 1]


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def write_idx(path, array, magic):
  header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_idx(directory, n_train=30, n_test=12):
  """Synthetic Fashion-MNIST IDX files; returns {split: (images [n, 28, 28], labels [n])}."""
  rng = np.random.default_rng(0)
  data = {}
  for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, (n,), dtype=np.uint8)
    write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), images, 0x803)
    write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), labels, 0x801)
    data[split] = (images, labels)
  return data


def save(path, array, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array, mode).save(path)
