"""Tests of rrjax.data: sources (image folders, TFDS, fashion_mnist_local), splits, views, batches."""

import gzip
import importlib.util
import logging
import os
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.testing import mocking

import rrjax.data
from rrjax import errors
from rrjax.data import fashion_mnist_local
from rrjax.data import source as source_lib
from rrjax.data import splits
from rrjax.data import tfds_source
from rrjax.data import views

REAL_FMNIST_DIR = fashion_mnist_local.DEFAULT_DIR


# ---------------------------------------------------------------------------------------------
# Helpers.


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
  pixels = np.round(batch["image"][:, 0, 0, :2] * 255).astype(int)
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


# ---------------------------------------------------------------------------------------------
# Splits.


def test_split_parse():
  assert splits.parse("train") == splits.Split("train")
  assert splits.parse("train[:90%]") == splits.Split("train", None, 90, percent=True)
  assert splits.parse("test[-500:]") == splits.Split("test", -500, None)
  assert str(splits.parse("train[90%:]")) == "train[90%:]"
  np.testing.assert_array_equal(splits.parse("x[2:5]").indices(10), [2, 3, 4])
  np.testing.assert_array_equal(splits.parse("x[-3:]").indices(10), [7, 8, 9])
  np.testing.assert_array_equal(splits.parse("x[33%:67%]").indices(10), [3, 4, 5, 6])
  for bad in ("train[", "train[1]", "train[a:b]", "train[1%:5]", "train[1.5:]", "tr ain!"):
    with pytest.raises(ValueError, match="malformed|mixes percent"):
      splits.parse(bad)
  with pytest.raises(ValueError, match="out of range"):
    splits.parse("x[:11]").indices(10)
  with pytest.raises(ValueError, match="selects no examples"):
    splits.parse("x[5:5]").indices(10)


@pytest.mark.parametrize("n", [7, 10, 999])
def test_split_percent_slices_partition(n):
  head = splits.parse("train[:90%]").indices(n)
  tail = splits.parse("train[90%:]").indices(n)
  np.testing.assert_array_equal(np.concatenate([head, tail]), np.arange(n))


# ---------------------------------------------------------------------------------------------
# Image folders.


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


# ---------------------------------------------------------------------------------------------
# TFDS names.


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


# ---------------------------------------------------------------------------------------------
# fashion_mnist_local.


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
  images, test_labels = rrjax.data.load_arrays(test)
  assert images.shape == (10000, 28, 28, 3) and images.dtype == np.float32
  assert 0.0 <= images.min() and images.max() <= 1.0
  assert np.bincount(test_labels).tolist() == [1000] * 10


# ---------------------------------------------------------------------------------------------
# Views.


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


# ---------------------------------------------------------------------------------------------
# Batches.


def test_source_get_checks_indices():
  source = ArraySource(5)
  with pytest.raises(IndexError, match="index 5 out of range"):
    source.get([0, 5])


def test_train_batches_shapes_dtypes_range():
  source = ArraySource(50)
  batch = next(rrjax.data.batches(source, 8, train=True, seed=0, image_size=12))
  assert batch["image"].shape == (8, 12, 12, 3) and batch["image"].dtype == np.float32
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
  assert batch["index"].dtype == np.int32 and batch["index"].max() < 50
  assert batch["mask"].dtype == bool and batch["mask"].all()
  with pytest.raises(ValueError, match="multiple of process_count 3"):
    rrjax.data.batches(source, 8, train=True, seed=0, process_index=0, process_count=3)
  with pytest.raises(ValueError, match="exceeds the 50 examples"):
    rrjax.data.batches(source, 64, train=True, seed=0)


@pytest.mark.parametrize("train", [True, False])
def test_process_slices_concatenate_to_the_global_batch(train):
  source = ArraySource(30)
  kw = dict(train=train, seed=3, num_steps=4, image_size=10)
  whole = list(rrjax.data.batches(source, 8, process_index=0, process_count=1, **kw))
  parts = [list(rrjax.data.batches(source, 8, process_index=p, process_count=2, **kw))
           for p in range(2)]
  assert len(whole) == 4
  for step, batch in enumerate(whole):
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([parts[0][step][key], parts[1][step][key]]), batch[key])


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_resume_mid_stream_and_seeds(drop_remainder):
  source = ArraySource(20)
  kw = dict(train=True, image_size=10, drop_remainder=drop_remainder)
  stream = take(rrjax.data.batches(source, 6, seed=1, **kw), 9)
  resumed = take(rrjax.data.batches(source, 6, seed=1, start_step=5, **kw), 4)
  assert_batches_equal(stream[5:], resumed)
  assert_batches_equal(stream, list(rrjax.data.batches(source, 6, seed=1, num_steps=9, **kw)))
  other = take(rrjax.data.batches(source, 6, seed=2, **kw), 9)
  assert not np.array_equal(stream[0]["image"], other[0]["image"])


