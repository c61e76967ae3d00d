"""`fashion_mnist_local`: a TFDS builder that prepares Fashion-MNIST from local IDX files.

The Debian package `dataset-fashion-mnist` installs the four original IDX files into
`/usr/share/datasets/fashion-mnist/`; this builder turns them into a regular TFDS dataset
without any download, so Fashion-MNIST works offline:

    builder = FashionMnistLocal(data_dir=...)   # or tfds.builder("fashion_mnist_local")
    builder.download_and_prepare()              # ~seconds; reads the IDX files
    source = builder.as_data_source(split="train")

It needs no TensorFlow: the files are written in array_record format and the image is a
`tfds.features.Tensor` (uint8 `[28, 28, 1]`, stored raw) rather than a PNG-encoded
`tfds.features.Image`, whose encoder needs TensorFlow. Labels are a `ClassLabel` with the 10
Fashion-MNIST class names. Examples keep the IDX file order (shuffling is disabled), so example
i of split "train" is image i of `train-images-idx3-ubyte`, as in every other Fashion-MNIST
reader; that order is already class-mixed, so slices such as "train[90%:]" are balanced.

The IDX directory is, in order of precedence: the `idx_dir` constructor argument, the
environment variable `RRJAX_FASHION_MNIST_DIR`, `/usr/share/datasets/fashion-mnist`. Files may be
gzipped (`*-ubyte.gz`, as Debian ships them) or not.
"""

import gzip
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from rrjax import errors

ENV_DIR = "RRJAX_FASHION_MNIST_DIR"
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")

# IDX file stems of each split: (images, labels).
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX magic numbers: 0x08 = unsigned byte data, then the number of dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801


def idx_dir_from_env() -> str:
  """The IDX directory used when the builder is given none."""
  return os.environ.get(ENV_DIR) or DEFAULT_DIR


def find_idx_file(idx_dir: str, stem: str) -> str | None:
  """Path of `<idx_dir>/<stem>.gz` or `<idx_dir>/<stem>`, whichever exists, else None."""
  for path in (os.path.join(idx_dir, stem + ".gz"), os.path.join(idx_dir, stem)):
    if os.path.isfile(path):
      return path
  return None


def has_idx_files(idx_dir: str) -> bool:
  """Whether all four Fashion-MNIST IDX files are in `idx_dir`."""
  return all(find_idx_file(idx_dir, stem) for pair in _FILES.values() for stem in pair)


def read_idx(path: str, magic: int) -> np.ndarray:
  """Reads an unsigned-byte IDX file: images `[n, rows, cols]` or labels `[n]`, uint8."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  ndim = magic & 0xFF
  header = 4 * (1 + ndim)
  if len(data) < header or int.from_bytes(data[:4], "big") != magic:
    raise errors.UserError(f"{path}: not an IDX file with magic {magic:#010x}")
  shape = tuple(int.from_bytes(data[4 * (1 + i):4 * (2 + i)], "big") for i in range(ndim))
  if len(data) - header != int(np.prod(shape)):
    raise errors.UserError(f"{path}: header says shape {shape} but holds {len(data) - header} "
                           "bytes")
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST from local IDX files, array_record, no TensorFlow."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Fashion-MNIST from the Debian IDX files."}

  # TFDS 4.9.10 finds a builder's source file through the `importlib_resources` backport, which
  # it does not declare as a dependency on Python >= 3.11; naming the file directly avoids it.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def __init__(self, *, idx_dir: str | None = None, **kwargs):
    """Args: idx_dir: folder of the IDX files (see module docstring); kwargs: for TFDS."""
    self.idx_dir = idx_dir or idx_dir_from_env()
    # Tensor features are serialised without TensorFlow only by the array_record writer.
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Fashion-MNIST (Xiao et al., 2017): 70k 28x28 grey Zalando article images, "
                    "10 classes; prepared from local IDX files.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    generators = {}
    for split, stems in _FILES.items():
      paths = [find_idx_file(self.idx_dir, stem) for stem in stems]
      if None in paths:
        raise errors.UserError(
            f"fashion_mnist_local: missing {', '.join(s for s, p in zip(stems, paths) if not p)}"
            f"(.gz) in {self.idx_dir} (install the Debian package dataset-fashion-mnist or set "
            f"{ENV_DIR})")
      generators[split] = self._generate_examples(*paths)
    return generators

  def _generate_examples(self, images_path: str, labels_path: str):
    images = read_idx(images_path, _IMAGES_MAGIC)
    labels = read_idx(labels_path, _LABELS_MAGIC)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
      raise errors.UserError(f"{images_path}, {labels_path}: expected n 28x28 images and n "
                             f"labels, got images {images.shape}, labels {labels.shape}")
    if labels.max(initial=0) >= len(CLASS_NAMES):
      raise errors.UserError(f"{labels_path}: label {labels.max()} out of range [0, 10)")
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image[..., None], "label": int(label)}
