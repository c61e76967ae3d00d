"""`Source`: random access to one (possibly sliced) split of labelled images.

A source holds no decoded pixels: `get(indices)` reads and decodes on demand, so the batch
pipeline can read any example at any step (seeded permutations, exact resumption) and datasets
larger than memory work unchanged.

`get` returns images decoded, only made 3-channel (grey is repeated, an alpha channel
dropped), uint8, at their native size; `read` returns them as stored, which for files of JPEGs
means their bytes, so that the views (`views.py`) can decode a JPEG at reduced size where the
crop allows it. Resizing to `image_size` is the job of the views. `labels()` reads the labels
alone, without decoding any image.

`in_memory(source)` holds a small source (fixed image size, decoded pixels within a byte budget)
in memory, read once as stored (uint8 pixels, or a file's bytes: the views are the same either
way); larger sources are read on demand.
"""

import abc
from collections.abc import Sequence

import numpy as np

from rrjax import errors
from rrjax.data import splits
from rrjax.data import views

# Labels read per call of `_read_labels` (and per preemption check).
_LABEL_CHUNK = 8192
# Measurement resolution of datasets whose images vary in size (ImageNet-style), as in the paper.
DEFAULT_VARIABLE_SIZE = 224


class Source(abc.ABC):
  """One split of a dataset, indexable in a fixed order.

  Attributes:
    name: the dataset name given to `rrjax.data.load`.
    split: the split string, e.g. "train[:90%]".
    class_names: label `i` is `class_names[i]`.
    native_size: `(height, width)` shared by every image of the base split, or None where
      images vary in size.
    image_size: the measurement resolution S that views resize to: the `image_size` given to
      `load`, else the native short side, else `DEFAULT_VARIABLE_SIZE` for variable sizes.
  """

  def __init__(self, *, name: str, split: str, class_names: Sequence[str], num_base: int,
               native_size: tuple[int, int] | None, image_size: int | None):
    """Selects `split` (a slice spec) from a base split of `num_base` examples."""
    self.name = name
    self.split = split
    self.class_names = list(class_names)
    self.native_size = native_size
    if image_size is None:
      image_size = min(native_size) if native_size else DEFAULT_VARIABLE_SIZE
    if not isinstance(image_size, (int, np.integer)) or image_size <= 0:
      raise errors.UserError(f"image_size must be a positive int, got {image_size!r}")
    self.image_size = int(image_size)
    # Positions in the base split of this source's examples, in order.
    self._positions = splits.parse(split).indices(num_base)

  @property
  def held_in_memory(self) -> bool:
    """Whether the decoded images are in memory (`in_memory`): reading them costs no decode."""
    return False

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def __len__(self) -> int:
    return len(self._positions)

  def __repr__(self):
    return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"classes={self.num_classes}, native_size={self.native_size}, "
            f"image_size={self.image_size})")

  def get(self, indices) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
    """Reads examples `indices` (ints in [0, len)).

    Returns:
      `(images, labels)`: images uint8 `[n, h, w, 3]` where the source has a `native_size`,
      else a list of n uint8 `[h_i, w_i, 3]` arrays; labels int32 `[n]`.
    """
    indices = self._check(indices)
    examples = self._read_many(self._positions[indices].tolist())
    images = [to_rgb(image) for image, _ in examples]
    labels = np.array([label for _, label in examples], dtype=np.int32).reshape(-1)
    if self.native_size is not None:
      images = np.stack(images) if images else np.zeros((0, *self.native_size, 3), np.uint8)
    return images, labels

  def read(self, indices) -> tuple[list[np.ndarray | bytes], np.ndarray]:
    """Examples `indices` as stored: each image uint8 `[h, w, 3]` pixels or an encoded file's
    bytes (for `views`); labels int32 `[n]`."""
    indices = self._check(indices)
    examples = self._read_stored(self._positions[indices].tolist())
    images = [image if isinstance(image, bytes) else to_rgb(image) for image, _ in examples]
    return images, np.array([label for _, label in examples], dtype=np.int32).reshape(-1)

  def describe(self, index: int) -> str:
    """Example `index` (in [0, len)) as an error message names it: its file where it has one
    (an image folder's path), else "example <index>"."""
    return self._describe(int(self._positions[index])) or f"example {index}"

  def _describe(self, position: int) -> str | None:
    """The name of the example at `position` of the base split, or None (no better name)."""
    del position
    return None

  def labels(self) -> np.ndarray:
    """int32 `[len]`: every label, in order; sources that can, read them without the images."""
    from rrjax.parallel import preemption  # pylint: disable=g-import-not-at-top
    out = np.empty(len(self), np.int32)
    for start in range(0, len(self), _LABEL_CHUNK):
      preemption.check(f"reading the labels of {self.name} {self.split}")
      stop = min(start + _LABEL_CHUNK, len(self))
      labels = self._read_labels(self._positions[start:stop].tolist())
      if labels is None:
        labels = self.get(np.arange(start, stop))[1]
      out[start:stop] = labels
    return out

  def _check(self, indices) -> np.ndarray:
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    bad = indices[(indices < 0) | (indices >= len(self))]
    if bad.size:
      raise IndexError(f"index {bad[0]} out of range for {self.name} {self.split} "
                       f"({len(self)} examples)")
    return indices

  @abc.abstractmethod
  def _read_many(self, positions: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    """Examples at `positions` of the base split: (uint8 `[h, w, c]`, c in {1, 3, 4}, label)."""

  def _read_stored(self, positions: Sequence[int]) -> list[tuple[np.ndarray | bytes, int]]:
    """`_read_many`, with images as stored (pixels or encoded bytes); default: decoded."""
    return self._read_many(positions)

  def _read_labels(self, positions: Sequence[int]) -> Sequence[int] | np.ndarray | None:
    """The labels at `positions` of the base split, read without the images, or None where
    that is not possible (labels then come from `get`)."""
    del positions
    return None


def to_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 `[h, w]` or `[h, w, c]`, c in {1, 3, 4} -> `[h, w, 3]` (grey repeated, alpha dropped)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise errors.UserError(f"expected uint8 images, got dtype {image.dtype}")
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise errors.UserError(f"expected an image [h, w, 1|3|4], got shape {image.shape}")
  if image.shape[-1] == 1:
    return np.repeat(image, 3, axis=-1)
  return image[..., :3]


class Subset(Source):
  """Examples `indices` of another source, in that order (e.g. a label fraction's examples)."""

  def __init__(self, parent: Source, indices):
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= len(parent)):
      raise IndexError(f"subset indices out of range for {parent!r}")
    self.name = parent.name
    self.split = f"{parent.split}[{indices.size} selected]"
    self.class_names = list(parent.class_names)
    self.native_size = parent.native_size
    self.image_size = parent.image_size
    self._parent = parent
    self._positions = parent._positions[indices]  # pylint: disable=protected-access

  @property
  def held_in_memory(self) -> bool:
    return self._parent.held_in_memory

  # pylint: disable=protected-access
  def _read_many(self, positions):
    return self._parent._read_many(positions)

  def _read_stored(self, positions):
    return self._parent._read_stored(positions)

  def _read_labels(self, positions):
    return self._parent._read_labels(positions)

  def _describe(self, position):
    return self._parent._describe(position)
  # pylint: enable=protected-access


