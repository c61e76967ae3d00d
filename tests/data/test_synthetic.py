"""rrjax.data.synthetic: JPEGs of varied sizes, deterministic, idempotent, read by imagefolder."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import rrjax.data
from rrjax import errors
from rrjax.data import synthetic

# Small images keep the tests fast; the sizes still vary +-25% around the mean.
SMALL = dict(num_train=24, num_test=6, num_classes=3, mean_size=(48, 64))


def _files(root):
  """{relative path: sha256} of every image of the folder."""
  out = {}
  for split in synthetic.SPLITS:
    for dirpath, _, names in os.walk(os.path.join(root, split)):
      for name in names:
        path = os.path.join(dirpath, name)
        with open(path, "rb") as f:
          out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return synthetic.write_imagefolder(str(tmp_path_factory.mktemp("syn") / "a"), seed=0, **SMALL)


def test_layout_counts_and_jpegs(folder):
  files = _files(folder)
  assert len(files) == 30
  for split, count in (("train", 24), ("test", 6)):
    classes = sorted(os.listdir(os.path.join(folder, split)))
    assert classes == ["class_00", "class_01", "class_02"]
    per_class = [len(os.listdir(os.path.join(folder, split, c))) for c in classes]
    assert per_class == [count // 3] * 3
  shapes = []
  for relative in files:
    with Image.open(os.path.join(folder, relative)) as image:
      assert image.format == "JPEG" and image.mode == "RGB"
      image.load()
      shapes.append((image.height, image.width))
  heights, widths = np.array(shapes).T
  assert 36 <= heights.min() < heights.max() <= 60 and 48 <= widths.min() < widths.max() <= 80
  assert len(set(shapes)) > 20
  manifest = synthetic.read_manifest(folder)
  assert manifest["files"] == 30 and manifest["seed"] == 0 and manifest["mean_size"] == [48, 64]


def test_content_is_neither_flat_nor_noise(folder):
  path = os.path.join(folder, "train", "class_00", "train_0000000.jpg")
  pixels = np.asarray(Image.open(path), np.float32)
  assert pixels.std() > 10  # Not a flat colour...
  # ... and neighbours correlate, as in photos (noise would give about 0).
  a, b = pixels[:, :-1] - pixels.mean(), pixels[:, 1:] - pixels.mean()
  assert (a * b).mean() / pixels.var() > 0.5


def test_same_seed_same_bytes_other_seed_other_bytes(folder, tmp_path):
  again = synthetic.write_imagefolder(str(tmp_path / "b"), seed=0, workers=1, **SMALL)
  other = synthetic.write_imagefolder(str(tmp_path / "c"), seed=1, **SMALL)
  assert _files(again) == _files(folder)
  assert set(_files(other)) == set(_files(folder))
  assert not set(_files(other).values()) & set(_files(folder).values())


def test_second_call_writes_nothing_and_other_parameters_replace(tmp_path):
  root = str(tmp_path / "d")
  synthetic.write_imagefolder(root, seed=0, **SMALL)
  stamp = {p: os.stat(os.path.join(root, p)).st_mtime_ns for p in _files(root)}
  manifest = os.stat(os.path.join(root, synthetic.MANIFEST)).st_mtime_ns
  assert synthetic.write_imagefolder(root, seed=0, **SMALL) == root
  assert {p: os.stat(os.path.join(root, p)).st_mtime_ns for p in _files(root)} == stamp
  assert os.stat(os.path.join(root, synthetic.MANIFEST)).st_mtime_ns == manifest
  assert synthetic.is_complete(root, seed=0, **SMALL)
  # A missing file makes it incomplete; another seed replaces the folder.
  os.remove(os.path.join(root, next(iter(stamp))))
  assert not synthetic.is_complete(root, seed=0, **SMALL)
  synthetic.write_imagefolder(root, seed=2, **SMALL)
  assert synthetic.read_manifest(root)["seed"] == 2 and len(_files(root)) == 30
  assert os.listdir(tmp_path) == ["d"]  # No temporary sibling left.


def test_interrupted_or_foreign_folders(tmp_path, monkeypatch):
  root = str(tmp_path / "e")

  def fail(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(synthetic, "render", fail)
  with pytest.raises(KeyboardInterrupt):
    synthetic.write_imagefolder(root, **SMALL)
  assert os.listdir(tmp_path) == []  # Nothing that could pass for a folder.
  monkeypatch.undo()
  os.makedirs(os.path.join(root, "train", "cat"))
  with pytest.raises(errors.UserError, match="no synthetic.json"):
    synthetic.write_imagefolder(root, **SMALL)
  with open(os.path.join(root, synthetic.MANIFEST), "w") as f:
    json.dump({"seed": 5}, f)  # A manifest of ours from other parameters: replaced.
  synthetic.write_imagefolder(root, **SMALL)
  assert synthetic.is_complete(root, **SMALL)


def test_imagefolder_reads_it(folder):
  train = rrjax.data.load("imagefolder:" + folder, "train")
  test = rrjax.data.load("imagefolder:" + folder, "test")
  assert (len(train), len(test)) == (24, 6)
  assert train.class_names == test.class_names == ["class_00", "class_01", "class_02"]
  assert train.native_size is None and train.image_size == 224
  images, labels = train.get(np.arange(6))
  assert all(x.dtype == np.uint8 and x.ndim == 3 and x.shape[2] == 3 for x in images)
  assert labels.dtype == np.int32
  assert list(np.bincount(train.get(np.arange(24))[1])) == [8, 8, 8]


def test_bad_parameters():
  with pytest.raises(errors.UserError, match="num_train"):
    synthetic.write_imagefolder("/nonexistent/x", num_train=0, num_test=0)
  with pytest.raises(errors.UserError, match="mean_size"):
    synthetic.write_imagefolder("/nonexistent/x", num_train=1, num_test=0, mean_size=(8, 8))


def test_command_line(tmp_path):
  root = str(tmp_path / "f")
  command = [sys.executable, "-m", "rrjax.data.synthetic", f"--out={root}", "--train=4",
             "--test=2", "--classes=2", "--size=40,40"]
  first = subprocess.run(command, check=True, capture_output=True, text=True).stdout
  second = subprocess.run(command, check=True, capture_output=True, text=True).stdout
  assert "wrote it" in first and "4 train + 2 test" in first and "2 classes" in first
  assert "already complete" in second
