"""Every config in configs/: it loads, validates, documents its command, and its smoke runs."""

import ast
import glob
import json
import os

import pytest

from rrjax.config import experiments, validate
from rrjax.corruptions import host_ops
from tests import helpers

CONFIGS = sorted(os.path.splitext(os.path.basename(p))[0]
                 for p in glob.glob(os.path.join(helpers.REPO, "configs", "*.py")))
# imagenet100c: the paper's setting but for its one evaluation draw per cell (ImageNet-C's);
# test_imagenet100c_is_the_paper_setting_on_the_grid.
PAPER = [n for n in CONFIGS if n not in ("demo", "demo_suite", "demo_universal", "digits",
                                         "folder", "imagenet100c", "scale_check")]
METHODS = {"teacher_clean", "clean_probe_on_corrupted", "teacher_corrupted", "ours", "baseline"}


def _module_docstring(name: str) -> str:
  path = os.path.join(helpers.REPO, "configs", f"{name}.py")
  return ast.get_docstring(ast.parse(open(path, encoding="utf-8").read())) or ""


def test_every_paper_experiment_has_a_config():
  assert set(PAPER) >= {"mask50", "mask75", "mask90", "noise01", "noise03", "noise05",
                        "blur21", "blur37", "labelfrac", "randmany", "noisemany",
                        "lossablation", "crossop", "transfer", "labelshift"}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_validates_and_documents_its_command(name, folder):
  # configs/folder.py's argument starts with the image folder: `DIR`, `DIR:smoke`.
  prefix = f"{folder}:" if name == "folder" else ""
  for arg in (prefix[:-1] or None, prefix + "smoke"):
    validate.validate(helpers.load_config(name, arg))
  assert f"python -m rrjax.main --config=configs/{name}.py" in _module_docstring(name)
  with pytest.raises(ValueError, match="unknown argument"):
    helpers.load_config(name, prefix + "no_such_variant")


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_use_the_paper_setting(name):
  c = helpers.load_config(name)
  assert (c.teacher.name, c.teacher.weights, c.teacher.resolution) == ("clip_rn101", "", 224)
  assert (c.data.name, c.data.train_split, c.data.test_split) == (
      "imagenet100", "train", "validation")
  assert (c.train.optimizer, c.train.lr, c.train.schedule, c.train.weight_decay) == (
      "adam", 3e-4, "constant", 0.0)
  assert (c.train.batch_size, c.train.steps, c.train.temperature) == (256, 495 * 25, 0.1)
  assert (c.probe.lr, c.probe.epochs, c.probe.select, c.eval.draws) == (1e-3, 10, False, 10)
  assert (c.baseline.lr, c.baseline.batch_size) == (1e-3, 256)
  for run_name, run in experiments.expand(c):
    kind = run.train.corruption.split("(")[0]
    assert run.baseline.epochs == (25 if kind == "mask" else 50), run_name


def test_imagenet100c_is_the_paper_setting_on_the_grid():
  c = helpers.load_config("imagenet100c")
  assert (c.teacher.name, c.data.name, c.data.test_split, c.eval.draws) == (
      "clip_rn101", "imagenet100", "validation", 1)
  (_, run), = experiments.expand(c)
  assert run.train.corruption == "mask(0.5,0.95)"
  assert len(host_ops.expand(run.eval.corruptions)) == 75
  (_, smoke), = experiments.expand(helpers.load_config("imagenet100c", "smoke"))
  assert smoke.eval.corruptions == ("gaussian_noise(1)", "jpeg_compression(5)")


def test_experiment_grids():
  fractions = helpers.load_config("labelfrac").probe.label_fractions
  assert tuple(fractions) == (0.001, 0.01, 0.05, 0.1, 0.5, 1.0)
  runs = dict(experiments.expand(helpers.load_config("lossablation")))
  assert {n: r.train.loss for n, r in runs.items()} == {
      loss: loss for loss in ("st", "ss", "sum", "ntxent", "mse")}
  assert all(r.train.corruption == "mask(0.5,0.95)" for r in runs.values())
  (_, crossop), = experiments.expand(helpers.load_config("crossop"))
  assert {s.split("(")[0] for s in crossop.eval.corruptions} == {"mask", "noise", "blur"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return helpers.make_folder(tmp_path_factory.mktemp("images"))


def _check_results(workdir: str, config):
  results = json.load(open(os.path.join(workdir, "results.json")))
  rows = results["rows"]
  runs = experiments.expand(config)
  methods = set(METHODS)
  if not any("baseline" in run.stages for _, run in runs):
    methods.discard("baseline")
  if config.eval.restored:
    methods.add("restored")
  assert {r["method"] for r in rows} == methods
  for name, run in runs:
    ours = [r for r in rows if r["method"] == "ours" and r["experiment"] == name]
    assert len({r["eval_corruption"] for r in ours}) == len(host_ops.expand(run.eval.corruptions))
    assert {r["label_fraction"] for r in ours} == {float(f) for f in run.probe.label_fractions}


# Every config's smoke goes through the real entry point; demo.py's is
# tests/test_run.py::test_main_smoke_writes_every_output (it also checks every output file),
# folder.py's (on a folder of its own, not the smoke data) tests/config/test_folder.py's.
# The two slowest (digits: about 60 s, the real EfficientNet-Lite0 on two experiments;
# demo_suite: about 30 s, ten students) run in `make test-slow`, which CI runs too: the default
# run stays within its 10 minutes on 2 cores. So do the paper configs that differ from one in
# the default run only in a severity (about 10 s each; mask90, noise05 and blur21 stay): the
# default run was 10 min 20 s after issue #16's operators.
# demo_universal (the real EfficientNet-Lite0, a student on every operator and its baseline)
# and imagenet100c (two ImageNet-C cells) joined them with issue #16's ImageNet-C corruptions,
# and noisemany (unknown severity like randmany, which stays, on noise) made room for the
# ImageNet-C operator tests in the default run.
_SLOW_SMOKES = ("digits", "demo_suite", "mask50", "mask75", "noise01", "noise03", "blur37",
                "demo_universal", "imagenet100c", "noisemany")


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_SMOKES else n
    for n in CONFIGS if n not in ("demo", "folder")])
def test_smoke_through_main(name, folder, tmp_path, monkeypatch):
  """`python -m rrjax.main --config=configs/<name>.py:smoke`, in-process, on the tiny folder."""
  monkeypatch.setenv("RRJAX_SMOKE_DATA", f"imagefolder:{folder}")
  workdir = str(tmp_path / "smoke")
  config = helpers.main_in_process(monkeypatch, f"configs/{name}.py:smoke", workdir)
  assert config.data.name == f"imagefolder:{folder}"
  _check_results(workdir, config)
  if name == "demo_suite":
    rows = json.load(open(os.path.join(workdir, "results.json")))["rows"]
    # The loss-ablation experiment drops the transfer set; the known-operator one keeps it.
    assert {r["experiment"] for r in rows if r["dataset"] == "mnist"} == {"mask90"}
    assert {(r["experiment"], r["loss"]) for r in rows} == {("mask90", "st"),
                                                             ("loss_mse", "mse")}
