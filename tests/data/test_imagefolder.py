"""rrjax.data.imagefolder: classes, labels, pixels, order, bad folders and files."""

import os

import numpy as np
import pytest

import rrjax.data
from rrjax.data import source as source_lib
from tests.data.data_util import save


def test_imagefolder_classes_labels_and_pixels(folder):
  root, expected = folder
  source = rrjax.data.load(f"imagefolder:{root}", "train")
  assert source.class_names == ["ant", "moth", "zebra"]
  assert source.num_classes == 3 and len(source) == 12
  assert source.native_size is None and source.image_size == source_lib.DEFAULT_VARIABLE_SIZE
  images, labels = source.get(np.arange(len(source)))
  assert isinstance(images, list) and labels.dtype == np.int32
  assert np.bincount(labels).tolist() == [4, 4, 4]
  # Every file is read once, with its class's label and its pixels.
  seen = set()
  for path, image, label in zip(source._paths, images, labels):
    cls, name = path.split(os.sep)[-2:]
    assert source.class_names[label] == cls
    want = expected[("train", cls, name)]
    assert image.dtype == np.uint8 and image.shape == want.shape
    tolerance = 8 if name.endswith(".jpg") else 0
    np.testing.assert_allclose(image.astype(int), want.astype(int), atol=tolerance)
    seen.add(path)
  assert len(seen) == 12
  test = rrjax.data.load(f"imagefolder:{root}", "test", image_size=16)
  assert test.class_names == source.class_names and len(test) == 6 and test.image_size == 16


def test_imagefolder_order_mixes_classes_and_slices_partition(folder):
  root, _ = folder
  name = f"imagefolder:{root}"
  full = rrjax.data.load(name, "train")
  labels = full.get(np.arange(len(full)))[1]
  assert labels.tolist() != sorted(labels.tolist())  # Hash order, not class order.
  head = rrjax.data.load(name, "train[:75%]").get(np.arange(9))[1]
  tail = rrjax.data.load(name, "train[75%:]")
  assert len(tail) == 3
  np.testing.assert_array_equal(np.concatenate([head, tail.get([0, 1, 2])[1]]), labels)


def test_imagefolder_same_size_images_stack(tmp_path):
  for cls in ("b", "a"):
    for i in range(3):
      save(str(tmp_path / "train" / cls / f"{i}.png"), np.full((20, 12), i, np.uint8))
  source = rrjax.data.load(f"imagefolder:{tmp_path}", "train")
  assert source.native_size == (20, 12) and source.image_size == 12
  images, labels = source.get([0, 5])
  assert images.shape == (2, 20, 12, 3) and images.dtype == np.uint8
  batch = next(rrjax.data.batches(source, 6, train=False, seed=0))
  assert batch["image"].shape == (6, 12, 12, 3)


def test_imagefolder_bad_folders(tmp_path):
  with pytest.raises(ValueError, match=f"imagefolder:{tmp_path}/nope: no such directory"):
    rrjax.data.load(f"imagefolder:{tmp_path}/nope", "train")
  (tmp_path / "train").mkdir()
  with pytest.raises(ValueError, match="no such directory .*test"):
    rrjax.data.load(f"imagefolder:{tmp_path}", "test")
  with pytest.raises(ValueError, match="train has no class folders"):
    rrjax.data.load(f"imagefolder:{tmp_path}", "train")
  (tmp_path / "train" / "cat").mkdir()
  (tmp_path / "train" / "cat" / "readme.txt").write_text("x")
  with pytest.raises(ValueError, match="class folder .*cat has no images"):
    rrjax.data.load(f"imagefolder:{tmp_path}", "train")
  with pytest.raises(ValueError, match="unknown split 'validation'"):
    rrjax.data.load(f"imagefolder:{tmp_path}", "validation")


def test_imagefolder_corrupt_files_are_errors_naming_the_file(folder):
  root, _ = folder
  garbage = root / "train" / "moth" / "broken.png"
  garbage.write_bytes(b"this is not a png file at all")
  with pytest.raises(ValueError, match="cannot read image .*broken.png"):
    rrjax.data.load(f"imagefolder:{root}", "train")
  # A file whose header reads but whose pixels are cut off fails when decoded.
  garbage.unlink()
  save(str(garbage), np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
  garbage.write_bytes(garbage.read_bytes()[:200])
  source = rrjax.data.load(f"imagefolder:{root}", "train")
  position = [p.endswith("broken.png") for p in source._paths].index(True)
  with pytest.raises(ValueError, match="cannot read image .*broken.png"):
    source.get([position])
