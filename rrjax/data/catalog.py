"""`load(name, split)`: a dataset named by a string, as a random-access `Source`.

Names:
  * "fashion_mnist_local": Fashion-MNIST prepared from the local Debian IDX files by the TFDS
    builder in `fashion_mnist_local.py` (no download, no TensorFlow). Where it is not prepared
    yet and the IDX files are absent, TFDS's own "fashion_mnist" is used instead, with a warning.
  * "imagefolder:<dir>": a user's images, `<dir>/{train,test}/<class>/*` (splits "train",
    "test") or `<dir>/<class>/*` (split "all") (`imagefolder.py`, `configs/folder.py`).
  * "imagenet100", "imagenet100b", "imagenet100_labelshift": class subsets of TFDS imagenet2012
    relabelled 0..99: the paper's ImageNet-100 (CMC classes), ImageNet-100B and the label-shift
    set of its Table 3 (`imagenet_subsets.py`).
  * any other name: a TFDS dataset ("cifar10", "stl10", "imagenet2012", ...; `tfds_source.py`).
"""

from absl import logging

from rrjax.data import fashion_mnist_local
from rrjax.data import imagefolder
from rrjax.data import imagenet_subsets
from rrjax.data import source as source_lib
from rrjax.data import tfds_source

FASHION_MNIST_LOCAL = "fashion_mnist_local"


def load(name: str, split: str, *, data_dir: str | None = None,
         image_size: int | None = None) -> source_lib.Source:
  """Opens split `split` of dataset `name`.

  Args:
    name: see the module docstring.
    split: "train" or "test" (TFDS datasets: any of their splits, e.g. "validation"; an image
      folder without split folders: "all"), optionally sliced TFDS-style: "train[:90%]",
      "train[90%:]", "test[:1000]", "all[80%:]" (`splits.py`).
    data_dir: TFDS data directory (default: `TFDS_DATA_DIR`, else ~/tensorflow_datasets);
      unused by image folders.
    image_size: measurement resolution S of the views; default the native size, or
      `source.DEFAULT_VARIABLE_SIZE` (224) for datasets whose images vary in size.

  Returns:
    A `Source`: `len`, `num_classes`, `class_names`, `image_size`, `get(indices)`.
  """
  if name.startswith(imagefolder.PREFIX):
    return imagefolder.ImageFolderSource(name[len(imagefolder.PREFIX):], split,
                                         image_size=image_size)
  if name == FASHION_MNIST_LOCAL:
    builder = fashion_mnist_local.FashionMnistLocal(data_dir=data_dir)
    if not builder.is_prepared():
      if not fashion_mnist_local.has_idx_files(builder.idx_dir):
        logging.warning(
            "%s: no Fashion-MNIST IDX files in %s (install the Debian package "
            "dataset-fashion-mnist or set %s); using TFDS's fashion_mnist instead.",
            FASHION_MNIST_LOCAL, builder.idx_dir, fashion_mnist_local.ENV_DIR)
        return tfds_source.load("fashion_mnist", split, data_dir=data_dir,
                                image_size=image_size)
      tfds_source.prepare(builder, FASHION_MNIST_LOCAL)
    return tfds_source.TfdsSource(builder, name=FASHION_MNIST_LOCAL, split=split,
                                  image_size=image_size)
  if name in imagenet_subsets.NAMES:
    return imagenet_subsets.load(name, split, data_dir=data_dir, image_size=image_size)
  return tfds_source.load(name, split, data_dir=data_dir, image_size=image_size)