def test_train_epochs_are_permutations():
  source = ArraySource(20)
  kw = dict(train=True, seed=0, augment=False)
  # drop_remainder: 3 batches of 6 per epoch, distinct examples, a new order each epoch.
  ids = [ids_of(b) for b in take(rrjax.data.batches(source, 6, **kw), 6)]
  first, second = np.concatenate(ids[:3]), np.concatenate(ids[3:])
  assert len(set(first)) == 18 and len(set(second)) == 18
  assert not np.array_equal(first, second)
  # Otherwise the stream runs through whole epochs: every example once per 20 positions.
  flat = np.concatenate([ids_of(b) for b in take(
      rrjax.data.batches(source, 6, drop_remainder=False, **kw), 10)])
  for epoch in range(3):
    assert sorted(flat[20 * epoch:20 * (epoch + 1)]) == list(range(20))
  batch = next(rrjax.data.batches(source, 6, **kw))
  np.testing.assert_array_equal(batch["index"], ids[0])
  np.testing.assert_array_equal(batch["label"], source.labels[ids[0]])


def test_train_view_differs_from_eval_view():
  source = ArraySource(16, size=16)
  augmented = next(rrjax.data.batches(source, 16, train=True, seed=0, image_size=16))
  plain = next(rrjax.data.batches(source, 16, train=True, seed=0, image_size=16,
                                  augment=False))
  np.testing.assert_array_equal(augmented["label"], plain["label"])
  differs = [not np.allclose(a, b) for a, b in zip(augmented["image"], plain["image"])]
  assert sum(differs) >= 12
  # Without augmentation, the images are exactly the eval view (here: the stored pixels).
  ids = ids_of(plain)
  np.testing.assert_array_equal(plain["image"], source.images[ids].astype(np.float32) / 255)


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_covers_every_example_once_with_padding_mask(process_count):
  source = ArraySource(23)
  parts = [list(rrjax.data.batches(source, 8, train=False, seed=0, process_index=p,
                                   process_count=process_count))
           for p in range(process_count)]
  batches = [{k: np.concatenate([part[i][k] for part in parts]) for k in parts[0][i]}
             for i in range(len(parts[0]))]
  assert len(batches) == 3
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 23 and not mask[23:].any()
  ids = np.concatenate([ids_of(b) for b in batches])[mask]
  np.testing.assert_array_equal(ids, np.arange(23))
  index = np.concatenate([b["index"] for b in batches])
  np.testing.assert_array_equal(index, np.where(mask, np.arange(24), 0))
  np.testing.assert_array_equal(batches[-1]["image"][~batches[-1]["mask"]], 0)
  dropped = list(rrjax.data.batches(source, 8, train=False, seed=0, drop_remainder=True))
  assert len(dropped) == 2 and all(b["mask"].all() for b in dropped)
  images, labels = rrjax.data.load_arrays(source, chunk=5)
  np.testing.assert_array_equal(images, np.concatenate([b["image"] for b in batches])[mask])
  np.testing.assert_array_equal(labels, source.labels)


def test_producer_errors_reach_the_consumer_and_early_exit_stops_the_thread():
  source = ArraySource(20, fail_at=13)
  iterator = rrjax.data.batches(source, 4, train=False, seed=0)
  take(iterator, 3)
  with pytest.raises(RuntimeError, match="cannot read example 13"):
    next(iterator)
  iterator = rrjax.data.batches(ArraySource(20), 4, train=True, seed=0, prefetch=1)
  next(iterator)
  iterator.close()
  for thread in threading.enumerate():
    if thread.name == "rrjax-data-prefetch":
      thread.join(timeout=2)
      assert not thread.is_alive()
