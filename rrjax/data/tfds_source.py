"""Sources backed by TensorFlow Datasets (TFDS) builders: "cifar10", "stl10", "imagenet2012", ...

Reading goes through TFDS's random-access data sources (`builder.as_data_source`), which read
array_record files without TensorFlow. A dataset is used as prepared in `data_dir` (default: the
`TFDS_DATA_DIR` environment variable, else `~/tensorflow_datasets`); one that is not prepared is
prepared there in array_record format first, which needs network access (and, for
PNG/JPEG-encoded image features, TensorFlow to encode them) or, for manual datasets such as
imagenet2012, the archives in `<data_dir>/downloads/manual/`. Failing that, the error says so.

A dataset already prepared as tfrecord (TFDS's default format before data sources existed) can
only be read with TensorFlow: with it installed, the split is read once into memory (images kept
encoded, decoded on access); without it, the error says to install `tensorflow-cpu` or to
re-prepare the dataset with `--file_format=array_record`.

The example order is the order of the prepared files (TFDS stores examples shuffled by key,
so slices such as "train[90%:]" mix all classes).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from rrjax import errors
from rrjax.data import source as source_lib
from rrjax.data import splits

_RANDOM_ACCESS_FORMATS = frozenset(tfds.core.file_adapters.FileFormat.with_random_access())


def load(name: str, split: str, *, data_dir: str | None = None,
         image_size: int | None = None) -> "TfdsSource":
  """Opens split `split` of TFDS dataset `name`, preparing it when needed (module docstring)."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise errors.UserError(f"{name!r} is not a TFDS dataset (nor 'fashion_mnist_local' or "
                           "'imagefolder:<dir>')") from e
  if not builder.is_prepared():
    # array_record is the random-access format TFDS can write.
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    prepare(builder, name)
  return TfdsSource(builder, name=name, split=split, image_size=image_size)


def prepare(builder: tfds.core.DatasetBuilder, name: str) -> None:
  """`builder.download_and_prepare()`, its failure turned into an error saying what to do."""
  try:
    builder.download_and_prepare()
  except Exception as e:  # Anything from downloading, extracting or encoding.
    raise errors.UserError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir_root} "
                           f"and preparing it failed ({type(e).__name__}: {e}). Prepare it where "
                           f"the data can be reached (`tfds build {name} "
                           "--file_format=array_record --data_dir=...`; manual datasets read "
                           "their archives from <data_dir>/downloads/manual/) and pass that "
                           "data_dir.") from e


class TfdsSource(source_lib.Source):
  """A split of a prepared TFDS dataset with supervised (image, label) features."""

  def __init__(self, builder: tfds.core.DatasetBuilder, *, name: str, split: str,
               image_size: int | None):
    info = builder.info
    self._image_key, self._label_key = info.supervised_keys or ("image", "label")
    features = info.features
    for key in (self._image_key, self._label_key):
      if key not in features:
        raise errors.UserError(f"TFDS dataset {name!r} has no feature {key!r} "
                               f"(features: {', '.join(features.keys())})")
    label_feature = features[self._label_key]
    if not isinstance(label_feature, tfds.features.ClassLabel):
      raise errors.UserError(f"TFDS dataset {name!r}: label feature {self._label_key!r} is not a "
                             f"ClassLabel but {type(label_feature).__name__}")
    height, width = features[self._image_key].shape[:2]
    base = splits.parse(split).base
    if info.file_format in _RANDOM_ACCESS_FORMATS:
      self._records = builder.as_data_source(split=base)
    else:
      self._records = _TfrecordSplit(builder, base, self._image_key, self._label_key)
    super().__init__(name=name, split=split, class_names=label_feature.names,
                     num_base=len(self._records),
                     native_size=(height, width) if height and width else None,
                     image_size=image_size)

  def _read_many(self, positions: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    # One batched read: array_record fetches many records far faster than one by one.
    records = self._records.__getitems__(list(positions))
    return [(np.asarray(r[self._image_key]), int(r[self._label_key])) for r in records]


class _TfrecordSplit:
  """A split prepared as tfrecord, read once through TensorFlow into memory.

  Images stay encoded in memory (a PNG/JPEG `Image` feature is read with decoding skipped) and
  are decoded with TFDS's numpy decoder on access, so memory is the size of the files.
  """

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str, image_key: str,
               label_key: str):
    try:
      import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except ImportError as e:
      raise errors.UserError(f"TFDS dataset {builder.name!r} is prepared in {builder.data_dir} as "
                             f"{builder.info.file_format.value}, which only TensorFlow can read: "
                             "`pip install tensorflow-cpu`, or prepare it again with `tfds build "
                             f"{builder.name} --file_format=array_record`.") from e
    self._image_key, self._label_key = image_key, label_key
    feature = builder.info.features[image_key]
    encoded = isinstance(feature, tfds.features.Image)
    self._decode = feature.decode_example_np if encoded else np.asarray
    dataset = builder.as_dataset(
        split=split, shuffle_files=False,
        decoders={image_key: tfds.decode.SkipDecoding()} if encoded else None)
    self._examples = [(ex[image_key], int(ex[label_key])) for ex in tfds.as_numpy(dataset)]

  def __len__(self) -> int:
    return len(self._examples)

  def __getitems__(self, keys: Sequence[int]) -> list[dict[str, Any]]:
    return [{self._image_key: self._decode(self._examples[k][0]),
             self._label_key: self._examples[k][1]} for k in keys]
