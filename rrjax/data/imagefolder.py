"""`imagefolder:<dir>`: a user's images, one folder per class.

    <dir>/train/<class>/*.png|*.jpg|*.jpeg
    <dir>/test/<class>/*.png|*.jpg|*.jpeg

* Classes are the class folders found under `train/` and `test/` together, sorted by name, so
  both splits share one label space; label i is the i-th name.
* Files are taken from each class folder itself (not from subfolders); names ending in .png,
  .jpg or .jpeg (any case) are images, other files are ignored.
* Example order is fixed and pseudo-random: files are sorted by a hash of `<class>/<file name>`,
  so slices such as "train[90%:]" mix all classes (as TFDS's stored order does) and the order
  is the same on every machine.
* Images are decoded with PIL and made RGB: grey is repeated, an alpha channel is dropped,
  16-bit grey is scaled to 8 bits, palette images are expanded.
* Unreadable files are an error, never skipped: every file's header is read when the source
  is opened and a file PIL cannot identify is a ValueError naming it; a file that fails later,
  while decoding its pixels, raises a ValueError naming it from `get`.
* A missing directory, a split folder without class folders and a class folder without images
  are ValueErrors naming the path.
"""

import hashlib
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from rrjax import errors
from rrjax.data import source as source_lib
from rrjax.data import splits
from rrjax.data import views

PREFIX = "imagefolder:"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")


class ImageFolderSource(source_lib.Source):
  """A split of an image folder (see the module docstring for the layout and the rules)."""

  def __init__(self, root: str, split: str, *, image_size: int | None = None):
    self.root = root
    name = PREFIX + root
    base = splits.parse(split).base
    if base not in SPLITS:
      raise errors.UserError(f"{name}: unknown split {base!r}; image folders have {SPLITS}")
    if not os.path.isdir(root):
      raise errors.UserError(f"{name}: no such directory")
    split_dir = os.path.join(root, base)
    if not os.path.isdir(split_dir):
      raise errors.UserError(f"{name}: no such directory {split_dir}")
    classes = sorted(set().union(*(_class_dirs(os.path.join(root, s)) for s in SPLITS)))
    present = _class_dirs(split_dir)
    if not present:
      raise errors.UserError(f"{name}: {split_dir} has no class folders")
    files = []
    for label, class_name in enumerate(classes):
      if class_name not in present:
        continue
      class_dir = os.path.join(split_dir, class_name)
      images = [f for f in os.listdir(class_dir)
                if f.lower().endswith(IMAGE_EXTENSIONS) and
                os.path.isfile(os.path.join(class_dir, f))]
      if not images:
        raise errors.UserError(f"{name}: class folder {class_dir} has no images "
                               f"({', '.join(IMAGE_EXTENSIONS)})")
      files += [(os.path.join(class_name, f), label) for f in images]
    files.sort(key=lambda item: (_order_key(item[0]), item[0]))
    self._paths = [os.path.join(split_dir, relative) for relative, _ in files]
    self._labels = [label for _, label in files]
    sizes = {_image_size(name, path) for path in self._paths}
    super().__init__(name=name, split=split, class_names=classes, num_base=len(files),
                     native_size=sizes.pop() if len(sizes) == 1 else None,
                     image_size=image_size)

  def _read_many(self, positions: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    return [(_decode(self.name, self._paths[p]), self._labels[p]) for p in positions]

  def _read_stored(self, positions: Sequence[int]) -> list[tuple[bytes, int]]:
    out = []
    for p in positions:
      try:
        with open(self._paths[p], "rb") as f:
          out.append((f.read(), self._labels[p]))
      except OSError as e:
        raise errors.UserError(f"{self.name}: cannot read image {self._paths[p]}: {e}") from e
    return out

  def _read_labels(self, positions: Sequence[int]) -> list[int]:
    return [self._labels[p] for p in positions]


def _class_dirs(split_dir: str) -> set[str]:
  if not os.path.isdir(split_dir):
    return set()
  return {d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d))}


def _order_key(relative_path: str) -> bytes:
  return hashlib.blake2b(relative_path.encode("utf-8"), digest_size=8).digest()


def _image_size(name: str, path: str) -> tuple[int, int]:
  """(height, width) from the file header."""
  try:
    with Image.open(path) as image:
      width, height = image.size
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise errors.UserError(f"{name}: cannot read image {path}: {e}") from e
  return height, width


def _decode(name: str, path: str) -> np.ndarray:
  """uint8 `[h, w, 3]` pixels of the image file at `path`."""
  try:
    with open(path, "rb") as f:
      return views.decode(f.read())
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise errors.UserError(f"{name}: cannot read image {path}: {e}") from e
