"""Transfer (paper Table 2) and label-shift (Table 3) evaluation through the pipeline."""

import json
import os

import numpy as np
import pytest

from rrjax import experiment, models, pipeline, probe
from tests import pipeline_util

PROBED = {"teacher_clean", "teacher_corrupted", "ours"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """Training data (3 classes), a 4-class transfer set and a 3-class set of other images."""
  make = lambda name, **kw: pipeline_util.make_folder(tmp_path_factory.mktemp(name), **kw)
  return {"train": make("train"),
          "four": make("four", classes=4, per_class=40, test_per_class=8, seed=1),
          "three": make("three", test_per_class=8, seed=2)}


def test_transfer_and_label_shift_rows(folders, tmp_path, monkeypatch):
  fitted = []
  fit = probe.fit

  def recording_fit(feats, labels, num_classes, **kw):
    fitted.append((num_classes, int(labels.max())))
    return fit(feats, labels, num_classes, **kw)

  monkeypatch.setattr(probe, "fit", recording_fit)
  c = pipeline_util.tiny_config(folders["train"])
  c.eval.draws = 2
  c.transfer.four = pipeline_util.folder_dataset(folders["four"])
  c.transfer.three = pipeline_util.folder_dataset(folders["three"])
  shift = f"imagefolder:{folders['three']}"
  c.eval.data.update(name=shift, split="test")
  pipeline.train_and_evaluate(c, str(tmp_path))
  rows = json.load(open(os.path.join(tmp_path, "results.json")))["rows"]

  def methods(dataset):
    return {r["method"] for r in rows if r["dataset"] == dataset}

  train = f"imagefolder:{folders['train']}"
  assert methods(train) == PROBED | {"baseline"}
  # Label shift: every method trained on the training data, scored on the other images.
  assert methods(shift) == PROBED | {"baseline"}
  # Transfer: probes on every encoder, the fine-tuned baseline's without its head included,
  # at every eval corruption and label fraction.
  (_, run), = experiment.expand(c)
  fractions = run.probe.label_fractions
  for name in ("four", "three"):
    assert methods(name) == PROBED | {"baseline"}, name
    for method in ("ours", "baseline"):
      got = [r for r in rows if r["dataset"] == name and r["method"] == method]
      assert len(got) == len(run.eval.corruptions) * len(fractions), (name, method)
    backbone = {r["backbone_label_fraction"] for r in rows
                if r["dataset"] == name and r["method"] == "baseline"}
    assert backbone == {max(fractions)}
  # Each probe is sized for the labels of the dataset it is fitted on.
  assert {n for n, _ in fitted} == {3, 4}
  assert all(top < n for n, top in fitted)


def test_baseline_backbone_is_the_fine_tuned_encoder_without_head():
  model, variables = models.load("tiny_cnn", pretrained=False, head="logits", num_classes=5)
  images = np.random.default_rng(0).uniform(size=(3, 16, 16, 3)).astype(np.float32)
  encoder = pipeline._backbone(model)
  feats = encoder.apply(variables, images)
  logits = model.apply(variables, images)
  # tiny_cnn's classifier is Dense(relu(embedding)): recompute the logits from the features.
  fc = variables["params"]["fc"]
  np.testing.assert_allclose(np.maximum(np.asarray(feats), 0) @ fc["kernel"] + fc["bias"],
                             logits, rtol=1e-5, atol=1e-5)
  with pytest.raises(TypeError, match="head"):
    pipeline._backbone(encoder)


def test_label_shift_needs_the_training_classes(folders, tmp_path):
  c = pipeline_util.tiny_config(folders["train"])
  c.eval.data.update(name=f"imagefolder:{folders['four']}", split="test")
  with pytest.raises(ValueError, match=r"config\.eval\.data\.name: .* 4 classes"):
    pipeline.train_and_evaluate(c, str(tmp_path))


@pytest.mark.parametrize("field", ["name", "test_split"])
def test_transfer_entry_fields_are_validated(folders, tmp_path, field):
  c = pipeline_util.tiny_config(folders["train"])
  c.transfer.four = pipeline_util.folder_dataset(folders["four"])
  c.transfer.four[field] = ""
  with pytest.raises(ValueError, match=rf"config\.transfer\.four\.{field}"):
    pipeline.train_and_evaluate(c, str(tmp_path))
