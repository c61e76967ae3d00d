"""ImageNet-100, ImageNet-100B and the label-shift set: class subsets of TFDS `imagenet2012`.

Names (opened through `rrjax.data.load`):
  * "imagenet100": the 100 classes of CMC (Tian, Krishnan and Isola, 2019), the paper's
    ImageNet-100 (126,689 train and 5,000 validation images);
  * "imagenet100b": 100 other classes drawn at random, with a fixed seed, from the remaining
    900: the paper's ImageNet-100B (`classlists/imagenet100b.txt` says how it was drawn);
  * "imagenet100_labelshift": the images of 5 classes outside ImageNet-100, each labelled as a
    similar ImageNet-100 class (paper Table 3, `LABEL_SHIFT`). Its label space is ImageNet-100's
    (100 classes, the same names), so a probe trained on "imagenet100" scores it directly.

Labels are 0..99 in class-list order (`classlists/<name>.txt`, one `wnid<TAB>WordNet name` a
line); `class_names` are the first WordNet lemma of each class ("hare", "moped"), fit for
prompts such as CLIP's "a photo of a {}.". Splits are imagenet2012's ("train", "validation"),
sliced after the class filter: "train[:10%]" is the first tenth of the subset's own training
examples.

Finding a subset's examples needs the label of every example of the base split. They are read
once, decoding every image on parallel threads (minutes for the 1.28M training images, about a
minute for the 50,000 validation images), and cached in
`<cache_dir>/imagenet2012_labels_<key>.npy` (default `~/.cache/rrjax`), keyed by the prepared
dataset's directory and the split; all three subsets share that file.
"""

import concurrent.futures
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from rrjax import errors
from rrjax.data import source as source_lib
from rrjax.data import splits
from rrjax.data import tfds_source

BASE = "imagenet2012"
IMAGENET100 = "imagenet100"
IMAGENET100B = "imagenet100b"
LABELSHIFT = "imagenet100_labelshift"
NAMES = (IMAGENET100, IMAGENET100B, LABELSHIFT)

# Paper Table 3: (unseen class, the ImageNet-100 class it is labelled as), by wnid.
LABEL_SHIFT = (
    ("n07930864", "n03062245"),  # cup -> cocktail shaker
    ("n01978287", "n01978455"),  # Dungeness crab -> rock crab
    ("n03792782", "n03785016"),  # mountain bike -> moped
    ("n02325366", "n02326432"),  # wood rabbit -> hare
    ("n02108915", "n02093428"),  # French bulldog -> American Staffordshire terrier
)

_CLASSLIST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "classlists")
_CACHE_PREFIX = f"{BASE}_labels_"
# Examples per read while scanning labels: large enough to amortise a batched read.
_SCAN_CHUNK = 1024


def read_classlist(name: str) -> tuple[list[str], list[str]]:
  """`(wnids, WordNet names)` of `classlists/<name>.txt`, in file (= label) order."""
  path = os.path.join(_CLASSLIST_DIR, f"{name}.txt")
  wnids, names = [], []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      line = line.rstrip("\n")
      if not line or line.startswith("#"):
        continue
      wnid, sep, words = line.partition("\t")
      if not sep or not wnid.startswith("n") or not words:
        raise errors.UserError(f"{path}:{number}: expected 'wnid<TAB>name', got {line!r}")
      wnids.append(wnid)
      names.append(words)
  if len(set(wnids)) != len(wnids):
    raise errors.UserError(f"{path}: repeated wnids")
  return wnids, names


def short_name(wordnet_name: str) -> str:
  """The first lemma of a WordNet name: "hare" of "hare", "cup" of "cup"."""
  return wordnet_name.split(",")[0].strip()


def load(name: str, split: str, *, data_dir: str | None = None, image_size: int | None = None,
         cache_dir: str | None = None) -> "ClassSubset":
  """Opens split `split` of subset `name` (one of `NAMES`) of TFDS imagenet2012.

  Args:
    name: "imagenet100", "imagenet100b" or "imagenet100_labelshift".
    split: an imagenet2012 split ("train", "validation"), optionally sliced ("train[:90%]").
    data_dir: TFDS data directory holding imagenet2012 (prepared, or its archives in
      `downloads/manual/`; see `tfds_source.py`).
    image_size: measurement resolution of the views; default 224.
    cache_dir: where the base split's labels are cached; default `~/.cache/rrjax`.
  """
  if name not in NAMES:
    raise errors.UserError(f"unknown ImageNet subset {name!r}; known: {', '.join(NAMES)}")
  base = splits.parse(split).base
  parent = tfds_source.load(BASE, base, data_dir=data_dir, image_size=image_size)
  wnids, names = read_classlist(IMAGENET100 if name == LABELSHIFT else name)
  if name == LABELSHIFT:
    relabel = {source: wnids.index(target) for source, target in LABEL_SHIFT}
  else:
    relabel = {wnid: i for i, wnid in enumerate(wnids)}
  unknown = sorted(set(relabel) - set(parent.class_names))
  if unknown:
    raise errors.UserError(f"{name}: wnids {', '.join(unknown)} are not {BASE} classes")
  parent_label = {wnid: i for i, wnid in enumerate(parent.class_names)}
  labels = base_labels(parent, _cache_path(cache_dir, data_dir, base))
  return ClassSubset(parent, labels, {parent_label[w]: new for w, new in relabel.items()},
                     [short_name(n) for n in names], name=name, split=split)


