"""ImageNet-100, ImageNet-100B and the label-shift set: class lists, and sources over (mocked)
TFDS imagenet2012 with remapped labels, slices and the label cache."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

import rrjax.data
from rrjax.data import imagenet_subsets
from tests.data.data_util import ArraySource

IMAGENET_LABELS = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012",
                               "labels.txt")
# The first classes of CMC's published imagenet100.txt, in its order.
CMC_HEAD = ("n02869837", "n01749939", "n02488291", "n02107142", "n13037406", "n02091831",
            "n04517823", "n04589890", "n03062245", "n01773797", "n01735189", "n07831146",
            "n07753275", "n03085013", "n04485082")
# Paper Table 3, by first WordNet lemma.
TABLE_3 = {"cup": "cocktail shaker", "Dungeness crab": "rock crab", "mountain bike": "moped",
           "wood rabbit": "hare", "French bulldog": "American Staffordshire terrier"}
# Mocked examples per split: random labels, so about 10% fall in each 100-class list.
NUM_EXAMPLES = 3000


def tfds_wnids() -> list[str]:
  with open(IMAGENET_LABELS, encoding="utf-8") as f:
    return f.read().split()


def classes(name):
  return imagenet_subsets.read_classlist(name)


# ---------------------------------------------------------------------------------------------
# Class lists.


def test_class_lists_are_disjoint_hundreds_of_imagenet_classes():
  in100, _ = classes("imagenet100")
  in100b, _ = classes("imagenet100b")
  assert len(set(in100)) == len(set(in100b)) == 100
  assert tuple(in100[:len(CMC_HEAD)]) == CMC_HEAD
  assert not set(in100) & set(in100b)
  assert set(in100) | set(in100b) <= set(tfds_wnids())


def test_imagenet100b_is_the_draw_its_file_documents():
  in100, _ = classes("imagenet100")
  rest = sorted(set(tfds_wnids()) - set(in100))
  drawn = sorted(np.random.default_rng(0).choice(rest, size=100, replace=False).tolist())
  assert classes("imagenet100b")[0] == drawn


def test_names_are_the_wordnet_names_of_the_wnids():
  siscore = pytest.importorskip("tensorflow_datasets.datasets.siscore.labels")
  name_of = dict(zip(tfds_wnids(), siscore.IMAGENET_LABELS_LIST))
  for name in ("imagenet100", "imagenet100b"):
    wnids, names = classes(name)
    assert names == [name_of[w] for w in wnids]


def test_label_shift_pairs_are_table_3():
  siscore = pytest.importorskip("tensorflow_datasets.datasets.siscore.labels")
  lemma = {w: imagenet_subsets.short_name(n)
           for w, n in zip(tfds_wnids(), siscore.IMAGENET_LABELS_LIST)}
  in100, _ = classes("imagenet100")
  assert {lemma[s]: lemma[t] for s, t in imagenet_subsets.LABEL_SHIFT} == TABLE_3
  for source, target in imagenet_subsets.LABEL_SHIFT:
    assert source not in in100 and target in in100


# ---------------------------------------------------------------------------------------------
# ClassSubset on an in-memory source.


def test_class_subset_keeps_and_relabels_classes_in_parent_order():
  parent = ArraySource(12)  # Labels 0, 1, 2, 0, 1, 2, ...
  subset = imagenet_subsets.ClassSubset(parent, parent.labels, {2: 0, 0: 1}, ["two", "zero"],
                                        name="sub", split="train")
  assert len(subset) == 8 and subset.class_names == ["two", "zero"]
  images, labels = subset.get(np.arange(8))
  np.testing.assert_array_equal(labels, [1, 0] * 4)
  np.testing.assert_array_equal(images, parent.get([0, 2, 3, 5, 6, 8, 9, 11])[0])
  tail = imagenet_subsets.ClassSubset(parent, parent.labels, {2: 0, 0: 1}, ["two", "zero"],
                                      name="sub", split="train[75%:]")
  np.testing.assert_array_equal(tail.get([0, 1])[0], parent.get([9, 11])[0])


def test_class_subset_errors():
  parent = ArraySource(6)
  with pytest.raises(ValueError, match="no example of its classes"):
    imagenet_subsets.ClassSubset(parent, np.full(6, -1), {0: 0}, ["a"], name="s", split="train")
  with pytest.raises(ValueError, match="whole base split"):
    imagenet_subsets.ClassSubset(ArraySource(6, split="train[:3]"), parent.labels[:3], {0: 0},
                                 ["a"], name="s", split="train")
  with pytest.raises(ValueError, match="unknown ImageNet subset 'imagenet10'"):
    imagenet_subsets.load("imagenet10", "train")


# ---------------------------------------------------------------------------------------------
# Subsets of mocked TFDS imagenet2012.


@pytest.fixture
def imagenet(mock_tfds, tmp_path):
  """Mocked imagenet2012: `(open(name, split), wnid of every validation example, parent)`."""
  data_dir, cache_dir = str(tmp_path / "tfds"), str(tmp_path / "cache")
  with mock_tfds(num_examples=NUM_EXAMPLES):
    parent = rrjax.data.load("imagenet2012", "validation", data_dir=data_dir)
    wnids = np.asarray(parent.class_names)[parent.get(np.arange(len(parent)))[1]]
    yield (lambda name, split="validation": imagenet_subsets.load(
        name, split, data_dir=data_dir, cache_dir=cache_dir)), wnids, parent


@pytest.mark.parametrize("name", ["imagenet100", "imagenet100b"])
def test_subset_labels_counts_and_images(imagenet, name):
  open_subset, wnids, parent = imagenet
  subset = open_subset(name)
  listed, names = classes(name)
  positions = np.flatnonzero(np.isin(wnids, listed))
  assert len(subset) == len(positions) > 0
  assert subset.num_classes == 100
  assert subset.class_names == [imagenet_subsets.short_name(n) for n in names]
  assert subset.image_size == 224 and subset.native_size is None
  images, labels = subset.get(np.arange(len(subset)))
  # Label i is the i-th listed class; every example of a listed class is kept, in order.
  assert [listed[label] for label in labels] == wnids[positions].tolist()
  np.testing.assert_array_equal(np.bincount(labels, minlength=100),
                                [np.sum(wnids == w) for w in listed])
  for got, want in zip(images, parent.get(positions)[0]):
    np.testing.assert_array_equal(got, want)


def test_slices_select_from_the_subset(imagenet):
  open_subset, _, _ = imagenet
  whole = open_subset("imagenet100")
  head, tail = open_subset("imagenet100", "validation[:50%]"), open_subset(
      "imagenet100", "validation[50%:]")
  assert len(head) + len(tail) == len(whole)
  np.testing.assert_array_equal(
      np.concatenate([head.get(np.arange(len(head)))[1], tail.get(np.arange(len(tail)))[1]]),
      whole.get(np.arange(len(whole)))[1])


def test_label_shift_relabels_unseen_classes_as_imagenet100(imagenet):
  open_subset, wnids, _ = imagenet
  shifted = open_subset("imagenet100_labelshift")
  in100, names = classes("imagenet100")
  target = dict(imagenet_subsets.LABEL_SHIFT)
  positions = np.flatnonzero(np.isin(wnids, list(target)))
  assert len(shifted) == len(positions) > 0
  assert shifted.class_names == [imagenet_subsets.short_name(n) for n in names]
  labels = shifted.get(np.arange(len(shifted)))[1]
  assert labels.tolist() == [in100.index(target[w]) for w in wnids[positions]]


def test_labels_are_read_once_into_a_shared_cache(imagenet, tmp_path):
  open_subset, wnids, _ = imagenet
  open_subset("imagenet100")
  open_subset("imagenet100_labelshift")
  (path,) = [os.path.join(tmp_path / "cache", f) for f in os.listdir(tmp_path / "cache")]
  labels = np.load(path)
  members = np.flatnonzero(np.isin(wnids, classes("imagenet100")[0]))
  # Membership is read from the cache: here three examples.
  fake = np.full_like(labels, -1)
  fake[members[:3]] = labels[members[:3]]
  np.save(path, fake)
  assert len(open_subset("imagenet100")) == 3
  # A cache that disagrees with the data is an error when read, never a wrong label.
  outsider = np.flatnonzero(~np.isin(wnids, classes("imagenet100")[0]))[0]
  fake[outsider] = labels[members[0]]
  np.save(path, fake)
  with pytest.raises(ValueError, match="cached labels .* are stale"):
    open_subset("imagenet100").get(np.arange(4))
  # A cache of the wrong length is read again and rewritten.
  np.save(path, fake[:5])
  assert len(open_subset("imagenet100")) == len(members)
  np.testing.assert_array_equal(np.load(path), labels)


def test_names_open_through_rrjax_data_load(mock_tfds, tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  with mock_tfds(num_examples=NUM_EXAMPLES):
    source = rrjax.data.load("imagenet100", "validation", data_dir=str(tmp_path / "tfds"),
                             image_size=64)
  assert isinstance(source, imagenet_subsets.ClassSubset)
  assert source.num_classes == 100 and source.image_size == 64
  assert os.listdir(tmp_path / "home" / ".cache" / "rrjax")
