"""rrjax.data.tfds_source: TFDS names through rrjax.data.load, mocked."""

import importlib.util

import numpy as np
import pytest
import tensorflow_datasets as tfds

import rrjax.data
from rrjax import errors
from rrjax.data import fashion_mnist_local
from rrjax.data import tfds_source


@pytest.mark.parametrize("name, size, channels_in", [("cifar10", 32, 3),
                                                     ("fashion_mnist", 28, 1)])
def test_tfds_name_through_load(mock_tfds, tmp_path, name, size, channels_in):
  with mock_tfds(num_examples=10):
    source = rrjax.data.load(name, "train", data_dir=str(tmp_path))
    assert len(source) == 10 and source.num_classes == 10
    assert source.native_size == (size, size) and source.image_size == size
    raw = source._records[3]["image"]
    assert raw.shape == (size, size, channels_in)
    images, labels = source.get([3, 4])
    assert images.shape == (2, size, size, 3) and labels.dtype == np.int32
    np.testing.assert_array_equal(images[0], np.broadcast_to(raw, (size, size, 3)))
    batch = next(rrjax.data.batches(source, 4, train=True, seed=0, image_size=16))
    assert batch["image"].shape == (4, 16, 16, 3)


def test_tfds_variable_size_dataset(mock_tfds, tmp_path):
  with mock_tfds(num_examples=4):
    source = rrjax.data.load("imagenet2012", "validation", data_dir=str(tmp_path))
    assert source.native_size is None and source.image_size == 224
    images, _ = source.get([0, 1])
    assert isinstance(images, list) and images[0].shape[-1] == 3
    small = rrjax.data.load("imagenet2012", "validation", data_dir=str(tmp_path), image_size=40)
    batch = next(rrjax.data.batches(small, 4, train=False, seed=0))
    assert batch["image"].shape == (4, 40, 40, 3) and batch["mask"].all()


def test_unknown_tfds_name():
  with pytest.raises(ValueError, match="'no_such_dataset_xyz' is not a TFDS dataset"):
    rrjax.data.load("no_such_dataset_xyz", "train")


def test_tfrecord_dataset_without_tensorflow_is_a_clear_error(fmnist_synthetic, monkeypatch):
  if importlib.util.find_spec("tensorflow"):
    pytest.skip("TensorFlow is installed")
  data_dir, _ = fmnist_synthetic
  builder = fashion_mnist_local.FashionMnistLocal(data_dir=data_dir)
  # As if the dataset had been prepared in TFDS's default tfrecord format.
  monkeypatch.setattr(tfds.core.DatasetInfo, "file_format",
                      property(lambda self: tfds.core.file_adapters.FileFormat.TFRECORD))
  with pytest.raises(errors.UserError, match="as tfrecord.*pip install tensorflow-cpu"):
    tfds_source.TfdsSource(builder, name="fashion_mnist_local", split="train", image_size=None)