class ClassSubset(source_lib.Source):
  """The examples of some classes of a whole base split, with new labels.

  `relabel` maps a parent label to a new one; examples of other classes (and unlabelled ones,
  label -1) are left out. The slice of `split` applies to the kept examples, in parent order.
  """

  def __init__(self, parent: source_lib.Source, parent_labels: np.ndarray,
               relabel: dict[int, int], class_names: list[str], *, name: str, split: str):
    if parent.split != splits.parse(parent.split).base or len(parent_labels) != len(parent):
      raise errors.UserError(f"{name}: needs a whole base split and its labels, got {parent!r} "
                             f"and {len(parent_labels)} labels")
    self._lookup = np.full(parent.num_classes, -1, np.int64)
    self._lookup[list(relabel)] = list(relabel.values())
    labelled = parent_labels >= 0
    kept = np.zeros(len(parent_labels), bool)
    kept[labelled] = self._lookup[parent_labels[labelled]] >= 0
    self._members = np.flatnonzero(kept)
    self._labels = self._lookup[parent_labels[self._members]].astype(np.int32)
    if not self._members.size:
      raise errors.UserError(f"{name}: no example of its classes in {parent.name} {parent.split}")
    self._parent = parent
    super().__init__(name=name, split=split, class_names=class_names,
                     num_base=self._members.size, native_size=parent.native_size,
                     image_size=parent.image_size)

  # pylint: disable=protected-access
  def _read_many(self, positions):
    return self._relabelled(positions, self._parent._read_many)

  def _read_stored(self, positions):
    return self._relabelled(positions, self._parent._read_stored)
  # pylint: enable=protected-access

  def _read_labels(self, positions):
    return self._labels[np.asarray(positions, np.int64)]

  def _relabelled(self, positions, read):
    """`read(parent positions)` of this subset's `positions`, with the new labels."""
    parent_positions = self._members[np.asarray(positions, np.int64)].tolist()
    examples = read(parent_positions)
    out = []
    for position, (image, label) in zip(parent_positions, examples):
      if self._lookup[label] < 0:
        # Membership came from labels read earlier: the base split has changed since.
        raise errors.UserError(f"{self.name}: example {position} of {self._parent.name} "
                               f"{self._parent.split} has label {label}, not one of this subset's "
                               "classes: the cached labels of the split are stale; delete them "
                               f"({_CACHE_PREFIX}*.npy in the cache dir)")
      out.append((image, int(self._lookup[label])))
    return out


def base_labels(parent: source_lib.Source, cache_path: str) -> np.ndarray:
  """Labels int16 `[len(parent)]` of every example of `parent`, from the cache or read."""
  if os.path.exists(cache_path):
    labels = np.load(cache_path, allow_pickle=False)
    if labels.shape == (len(parent),):
      return labels
    logging.warning("%s holds %s labels, not %d: reading them again", cache_path,
                    labels.shape, len(parent))
  logging.info("reading the labels of the %d examples of %s %s once (cached in %s)",
               len(parent), parent.name, parent.split, cache_path)
  chunks = [np.arange(start, min(start + _SCAN_CHUNK, len(parent)))
            for start in range(0, len(parent), _SCAN_CHUNK)]
  labels = np.empty(len(parent), np.int16)
  # Decoding dominates and PIL releases the GIL, so threads scale; only labels are kept.
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    for indices, chunk in zip(chunks, pool.map(lambda i: parent.get(i)[1], chunks)):
      labels[indices] = chunk
  # Written aside and renamed, so a reader never sees a partial file.
  os.makedirs(os.path.dirname(cache_path), exist_ok=True)
  partial = f"{cache_path}.{os.getpid()}.partial"
  with open(partial, "wb") as f:
    np.save(f, labels, allow_pickle=False)
  os.replace(partial, cache_path)
  return labels


def _cache_path(cache_dir: str | None, data_dir: str | None, base: str) -> str:
  # The builder's versioned directory names the prepared data exactly, wherever its root is.
  prepared = os.path.abspath(os.fspath(tfds.builder(BASE, data_dir=data_dir).data_dir))
  key = hashlib.sha256(json.dumps([prepared, base]).encode()).hexdigest()[:16]
  directory = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "rrjax")
  return os.path.join(directory, f"{_CACHE_PREFIX}{key}.npy")
