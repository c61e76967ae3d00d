"""rrjax.data.fashion_mnist_local: the TFDS builder over the Debian IDX files."""

import gzip
import logging
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

import rrjax.data
from rrjax import errors
from rrjax.data import fashion_mnist_local
from rrjax.data import tfds_source
from tests import helpers
from tests.data.data_util import write_fashion_idx

REAL_FMNIST_DIR = fashion_mnist_local.DEFAULT_DIR


def test_fashion_mnist_local_builds_from_idx_files(fmnist_synthetic):
  data_dir, data = fmnist_synthetic
  for split in ("train", "test"):
    source = rrjax.data.load("fashion_mnist_local", split, data_dir=data_dir)
    images, labels = data[split]
    assert isinstance(source, tfds_source.TfdsSource)
    assert len(source) == len(images) and source.image_size == 28
    assert source.class_names == list(rrjax.data.FASHION_MNIST_CLASS_NAMES)
    got, got_labels = source.get(np.arange(len(source)))
    # IDX order kept, pixels exact, grey repeated to 3 channels.
    np.testing.assert_array_equal(got, np.repeat(images[..., None], 3, -1))
    np.testing.assert_array_equal(got_labels, labels)
  assert len(tfds.data_source("fashion_mnist_local", split="test", data_dir=data_dir)) == 12
  builder = fashion_mnist_local.FashionMnistLocal(data_dir=data_dir)
  assert builder.info.file_format == tfds.core.file_adapters.FileFormat.ARRAY_RECORD
  assert builder.info.features["image"].np_dtype == np.uint8


def test_fashion_mnist_local_slices(fmnist_synthetic):
  data_dir, data = fmnist_synthetic
  head = rrjax.data.load("fashion_mnist_local", "train[:90%]", data_dir=data_dir)
  tail = rrjax.data.load("fashion_mnist_local", "train[90%:]", data_dir=data_dir)
  assert (len(head), len(tail)) == (27, 3)
  labels = np.concatenate([head.get(np.arange(27))[1], tail.get(np.arange(3))[1]])
  np.testing.assert_array_equal(labels, data["train"][1])


def test_fashion_mnist_local_falls_back_to_tfds_with_a_warning(mock_tfds, tmp_path,
                                                                monkeypatch, caplog):
  monkeypatch.setenv(fashion_mnist_local.ENV_DIR, str(tmp_path / "absent"))
  with mock_tfds(num_examples=5), caplog.at_level(logging.WARNING):
    source = rrjax.data.load("fashion_mnist_local", "test", data_dir=str(tmp_path / "tfds"))
  assert source.name == "fashion_mnist" and len(source) == 5
  assert "using TFDS's fashion_mnist instead" in caplog.text


def test_fashion_mnist_local_bad_idx_files(tmp_path):
  write_fashion_idx(str(tmp_path))
  os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
  builder = fashion_mnist_local.FashionMnistLocal(data_dir=str(tmp_path / "tfds"),
                                                  idx_dir=str(tmp_path))
  with pytest.raises(errors.UserError,
                     match="preparing it failed.*missing t10k-labels-idx1-ubyte"):
    tfds_source.prepare(builder, "fashion_mnist_local")
  header = b"".join(v.to_bytes(4, "big") for v in (0x803, 2, 28, 28))
  (tmp_path / "bad.gz").write_bytes(gzip.compress(header + b"too short"))
  with pytest.raises(ValueError, match="bad.gz: header says shape"):
    fashion_mnist_local.read_idx(str(tmp_path / "bad.gz"), 0x803)
  with pytest.raises(ValueError, match="not an IDX file"):
    fashion_mnist_local.read_idx(str(tmp_path / "bad.gz"), 0x801)


@pytest.mark.skipif(not fashion_mnist_local.has_idx_files(REAL_FMNIST_DIR),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist(request, monkeypatch, tmp_path):
  monkeypatch.setenv(fashion_mnist_local.ENV_DIR, REAL_FMNIST_DIR)
  # pytest's cache persists between runs, so the ~15 s preparation happens once.
  cache = getattr(request.config, "cache", None)
  data_dir = str(cache.mkdir("rrjax_tfds") if cache else tmp_path)
  train = rrjax.data.load("fashion_mnist_local", "train", data_dir=data_dir)
  test = rrjax.data.load("fashion_mnist_local", "test", data_dir=data_dir)
  assert (len(train), len(test)) == (60000, 10000)
  assert train.num_classes == 10 and train.image_size == 28
  assert train.class_names[0] == "T-shirt/top" and train.class_names[9] == "Ankle boot"
  labels = np.concatenate([train.get(np.arange(s, min(s + 20000, 60000)))[1]
                           for s in range(0, 60000, 20000)])
  assert np.bincount(labels, minlength=10).tolist() == [6000] * 10
  images, test_labels = helpers.eval_arrays(test)
  assert images.shape == (10000, 28, 28, 3) and images.dtype == np.float32
  assert 0.0 <= images.min() and images.max() <= 1.0
  assert np.bincount(test_labels).tolist() == [1000] * 10
