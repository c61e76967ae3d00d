"""rrjax.run: the whole run end to end: every row kind, transfer and label shift, shared teacher
rows, bad inputs refused before outputs change, determinism."""

import json
import os

import numpy as np
import pytest

from rrjax import corruptions, errors, models, run
from rrjax.config import experiments
from rrjax.evaluation import probe, scoring, zeroshot
from rrjax.evaluation.features import extract_features
from rrjax.models import weights_io
from tests import helpers
from tests.models.test_clip_vit import RES, clip_dir  # noqa: F401  (a pytest fixture)

METHODS = {"teacher_clean", "clean_probe_on_corrupted", "teacher_corrupted", "ours",
           "baseline"}
PROBED = {"teacher_clean", "clean_probe_on_corrupted", "teacher_corrupted", "ours"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return helpers.make_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """Training data (3 classes), a 4-class transfer set and a 3-class set of other images."""
  make = lambda name, **kw: helpers.make_folder(tmp_path_factory.mktemp(name), **kw)
  return {"train": make("train"),
          "four": make("four", classes=4, per_class=40, test_per_class=8, seed=1),
          "three": make("three", test_per_class=8, seed=2)}


def _rows(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)["rows"]


@pytest.mark.slow  # About 45 s: `make test-slow`, which CI runs after the default suite.
def test_main_smoke_writes_every_output(tmp_path, monkeypatch):
  """`python -m rrjax.main --config=configs/demo.py:smoke`, in-process."""
  workdir = str(tmp_path / "smoke")
  helpers.main_in_process(monkeypatch, "configs/demo.py:smoke", workdir,
                                "--config.eval.draws=2")
  for name in ("results.json", "report.md", "metrics.jsonl", "loss.png", "label_fraction.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert set(results) == {"config", "rows", "timing"}
  rows = results["rows"]
  assert {r["method"] for r in rows} == METHODS
  for method in METHODS - {"teacher_clean"}:
    cells = [r for r in rows if r["method"] == method]
    assert {r["label_fraction"] for r in cells} == {0.01, 1.0}
    assert all(r["eval_corruption"] == "mask(0.9)" and len(r["draws"]) == 2 for r in cells)
  metrics = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  runs = {m["run"] for m in metrics}
  assert "student[mask(0.9)]" in runs and len(runs) == 3  # and a baseline per label fraction
  assert all(r.startswith("baseline[mask(0.9)] lr=") for r in runs - {"student[mask(0.9)]"})
  assert all({"step", "loss", "lr", "images_per_s"} <= set(m) for m in metrics if "loss" in m)
  # The baselines' validation curves: scored along training, plotted.
  assert {m["run"] for m in metrics if "val_top1" in m} == runs - {"student[mask(0.9)]"}
  assert os.path.getsize(os.path.join(workdir, "validation.png")) > 0


def test_rows_cover_methods_fractions_and_eval_specs(folder, tmp_path):
  c = helpers.tiny_config(folder)
  run.train_and_evaluate(c, str(tmp_path))
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


def test_restored_and_zeroshot_rows(folder, clip_dir, tmp_path):  # noqa: F811
  c = helpers.tiny_config(folder)
  c.teacher.name = "clip_vit_b32"
  c.teacher.weights = str(clip_dir)
  c.teacher.resolution = RES
  c.stages = ("train", "probe", "transfer")
  c.eval.restored = True
  c.eval.zeroshot = True
  run.train_and_evaluate(c, str(tmp_path))
  rows = _rows(tmp_path)
  methods = {r["method"] for r in rows}
  assert {"restored", "teacher_zeroshot", "zeroshot", "ours", "teacher_corrupted"} <= methods
  fractions = list(c.probe.label_fractions)
  evals = c.experiments.mask.eval.corruptions
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
  images, labels = helpers.eval_arrays(test)
  head = zeroshot.text_classifier(clip_dir, test.class_names)
  op = corruptions.build("mask(0.9)")
  expected = []
  for key in scoring.draw_keys(c.seed, str(op), c.eval.draws):
    feats = extract_features(teacher, variables, images, corruption=op, key=key,
                                   batch_size=c.eval.batch_size)
    logits = np.asarray(zeroshot.zeroshot_logits(feats, head))
    expected.append(100 * np.mean(logits.argmax(-1) == labels))
  row = next(r for r in rows
             if r["method"] == "teacher_zeroshot" and r["eval_corruption"] == "mask(0.9)")
  np.testing.assert_allclose(row["draws"], expected, atol=1e-9)


def test_experiments_share_teacher_rows_and_plot_per_loss(folder, tmp_path, monkeypatch):
  fits = []
  fit = probe.fit
  monkeypatch.setattr(probe, "fit", lambda *a, **kw: fits.append(1) or fit(*a, **kw))
  c = helpers.tiny_config(folder)
  c.stages = ("train", "probe", "transfer")
  evals = ("mask(0.5)", "mask(0.9)")
  c.experiments = {loss: {"train": {"corruption": "mask(0.5,0.9)", "loss": loss},
                          "eval": {"corruptions": evals}} for loss in ("st", "mse")}
  run.train_and_evaluate(c, str(tmp_path))
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


def test_transfer_and_label_shift_rows(folders, tmp_path, monkeypatch):
  fitted = []
  fit = probe.fit

  def recording_fit(feats, labels, num_classes, **kw):
    fitted.append((num_classes, int(labels.max())))
    return fit(feats, labels, num_classes, **kw)

  monkeypatch.setattr(probe, "fit", recording_fit)
  c = helpers.tiny_config(folders["train"])
  c.eval.draws = 2
  c.transfer.four = helpers.folder_dataset(folders["four"])
  c.transfer.three = helpers.folder_dataset(folders["three"])
  shift = f"imagefolder:{folders['three']}"
  c.eval.data.update(name=shift, split="test")
  run.train_and_evaluate(c, str(tmp_path))
  rows = json.load(open(os.path.join(tmp_path, "results.json")))["rows"]

  def methods(dataset):
    return {r["method"] for r in rows if r["dataset"] == dataset}

  train = f"imagefolder:{folders['train']}"
  assert methods(train) == PROBED | {"baseline"}
  # Label shift: every method trained on the training data, scored on the other images.
  assert methods(shift) == PROBED | {"baseline"}
  # Transfer: probes on every encoder, the fine-tuned baseline's without its head included,
  # at every eval corruption and label fraction.
  (_, sub), = experiments.expand(c)
  fractions = sub.probe.label_fractions
  for name in ("four", "three"):
    assert methods(name) == PROBED | {"baseline"}, name
    for method in ("ours", "baseline"):
      got = [r for r in rows if r["dataset"] == name and r["method"] == method]
      assert len(got) == len(sub.eval.corruptions) * len(fractions), (name, method)
    backbone = {r["backbone_label_fraction"] for r in rows
                if r["dataset"] == name and r["method"] == "baseline"}
    assert backbone == {max(fractions)}
  # Each probe is sized for the labels of the dataset it is fitted on.
  assert {n for n, _ in fitted} == {3, 4}
  assert all(top < n for n, top in fitted)


@pytest.mark.parametrize("field", ["name", "test_split"])
def test_transfer_entry_fields_are_validated(folders, tmp_path, field):
  c = helpers.tiny_config(folders["train"])
  c.transfer.four = helpers.folder_dataset(folders["four"])
  c.transfer.four[field] = ""
  with pytest.raises(ValueError, match=rf"config\.transfer\.four\.{field}"):
    run.train_and_evaluate(c, str(tmp_path))


@pytest.mark.parametrize("case", ["missing", "empty", "no_images", "corrupt", "unknown_tfds"])
def test_bad_dataset_is_named(folder, tmp_path, case):
  root = str(tmp_path / "data")
  name = f"imagefolder:{root}"
  if case == "missing":
    message = f"{name}: no such directory"
  elif case == "empty":
    os.makedirs(root)
    message = f"{name}: no such directory {root}/train"
  elif case == "no_images":
    os.makedirs(os.path.join(root, "train", "cat"))
    with open(os.path.join(root, "train", "cat", "notes.txt"), "w") as f:
      f.write("not an image")
    message = f"{name}: class folder {root}/train/cat has no images (.png, .jpg, .jpeg)"
  elif case == "corrupt":
    helpers.make_folder(root, classes=2, per_class=64, test_per_class=1)
    bad = os.path.join(root, "train", "class0", "bad.png")
    with open(bad, "wb") as f:
      f.write(b"\x89PNG garbage, not an image")
    message = f"{name}: cannot read image {bad}: cannot identify image file '{bad}'"
  else:
    name = "no_such_dataset_xyz"
    message = ("'no_such_dataset_xyz' is not a TFDS dataset (nor 'fashion_mnist_local' or "
               "'imagefolder:<dir>')")
  config = helpers.tiny_config(folder, data__name=name)
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  earlier = helpers.write_results(workdir, config)
  with pytest.raises(ValueError) as info:
    run.train_and_evaluate(config, workdir)
  assert str(info.value) == message
  with open(os.path.join(workdir, "results.json"), "rb") as f:
    assert f.read() == earlier


# ----------------------------------------------------------------------------- weights


def test_weights_of_another_architecture_are_refused(folder, tmp_path):
  path = str(tmp_path / "tiny_embed8.npz")
  weights_io.save_npz(path, models.load("tiny_cnn", pretrained=False, embed_dim=8)[1])
  with pytest.raises(ValueError) as info:
    run.train_and_evaluate(helpers.tiny_config(folder, teacher__weights=path),
                           str(tmp_path / "run"))
  assert str(info.value) == (f"{path}: variable 'params/embed/bias' has shape (8,), the module "
                             "expects (32,); wrong architecture?")


def test_naive_row_is_the_ceilings_probe_on_corrupted_images(folder, tmp_path):
  # Under the identity "corruption" the clean-fitted probe on the teacher's features of the
  # (un)corrupted test images is the ceiling itself; under a mask it is lower.
  c = helpers.tiny_config(folder, stages=("probe",))
  c.experiments.mask.eval.corruptions = ("identity", "mask(0.9)")
  run.train_and_evaluate(c, str(tmp_path))
  rows = _rows(tmp_path)
  cell = lambda method, ev: {r["label_fraction"]: r["top1_mean"] for r in rows
                             if r["method"] == method and r["eval_corruption"] == ev}
  assert cell("clean_probe_on_corrupted", "identity") == cell("teacher_clean", "identity")
  assert all(cell("clean_probe_on_corrupted", "mask(0.9)")[f] < cell("teacher_clean",
                                                                     "identity")[f]
             for f in c.probe.label_fractions)


@pytest.mark.slow  # Two whole runs: `make test-slow`, which CI runs after the default suite.
def test_seeds_are_whole_runs_aggregated_per_cell(folder, tmp_path, monkeypatch):
  c = helpers.tiny_config(folder, stages=("train", "probe"))
  c.seeds = (0, 1)
  run.train_and_evaluate(c, str(tmp_path))
  per_seed = {s: {(r["method"], r["eval_corruption"], r["label_fraction"]): r
                  for r in _rows(tmp_path / f"seed_{s}")} for s in (0, 1)}
  assert json.load(open(tmp_path / "seed_1" / "results.json"))["config"]["seed"] == 1
  assert per_seed[0] != per_seed[1]  # Another seed, another run.
  rows = _rows(tmp_path)
  assert len(rows) == len(per_seed[0])
  for r in rows:
    key = (r["method"], r["eval_corruption"], r["label_fraction"])
    means = [per_seed[s][key]["top1_mean"] for s in (0, 1)]
    assert r["seeds"] == {"0": means[0], "1": means[1]}
    assert r["top1_mean"] == pytest.approx(np.mean(means))
    assert r["top1_stderr"] == pytest.approx(np.std(means, ddof=1) / np.sqrt(2))
  report = (tmp_path / "report.md").read_text()
  assert "mean ± standard error over 2 training seeds" in report
  assert "ours - teacher (corrupted)" in report
  # A finished seed is read back, not run again.
  monkeypatch.setattr(run, "_train_and_evaluate", lambda *a: pytest.fail("ran a seed again"))
  run.train_and_evaluate(c, str(tmp_path))


def test_two_fresh_runs_write_the_same_results(folder, tmp_path):
  texts = []
  for name in ("a", "b"):
    run.train_and_evaluate(helpers.tiny_config(folder), str(tmp_path / name))
    texts.append((tmp_path / name / "results.json").read_text())
  # `timing` holds wall seconds, which no two runs share. It is the last key (keys are sorted),
  # so everything before it must be byte-identical.
  assert list(json.loads(texts[0])) == ["config", "rows", "timing"]
  heads = [t[:t.index('\n  "timing": ')] for t in texts]
  assert heads[0] == heads[1]
  assert json.loads(texts[0])["timing"].keys() == json.loads(texts[1])["timing"].keys()
  # What `rrjax.export` takes home is as deterministic: the student, its probes, its examples.
  for name in ("student.safetensors", "probe_0.1.safetensors", "probe_1.safetensors",
               "examples.json"):
    assert ((tmp_path / "a" / "mask" / name).read_bytes()
            == (tmp_path / "b" / "mask" / name).read_bytes()), name


def test_student_batch_larger_than_the_training_split_is_refused_before_compute(
    folder, tmp_path, monkeypatch):
  monkeypatch.setattr(models, "load_from_config",
                      lambda *a, **k: pytest.fail("the teacher was loaded"))
  # 24 images: at least 5 of each of the 3 classes (the image folder's minimum), fewer than 32.
  c = helpers.tiny_config(folder, data__train_split="train[:24]", train__batch_size=32)
  with pytest.raises(errors.UserError) as info:
    run.train_and_evaluate(c, str(tmp_path))
  assert str(info.value) == ("config.train.batch_size (experiment mask): 32 exceeds the 24 "
                             "images of data.train_split 'train[:24]'")
