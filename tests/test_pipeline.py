"""The pipeline end to end: the real entry point, rows, resume, teacher cache, config errors."""

import json
import os

import jax
import numpy as np
import pytest

from rrjax import configuration, data, models, pipeline, train
from tests import pipeline_util

METHODS = {"teacher_clean", "teacher_corrupted", "ours", "baseline"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return pipeline_util.make_folder(tmp_path_factory.mktemp("images"))


def test_main_smoke_writes_every_output(tmp_path, monkeypatch):
  """`python -m rrjax.main --config=configs/demo.py:smoke`, in-process."""
  workdir = str(tmp_path / "smoke")
  pipeline_util.main_in_process(monkeypatch, "configs/demo.py:smoke", workdir,
                                "--config.eval.draws=2")
  for name in ("results.json", "report.md", "metrics.jsonl", "loss.png", "label_fraction.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert set(results) == {"config", "rows", "timing"}
  rows = results["rows"]
  assert {r["method"] for r in rows} == METHODS
  for method in METHODS - {"teacher_clean"}:
    cells = [r for r in rows if r["method"] == method]
    assert {r["label_fraction"] for r in cells} == {0.1, 1.0}
    assert all(r["eval_corruption"] == "mask(0.9)" and len(r["draws"]) == 2 for r in cells)
  metrics = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert {m["run"] for m in metrics} == {"student[mask(0.9)]", "baseline[mask(0.9)]"}
  assert all({"step", "loss", "lr", "images_per_s"} <= set(m) for m in metrics)


def test_rows_cover_methods_fractions_and_eval_specs(folder, tmp_path):
  c = pipeline_util.tiny_config(folder)
  pipeline.train_and_evaluate(c, str(tmp_path))
  rows = json.load(open(tmp_path / "results.json"))["rows"]
  for method in METHODS - {"teacher_clean"}:
    for spec in ("mask(0.5)", "mask(0.9)"):
      cells = [r for r in rows if r["method"] == method and r["eval_corruption"] == spec]
      assert sorted(r["label_fraction"] for r in cells) == [0.1, 1.0], (method, spec)
      for r in cells:
        assert r["train_corruption"] == "mask(0.5)"
        assert len(r["draws"]) == c.eval.draws
        assert r["top1_mean"] == pytest.approx(np.mean(r["draws"]))
        assert r["top1_std"] == pytest.approx(np.std(r["draws"], ddof=1))
  clean = [r for r in rows if r["method"] == "teacher_clean"]
  assert {r["eval_corruption"] for r in clean} == {"identity"}
  # The ceiling on this easy synthetic task: a probe on clean teacher features separates it.
  assert max(r["top1_mean"] for r in clean) > 60


def _train(config, workdir, student_vars=None):
  teacher, teacher_vars = models.load_from_config(config.teacher)
  source = data.load(config.data.name, config.data.train_split)
  return train.train_student(
      config, workdir, mesh=jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",)),
      teacher=teacher, teacher_vars=teacher_vars, student=teacher,
      student_vars=student_vars or jax.tree.map(np.array, teacher_vars), train_source=source,
      metrics_path=os.path.join(workdir, "metrics.jsonl"))


def test_resume_after_a_crash_reaches_the_same_parameters(folder, tmp_path, monkeypatch):
  c = pipeline_util.tiny_config(folder)
  c.train.steps, c.train.checkpoint_every = 6, 3
  reference = _train(c, str(tmp_path / "a"))

  real_batches = data.batches

  def crashing(*args, **kwargs):
    for i, batch in enumerate(real_batches(*args, **kwargs)):
      if i == 4:  # After the step-3 checkpoint, before the next one.
        raise RuntimeError("simulated crash")
      yield batch

  monkeypatch.setattr(train.data, "batches", crashing)
  with pytest.raises(RuntimeError, match="simulated crash"):
    _train(c, str(tmp_path / "b"))
  monkeypatch.setattr(train.data, "batches", real_batches)
  resumed = _train(c, str(tmp_path / "b"))
  jax.tree.map(np.testing.assert_array_equal, resumed, reference)
  steps = [json.loads(l)["step"] for l in open(tmp_path / "b" / "metrics.jsonl")]
  assert steps == [1, 2, 3, 4, 5, 6]  # Every step once: none lost, none duplicated.
  # Training moved the student away from its initialisation.
  teacher_vars = models.load_from_config(c.teacher)[1]
  assert not np.allclose(reference["params"]["embed"]["kernel"],
                         teacher_vars["params"]["embed"]["kernel"])


def test_teacher_cache_is_written_once_and_matches_the_teacher(folder, tmp_path, monkeypatch):
  c = pipeline_util.tiny_config(folder)
  c.train.teacher = "cache"
  c.train.cache_dir = str(tmp_path / "cache")
  _train(c, str(tmp_path / "run1"))
  (path,) = [os.path.join(c.train.cache_dir, f) for f in os.listdir(c.train.cache_dir)]
  cached = np.load(path)
  teacher, teacher_vars = models.load_from_config(c.teacher)
  images, _ = data.load_arrays(data.load(c.data.name, c.data.train_split))
  np.testing.assert_allclose(cached, teacher.apply(teacher_vars, images), atol=1e-5)
  # A second run reads the file instead of computing and writing it again.
  monkeypatch.setattr(train.teacher_cache, "compute",
                      lambda *a, **k: pytest.fail("teacher cache recomputed"))
  _train(c, str(tmp_path / "run2"))


def test_teacher_in_step_and_cache_agree_without_augmentation(folder, tmp_path):
  """With augmentation off both modes see the same views, so training is the same."""
  c = pipeline_util.tiny_config(folder)
  c.data.augment = False
  in_step = _train(c, str(tmp_path / "step"))
  c.train.teacher, c.train.cache_dir = "cache", str(tmp_path / "cache")
  cached = _train(c, str(tmp_path / "cache_run"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), in_step, cached)


@pytest.mark.parametrize("path,value,match", [
    ("train.lr", -1.0, r"config\.train\.lr"),
    ("train.loss", "l2", r"config\.train\.loss"),
    ("train.corruption", "mask(1.3)", r"config\.train\.corruption.*mask fraction"),
    ("teacher.name", "vgg", r"config\.teacher\.name"),
    ("train.batch_size", 0, r"config\.train\.batch_size"),
    ("eval.draws", 0, r"config\.eval\.draws"),
    ("probe.label_fractions", (0.0, 1.0), r"config\.probe\.label_fractions"),
    ("probe.label_fractions", (1.5,), r"config\.probe\.label_fractions"),
    ("stages", ("train", "fly"), r"config\.stages"),
    ("train.teacher", "sometimes", r"config\.train\.teacher"),
])
def test_invalid_config_fails_before_compute_naming_the_field(path, value, match):
  c = pipeline_util.load_config("demo")
  c.experiments = []
  section, leaf = path.rsplit(".", 1) if "." in path else (None, path)
  (c[section] if section else c)[leaf] = value
  with pytest.raises(ValueError, match=match):
    configuration.validate(c)


def test_invalid_experiment_override_names_the_entry():
  c = pipeline_util.load_config("demo")
  c.experiments = [{"name": "x", "eval.corruptions": ("blur(4,1)",)}]
  with pytest.raises(ValueError, match=r"config\.eval\.corruptions\[0\].*odd"):
    configuration.validate(c)
  c.experiments = [{"name": "x", "train.nope": 1}]
  with pytest.raises(ValueError, match=r"experiments\[0\]\.train\.nope"):
    configuration.validate(c)
