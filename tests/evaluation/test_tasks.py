"""rrjax.evaluation.tasks: the splits a run reads and the probe tasks over them."""

import numpy as np
import pytest

from rrjax import data, errors
from rrjax.evaluation import tasks
from tests import helpers


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  make = lambda name, **kw: helpers.make_folder(tmp_path_factory.mktemp(name), **kw)
  return {"train": make("train"), "four": make("four", classes=4, per_class=20,
                                                 test_per_class=4, seed=1)}


def _splits(sources):
  """Stand-in arrays and teacher features, one row per example."""
  return {k: tasks.Split(np.zeros((len(s), 1)), np.zeros(len(s), int), np.zeros((len(s), 2)))
          for k, s in sources.items()}


def test_tasks_are_data_then_transfer_datasets_each_in_its_label_space(folders):
  c = helpers.tiny_config(folders["train"])
  c.transfer.four = helpers.folder_dataset(folders["four"], "train[:60]", "train[60:]")
  c.eval.data.update(name=c.data.name, split="train[:30]")  # Label shift: another split.
  sources = tasks.load_sources(c)
  assert sorted(sources) == ["shift", "test", "train", "transfer/four/test",
                             "transfer/four/train", "transfer/four/val", "val"]
  splits = _splits(sources)
  main, four = tasks.build(c, sources, splits)
  assert (main.name, main.num_classes, main.train is splits["train"]) == (None, 3, True)
  assert [name for name, _ in main.tests] == [c.data.name, f"{c.data.name}:train[:30]"]
  assert (four.name, four.num_classes, [n for n, _ in four.tests]) == ("four", 4, ["four"])
  assert len(four.train.labels) == 60 and four.tests[0][1] is splits["transfer/four/test"]


def test_label_shift_set_must_have_the_training_classes(folders):
  c = helpers.tiny_config(folders["train"])
  c.eval.data.update(name=f"imagefolder:{folders['four']}", split="test")
  with pytest.raises(errors.UserError, match=r"config\.eval\.data\.name: .* 4 classes"):
    tasks.load_sources(c)


def test_transfer_datasets_are_measured_at_the_runs_size_unless_they_name_theirs(tmp_path):
  # A 16 px training set measured at 24 px and a transfer set of 40 px images: the operator
  # must act on the transfer images at 24 px (the paper resizes CIFAR to 224 before masking),
  # not at their native 40 px.
  small = helpers.make_folder(tmp_path / "small", size=16)
  large = helpers.make_folder(tmp_path / "large", classes=4, per_class=20, test_per_class=4,
                              size=40, seed=1)
  c = helpers.tiny_config(small)
  c.data.image_size = 24
  c.transfer.large = helpers.folder_dataset(large, "train[:60]", "train[60:]")
  sources = tasks.load_sources(c)
  assert sources["train"].image_size == 24
  for split in ("train", "val", "test"):
    source = sources[f"transfer/large/{split}"]
    assert source.image_size == 24
    batch = next(iter(data.batches(source, 2, train=False, seed=0, num_workers=0)))
    assert batch["image"].shape[1:3] == (24, 24)
  c.transfer.large.image_size = 32  # An entry's own size wins.
  assert tasks.load_sources(c)["transfer/large/test"].image_size == 32
