"""rrjax.data.imagefolder: classes, labels, pixels, order, bad folders and files."""

import os

import numpy as np
import pytest

import rrjax.data
from rrjax import errors
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
  # The input pipeline, which decodes the stored bytes in its views, names the file too, also
  # through a subset of the split and a copy held in memory.
  for view, index in ((source, position), (source_lib.subset(source, [position]), 0),
                      (source_lib.in_memory(source, max_bytes=1 << 30), position)):
    with pytest.raises(errors.UserError, match=r"cannot decode image .*broken\.png: "):
      list(rrjax.data.batches(view, 4, train=False, seed=0, num_workers=0))
    assert view.describe(index).endswith("broken.png")


def _one_folder(root, counts):
  """`root/<class>/*.png`: class i has counts[i] grey images filled with its index."""
  for i, n in enumerate(counts):
    for k in range(n):
      save(str(root / f"c{i}" / f"{k}.png"), np.full((6, 8), i, np.uint8))
  return root


def test_one_folder_is_the_split_all_in_a_stratified_order(tmp_path):
  root = _one_folder(tmp_path, (7, 20, 33))
  name = f"imagefolder:{root}"
  full = rrjax.data.load(name, "all")
  assert full.class_names == ["c0", "c1", "c2"] and len(full) == 60
  labels = full.labels()
  # Every percent slice holds about its share of every class, however small the class.
  for start, stop in ((0, 72), (72, 80), (80, 100)):
    part = rrjax.data.load(name, f"all[{start}%:{stop}%]").labels()
    share = np.bincount(part, minlength=3) / np.array([7, 20, 33])
    np.testing.assert_allclose(share, (stop - start) / 100, atol=0.15)
  # Slices partition it, in one fixed order.
  parts = [rrjax.data.load(name, s).labels() for s in ("all[:72%]", "all[72%:80%]", "all[80%:]")]
  np.testing.assert_array_equal(np.concatenate(parts), labels)
  np.testing.assert_array_equal(rrjax.data.load(name, "all").labels(), labels)
  images, got = full.get([0, 1])
  assert images.shape == (2, 6, 8, 3)
  np.testing.assert_array_equal(images[:, 0, 0, 0], got)


def test_the_layout_decides_the_splits(tmp_path, folder):
  split_root, _ = folder
  with pytest.raises(errors.UserError, match=f"imagefolder:{split_root}: the split 'all' is a "
                     r"folder of class folders, but .* has split folders \(train/, test/\): "
                     "read its splits 'train' and 'test'"):
    rrjax.data.load(f"imagefolder:{split_root}", "all[:80%]")
  root = _one_folder(tmp_path / "one", (3, 3))
  with pytest.raises(errors.UserError, match=f"imagefolder:{root}: no such directory "
                     f"{root}/train; {root} holds its class folders itself \\(c0, c1\\): read it "
                     r"as the split 'all', sliced by fractions such as 'all\[:80%\]'"):
    rrjax.data.load(f"imagefolder:{root}", "train")


def test_one_class_is_an_error_naming_the_folder(tmp_path):
  root = _one_folder(tmp_path, (4,))
  with pytest.raises(errors.UserError, match=f"imagefolder:{root}: one class folder \\(c0\\) in "
                     f"{root}; a classifier needs at least 2 classes"):
    rrjax.data.load(f"imagefolder:{root}", "all")
  (root / "empty").mkdir()
  with pytest.raises(errors.UserError, match=f"class folder {root}/empty has no images"):
    rrjax.data.load(f"imagefolder:{root}", "all")


def test_hidden_folders_are_no_classes(tmp_path):
  root = _one_folder(tmp_path, (2, 2))
  (root / ".ipynb_checkpoints").mkdir()
  assert rrjax.data.load(f"imagefolder:{root}", "all").class_names == ["c0", "c1"]