def subset(parent: Source, indices) -> Source:
  """A source of examples `indices` of `parent`."""
  return Subset(parent, indices)


class InMemory(Source):
  """Another source's examples read once into memory, as stored (`in_memory`): decoded pixels
  in one uint8 array, or an encoded file's bytes, which the views then decode exactly as they
  would from the files, so that holding a split in memory never changes its views."""

  def __init__(self, parent: Source, chunk: int = 4096):
    from rrjax.parallel import preemption  # pylint: disable=g-import-not-at-top
    self.name, self.split = parent.name, parent.split
    self.class_names = list(parent.class_names)
    self.native_size, self.image_size = parent.native_size, parent.image_size
    n = len(parent)
    stored, self._labels = [], np.empty((n,), np.int32)
    for start in range(0, n, chunk):
      preemption.check(f"reading {parent.name} {parent.split}")
      stop = min(start + chunk, n)
      images, self._labels[start:stop] = parent.read(np.arange(start, stop))
      stored += images
    if stored and all(isinstance(x, np.ndarray) for x in stored):
      self._stored = np.stack(stored)
    else:
      self._stored = stored
    self._positions = np.arange(n)
    self._parent = parent

  @property
  def held_in_memory(self) -> bool:
    return True

  def _describe(self, position):
    return self._parent.describe(position)

  def _read_many(self, positions):
    return [(views.decode(image) if isinstance(image, bytes) else image, label)
            for image, label in self._read_stored(positions)]

  def _read_stored(self, positions):
    return [(self._stored[p], int(self._labels[p])) for p in positions]

  def _read_labels(self, positions):
    return self._labels[np.asarray(positions, np.int64)]


def decoded_bytes(source: Source) -> int | None:
  """Bytes of the source's decoded uint8 images, or None where image sizes vary."""
  if source.native_size is None:
    return None
  height, width = source.native_size
  return len(source) * height * width * 3


def in_memory(source: Source, max_bytes: int) -> Source:
  """`source` read into memory (`InMemory`) when its images have one size and their decoded
  uint8 pixels fit `max_bytes`, else `source` itself, read on demand."""
  size = decoded_bytes(source)
  if size is None or size > max_bytes or source.held_in_memory:
    return source
  return InMemory(source)
