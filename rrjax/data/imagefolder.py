"""`imagefolder:<dir>`: a user's images, one folder per class, in one of two layouts.

    <dir>/<class>/*.png|*.jpg|*.jpeg              one folder: the split "all"
    <dir>/train/<class>/*.png|*.jpg|*.jpeg        split folders: the splits "train" and "test"
    <dir>/test/<class>/*.png|*.jpg|*.jpeg

* The layout: a folder with a `train/` or a `test/` folder has split folders (its other folders
  are not read); any other folder holds the class folders itself, read as the split "all",
  which a config slices into its splits by fractions ("all[:72%]", "all[80%:]": `splits.py`,
  `configs/folder.py`). A split the layout does not have is an error naming the ones it has.
* Classes are the class folders (with split folders: those under `train/` and `test/`
  together, so both splits share one label space), sorted by name; label i is the i-th name.
  At least 2 classes. Hidden folders (a name starting with ".") are no classes.
* Files are taken from each class folder itself (not from subfolders); names ending in .png,
  .jpg or .jpeg (any case) are images, other files are ignored.
* Example order is fixed and pseudo-random, the same on every machine, so that slices mix the
  classes (as TFDS's stored order does):
  - "train" and "test": files sorted by a hash of `<class>/<file name>`;
  - "all": stratified: each class's files in that hash order, spread evenly over the split
    (the k-th of a class of n at (k + 1/2) / n of the way), so that a slice such as
    "all[80%:]" holds about 20% of every class, however few images a class has.
* Images are decoded with PIL and made RGB: grey is repeated, an alpha channel is dropped,
  16-bit grey is scaled to 8 bits, palette images are expanded. Sizes may differ: the views
  resize every image to the measurement size (`image_size`).
* Unreadable files are an error, never skipped: every file's header is read when the source
  is opened and a file PIL cannot identify is a UserError naming it; a file that fails later,
  while decoding its pixels, raises a UserError naming it from `get`.
* A missing directory, a split folder without class folders, a class folder without images and
  fewer than 2 classes are UserErrors naming the path. How many images each class needs after
  splitting is the run's rule, checked before the run starts (`rrjax.config.inputs`).
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
SPLIT_FOLDERS = ("train", "test")
# The split of a folder that holds its class folders itself.
ALL = "all"
SPLITS = (*SPLIT_FOLDERS, ALL)


class ImageFolderSource(source_lib.Source):
  """A split of an image folder (see the module docstring for the layout and the rules)."""

  def __init__(self, root: str, split: str, *, image_size: int | None = None):
    self.root = root
    name = PREFIX + root
    base = splits.parse(split).base
    classes, files = listing(root, base)
    self._paths = [os.path.join(split_dir(root, base), relative) for relative, _ in files]
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
        raise errors.UserError(f"{self.name}: cannot read image {self._paths[p]}: "
                               f"{errors.one_line(e)}") from e
    return out

  def _read_labels(self, positions: Sequence[int]) -> list[int]:
    return [self._labels[p] for p in positions]

  def _describe(self, position: int) -> str:
    return f"image {self._paths[position]}"


def layout_splits(root: str) -> tuple[str, ...]:
  """The base splits of the image folder `root`: ("train", "test") when it has split folders
  (a `train/` or `test/` folder), else ("all",). The folder must exist."""
  if any(os.path.isdir(os.path.join(root, s)) for s in SPLIT_FOLDERS):
    return SPLIT_FOLDERS
  return (ALL,)


def split_dir(root: str, base: str) -> str:
  """The folder holding the class folders of base split `base`."""
  return root if base == ALL else os.path.join(root, base)


def listing(root: str, base: str) -> tuple[list[str], list[tuple[str, int]]]:
  """The classes of image folder `root` and the files of its base split `base`, without
  opening any: `(class names, [(path relative to split_dir(root, base), label)])`, in the
  split's order (module docstring).

  Raises:
    rrjax.errors.UserError: naming the folder, when the folder is missing, `base` is not a split
      of its layout, or a split folder, a class folder or the classes are not as the module
      docstring says.
  """
  name = PREFIX + root
  if base not in SPLITS:
    raise errors.UserError(f"{name}: unknown split {base!r}; image folders have {SPLITS}")
  if not os.path.isdir(root):
    raise errors.UserError(f"{name}: no such directory")
  have = layout_splits(root)
  folder = split_dir(root, base)
  if base not in have:
    if base == ALL:
      raise errors.UserError(
          f"{name}: the split 'all' is a folder of class folders, but {root} has split folders "
          "(train/, test/): read its splits 'train' and 'test'")
    if _class_dirs(root):
      raise errors.UserError(
          f"{name}: no such directory {folder}; {root} holds its class folders itself "
          f"({_names(sorted(_class_dirs(root)))}): read it as the split 'all', sliced by "
          "fractions such as 'all[:80%]'")
    raise errors.UserError(f"{name}: no such directory {folder}")
  if not os.path.isdir(folder):
    raise errors.UserError(f"{name}: no such directory {folder}")
  present = _class_dirs(folder)
  if not present:
    raise errors.UserError(f"{name}: {folder} has no class folders")
  classes = sorted(set().union(*(_class_dirs(split_dir(root, s)) for s in have)))
  per_class = []
  for label, class_name in enumerate(classes):
    if class_name not in present:
      continue
    class_dir = os.path.join(folder, class_name)
    images = [f for f in os.listdir(class_dir)
              if f.lower().endswith(IMAGE_EXTENSIONS) and
              os.path.isfile(os.path.join(class_dir, f))]
    if not images:
      raise errors.UserError(f"{name}: class folder {class_dir} has no images "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
    relative = sorted((os.path.join(class_name, f) for f in images),
                      key=lambda path: (_order_key(path), path))
    per_class.append([(path, label) for path in relative])
  if len(classes) < 2:
    raise errors.UserError(f"{name}: one class folder ({classes[0]}) in {folder}; a classifier "
                           "needs at least 2 classes, one folder of images each")
  if base != ALL:
    files = sorted((item for items in per_class for item in items),
                   key=lambda item: (_order_key(item[0]), item[0]))
  else:
    # Stratified: the k-th file of a class of n at (k + 1/2) / n, ties broken by the hash.
    files = [item for _, _, item in sorted(
        ((k + 0.5) / len(items), _order_key(item[0]), item)
        for items in per_class for k, item in enumerate(items))]
  return classes, files


def _names(names: Sequence[str], limit: int = 3) -> str:
  shown = ", ".join(names[:limit])
  return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _class_dirs(folder: str) -> set[str]:
  """The class folders in `folder`: its folders but hidden ones (`.ipynb_checkpoints`)."""
  if not os.path.isdir(folder):
    return set()
  return {d for d in os.listdir(folder)
          if not d.startswith(".") and os.path.isdir(os.path.join(folder, d))}


def _order_key(relative_path: str) -> bytes:
  return hashlib.blake2b(relative_path.encode("utf-8"), digest_size=8).digest()


def _image_size(name: str, path: str) -> tuple[int, int]:
  """(height, width) from the file header."""
  try:
    with Image.open(path) as image:
      width, height = image.size
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise errors.UserError(f"{name}: cannot read image {path}: {errors.one_line(e)}") from e
  return height, width


def _decode(name: str, path: str) -> np.ndarray:
  """uint8 `[h, w, 3]` pixels of the image file at `path`."""
  try:
    with open(path, "rb") as f:
      return views.decode(f.read())
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise errors.UserError(f"{name}: cannot read image {path}: {errors.one_line(e)}") from e
