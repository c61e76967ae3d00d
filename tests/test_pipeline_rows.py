"""The optional rows of the pipeline: restored, zero-shot, and experiments sharing teacher rows."""

import json
import os

import numpy as np
import pytest

from rrjax import corruptions, evaluate, pipeline, probe, zeroshot
from tests import pipeline_util
from tests.test_clip_vit import RES, clip_dir  # noqa: F401  (a pytest fixture)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return pipeline_util.make_folder(tmp_path_factory.mktemp("rows"))


def _rows(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)["rows"]


def test_restored_and_zeroshot_rows(folder, clip_dir, tmp_path):  # noqa: F811
  c = pipeline_util.tiny_config(folder)
  c.teacher.name = "clip_vit_b32"
  c.teacher.weights = str(clip_dir)
  c.teacher.resolution = RES
  c.baseline.enabled = False
  c.eval.restored = True
  c.eval.zeroshot = True
  pipeline.train_and_evaluate(c, str(tmp_path))
  rows = _rows(tmp_path)
  methods = {r["method"] for r in rows}
  assert {"restored", "teacher_zeroshot", "zeroshot", "ours", "teacher_corrupted"} <= methods
  fractions = list(c.probe.label_fractions)
  evals = c.experiments[0]["eval.corruptions"]
  for method in ("restored", "teacher_zeroshot", "zeroshot"):
    got = [r for r in rows if r["method"] == method]
    assert len(got) == len(evals) * len(fractions), method
  # Zero-shot uses no labels: the same draws at every label fraction.
  for method in ("teacher_zeroshot", "zeroshot"):
    for ev in evals:
      draws = {tuple(r["draws"]) for r in rows
               if r["method"] == method and r["eval_corruption"] == ev}
      assert len(draws) == 1, (method, ev)

  # The teacher's zero-shot row recomputed by hand: its embeddings of the corrupted test images
  # (same draw keys) against the text head of the same checkpoint.
  from rrjax import data, models
  teacher, variables = models.load("clip_vit_b32", weights=str(clip_dir), resolution=RES)
  test = data.load(c.data.name, c.data.test_split)
  images, labels = data.load_arrays(test)[:2]
  head = zeroshot.text_classifier(clip_dir, test.class_names)
  op = corruptions.build("mask(0.9)")
  expected = []
  for key in evaluate.draw_keys(c.seed, str(op), c.eval.draws):
    feats = probe.extract_features(teacher, variables, images, corruption=op, key=key,
                                   batch_size=c.eval.batch_size)
    logits = np.asarray(zeroshot.zeroshot_logits(feats, head))
    expected.append(100 * np.mean(logits.argmax(-1) == labels))
  row = next(r for r in rows
             if r["method"] == "teacher_zeroshot" and r["eval_corruption"] == "mask(0.9)")
  np.testing.assert_allclose(row["draws"], expected, atol=1e-9)


def test_zeroshot_needs_a_clip_teacher(folder, tmp_path):
  c = pipeline_util.tiny_config(folder)
  c.eval.zeroshot = True
  with pytest.raises(ValueError, match="eval.zeroshot needs a CLIP teacher"):
    pipeline.train_and_evaluate(c, str(tmp_path))


def test_experiments_share_teacher_rows_and_plot_per_loss(folder, tmp_path, monkeypatch):
  fits = []
  fit = probe.fit
  monkeypatch.setattr(probe, "fit", lambda *a, **kw: fits.append(1) or fit(*a, **kw))
  c = pipeline_util.tiny_config(folder)
  c.baseline.enabled = False
  evals = ("mask(0.5)", "mask(0.9)")
  c.experiments = [{"name": loss, "train.corruption": "mask(0.5,0.9)",
                    "eval.corruptions": evals, "train.loss": loss} for loss in ("st", "mse")]
  pipeline.train_and_evaluate(c, str(tmp_path))
  rows = _rows(tmp_path)
  assert {r["experiment"] for r in rows} == {"st", "mse"}
  assert {(r["experiment"], r["loss"]) for r in rows} == {("st", "st"), ("mse", "mse")}
  by = lambda name, method: {(r["dataset"], r["eval_corruption"], r["label_fraction"]):
                             r["draws"] for r in rows
                             if r["experiment"] == name and r["method"] == method}
  # The teacher rows are computed once and shared; the students differ.
  for method in ("teacher_clean", "teacher_corrupted"):
    assert by("st", method) == by("mse", method) != {}
  assert by("st", "ours") != by("mse", "ours")
  # Probes fitted: teacher_clean and teacher_corrupted once, ours once per experiment.
  fractions = len(c.probe.label_fractions)
  assert len(fits) == 4 * fractions
  assert os.path.exists(os.path.join(tmp_path, "loss_ablation.png"))
  report = open(os.path.join(tmp_path, "report.md")).read()
  assert "st, trained on `mask(0.5,0.9)`, loss `st`" in report
  assert "mse, trained on `mask(0.5,0.9)`, loss `mse`" in report
