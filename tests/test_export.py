"""`rrjax.export`, `rrjax.load_encoder` and `rrjax.predict` on a finished tiny run."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from flax import traverse_util

from rrjax import encoder as encoder_lib
from rrjax import errors, export, models, run
from rrjax.models import clip_vit, openai_layout, weights_io
from rrjax.outputs import products
from tests import helpers

EXPERIMENT = "mask"
# A tiny run, then subprocesses: about two minutes (`make test-slow`, which CI runs).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return helpers.make_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def workdir(folder, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("run"))
  run.train_and_evaluate(helpers.tiny_config(folder), path)
  return path


@pytest.fixture(scope="module")
def exported(workdir, tmp_path_factory):
  return export.export(workdir, str(tmp_path_factory.mktemp("exports") / "mask"), EXPERIMENT)


def _cli(module: str, *args: str, cwd: str = helpers.REPO) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, *args], env=helpers.main_env(), cwd=cwd,
                        capture_output=True, text=True, timeout=300, check=False)


def _test_files(folder: str, n: int, tmp_path) -> list[str]:
  """The first `n` images of the run's test split, as stored (the PNGs' bytes), in files named
  `<label>_<i>.png` under `tmp_path`."""
  from rrjax import data  # pylint: disable=import-outside-toplevel
  source = data.load(f"imagefolder:{folder}", "test")
  images, labels = source.read(np.arange(n))
  paths = []
  for i, (image, label) in enumerate(zip(images, labels)):
    paths.append(str(tmp_path / f"{source.class_names[label]}_{i}.png"))
    with open(paths[-1], "wb") as f:
      f.write(image)
  return paths


def _printed_top1(stdout: str) -> list[str]:
  return [line.split()[1] for line in stdout.splitlines() if line.strip().startswith("1. ")]


def test_the_run_writes_what_export_needs(workdir):
  rundir = os.path.join(workdir, EXPERIMENT)
  header = products.read_student_header(os.path.join(rundir, products.STUDENT_FILE))
  assert header == {"encoder": "tiny_cnn", "kwargs": {"resolution": 16}, "measurement_size": 16}
  assert sorted(os.path.basename(p) for p in glob.glob(f"{rundir}/probe_*.safetensors")) == [
      "probe_0.1.safetensors", "probe_1.safetensors"]
  examples = json.loads(open(os.path.join(rundir, products.EXAMPLES_FILE)).read())
  assert len(examples["examples"]) == products.EXAMPLES
  assert set(examples["examples"][0]["top_k"]) == {"clean", "mask(0.5)", "mask(0.9)"}


def test_predict_gives_the_runs_own_top1_on_five_test_images(folder, exported, tmp_path):
  """The exported encoder, read back from its files by a fresh process, answers as the run's
  own evaluation did (examples.json: the run's Encoder and probes, same corruption draws)."""
  expected = json.loads(open(os.path.join(exported, products.EXAMPLES_FILE)).read())
  paths = _test_files(folder, 5, tmp_path)
  labels = [e["label"] for e in expected["examples"][:5]]
  assert labels == [os.path.basename(p).rsplit("_", 1)[0] for p in paths]
  for op in ("clean", "mask(0.9)"):
    corrupt = [] if op == "clean" else [f"--corrupt={op}", "--seed=0"]
    result = _cli("rrjax.predict", f"--encoder={exported}", "--top_k=3", *corrupt, *paths)
    assert result.returncode == 0, result.stderr[-2000:]
    run_top1 = [e["top_k"][op]["1"][0][0] for e in expected["examples"][:5]]
    assert _printed_top1(result.stdout) == run_top1, (op, result.stdout)


def test_an_export_loads_in_a_fresh_process_with_no_workdir(exported, folder, tmp_path):
  moved = shutil.copytree(exported, tmp_path / "elsewhere")
  image = _test_files(folder, 1, tmp_path)[0]
  code = ("import sys, rrjax\n"
          "enc = rrjax.load_encoder(sys.argv[1])\n"
          "data = open(sys.argv[2], 'rb').read()\n"
          "print(enc.embed([data]).shape, enc.classify([data], top_k=2)[0][0][0], "
          "enc.trained_for)\n")
  result = subprocess.run([sys.executable, "-c", code, str(moved), image],
                          env=dict(helpers.main_env(), PYTHONPATH=os.path.dirname(
                              os.path.dirname(encoder_lib.__file__))),
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  shape, top1, trained_for = result.stdout.split(") ")[0] + ")", *result.stdout.split()[-2:]
  assert shape == "(1, 32)" and trained_for == "mask(0.5)"
  assert top1 in json.loads(open(moved / "config.json").read())["class_names"]


def test_embed_takes_any_size_uint8_grey_and_float_images(exported):
  enc = encoder_lib.load_encoder(exported)
  rng = np.random.default_rng(0)
  varied = [rng.integers(0, 255, (33, 20, 3), np.uint8), rng.integers(0, 255, (9, 9), np.uint8),
            rng.integers(0, 255, (16, 16, 4), np.uint8)]
  assert enc.embed(varied).shape == (3, 32)
  floats = rng.random((2, 16, 16, 3)).astype(np.float32)
  np.testing.assert_allclose(enc.embed(floats), enc.embed(np.round(floats * 255).astype(np.uint8)),
                             atol=0.05)
  with pytest.raises(errors.UserError, match=r"float images must be in \[0, 1\]"):
    enc.embed(floats * 2)
  with pytest.raises(errors.UserError, match="no probe for label fraction 0.5"):
    enc.classify(varied, fraction=0.5)


def test_model_card_and_config_describe_the_run(exported, workdir):
  config = encoder_lib.read_config(exported)
  assert config["trained_for"]["operator"] == "mask(0.5)"
  assert config["encoder"]["embed_dim"] == 32 and config["measurement_size"] == 16
  assert config["probes"] == {"0.1": "probe_0.1.safetensors", "1": "probe_1.safetensors"}
  card = open(os.path.join(exported, "README.md")).read()
  ours = [r for r in json.loads(open(os.path.join(workdir, "results.json")).read())["rows"]
          if r["method"] == "ours" and r["eval_corruption"] == "mask(0.9)"
          and r["label_fraction"] == 1.0]
  assert f"{ours[0]['top1_mean']:.2f}" in card
  assert "## Examples" in card and "`mask(0.9)`" in card


def test_a_clip_student_exports_its_tower_in_open_clip_layout(workdir, tmp_path):
  """The run's student replaced by a tiny CLIP ViT (as a CLIP-teacher run writes it): the export
  holds its tower in OpenAI/open_clip naming, which reads back (the table open_clip loading
  is checked against: tests/models/test_openai_layout_reference.py) into the encoder's
  own parameters, and its open_clip config."""
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
               patch_size=8, image_size=16, projection_dim=32)  # 32: the probes' width.
  kwargs = {"resolution": 16, "config": tower}
  _, variables = models.load("clip_vit_b32", pretrained=False, head="embed", seed=3, **kwargs)
  products.save_student(os.path.join(copy, EXPERIMENT), variables, name="clip_vit_b32",
                        kwargs=kwargs, measurement_size=16)
  out = export.export(copy, str(tmp_path / "clip"), EXPERIMENT)
  config = encoder_lib.read_config(out)
  assert config["open_clip"]["file"] == export.OPEN_CLIP_FILE
  assert config["open_clip"]["vision_cfg"]["width"] == 16
  state, _ = weights_io.read_safetensors(os.path.join(out, export.OPEN_CLIP_FILE))
  assert "conv1.weight" in state and state["proj"].shape == (16, 32)
  loaded = encoder_lib.load_encoder(out)
  shapes = clip_vit.param_shapes(loaded.module.config)
  back = openai_layout.vit_from_state_dict(state, shapes, source=out)
  want = traverse_util.flatten_dict(loaded.variables["params"]["clip"])
  got = traverse_util.flatten_dict(back)
  assert sorted(got) == sorted(want)
  for path, value in want.items():
    np.testing.assert_array_equal(got[path], np.asarray(value), err_msg=str(path))
  assert loaded.embed(np.zeros((1, 20, 20, 3), np.uint8)).shape == (1, 32)


@pytest.mark.parametrize("case", ["unfinished", "sweep_top", "no_experiment", "exists"])
def test_export_refusals_are_one_line_and_write_nothing(workdir, tmp_path, case):
  out = tmp_path / "out"
  source = {"unfinished": str(tmp_path / "half"), "sweep_top": str(tmp_path / "sweep")}.get(
      case, workdir)
  expected = {"unfinished": "not a finished run (no results.json)",
              "sweep_top": "a sweep over seeds [0, 1]; export one seed's run",
              "no_experiment": "no experiment 'nope'; the run has mask",
              "exists": "exists; choose another --out"}[case]
  (tmp_path / "half" / EXPERIMENT).mkdir(parents=True)
  (tmp_path / "sweep").mkdir()
  results = json.loads(open(os.path.join(workdir, "results.json")).read())
  results["config"]["seeds"] = [0, 1]
  (tmp_path / "sweep" / "results.json").write_text(json.dumps(results))
  if case == "exists":
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
  with pytest.raises(errors.UserError, match=re.escape(expected)):
    export.export(source, str(out), "nope" if case == "no_experiment" else None)
  assert sorted(os.listdir(tmp_path)) == sorted(["half", "sweep"] + (["out"] if case == "exists"
                                                                     else []))
  if case == "exists":
    with pytest.raises(errors.UserError, match="config.json: cannot read it"):
      export.export(source, str(out), overwrite=True)  # Only an export is overwritten.
    assert os.listdir(out) == ["mine.txt"]
  assert sorted(os.listdir(tmp_path)) == sorted(["half", "sweep"] + (["out"] if case == "exists"
                                                                     else []))


def test_overwrite_replaces_an_earlier_export(exported, workdir, tmp_path):
  out = shutil.copytree(exported, tmp_path / "again")
  (out / "README.md").write_text("stale")
  export.export(workdir, str(out), overwrite=True)
  assert "stale" not in (out / "README.md").read_text()
  assert sorted(os.listdir(tmp_path)) == ["again"]


def test_export_cli_exits_2_with_one_line(tmp_path):
  result = _cli("rrjax.export", f"--workdir={tmp_path / 'nothing'}", f"--out={tmp_path / 'o'}")
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()
  assert result.stderr.strip().splitlines()[-1] == (
      f"rrjax.export: error: {tmp_path / 'nothing'}: no such workdir")


def _corrupt_copy(exported, tmp_path, case):
  bad = shutil.copytree(exported, tmp_path / case)
  if case == "weights_truncated":
    data = (bad / encoder_lib.WEIGHTS_FILE).read_bytes()
    (bad / encoder_lib.WEIGHTS_FILE).write_bytes(data[:len(data) // 2])
  elif case == "weights_of_another_shape":
    shutil.copyfile(bad / "probes" / "probe_1.safetensors", bad / encoder_lib.WEIGHTS_FILE)
  elif case == "foreign_config":
    (bad / "config.json").write_text(json.dumps({"architectures": ["CLIPModel"]}))
  elif case == "config_not_json":
    (bad / "config.json").write_text("{not json")
  elif case == "probe_missing":
    os.remove(bad / "probes" / "probe_1.safetensors")
  elif case == "probe_path_escapes":
    config = json.loads((bad / "config.json").read_text())
    config["probes"]["1"] = "../../model.safetensors"
    (bad / "config.json").write_text(json.dumps(config))
  elif case == "not_a_directory":
    bad = tmp_path / "nothing-here"
  return bad


@pytest.mark.parametrize("case, expected", [
    ("weights_truncated", "not a readable safetensors file"),
    ("weights_of_another_shape", "missing variable"),
    ("foreign_config", "not an rrjax encoder export"),
    ("config_not_json", "not JSON"),
    ("probe_missing", "probe_1.safetensors: cannot read the weights file"),
    ("probe_path_escapes", "a field of the wrong type"),
    ("not_a_directory", "no such export directory"),
])
def test_a_corrupt_or_foreign_export_is_one_line_exit_2(exported, folder, tmp_path, case,
                                                        expected):
  bad = _corrupt_copy(exported, tmp_path, case)
  with pytest.raises(errors.UserError, match=re.escape(expected)):
    encoder_lib.load_encoder(bad)
  if case in ("weights_truncated", "foreign_config"):  # The CLI's path, in a subprocess.
    result = _cli("rrjax.predict", f"--encoder={bad}", _test_files(folder, 1, tmp_path)[0])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("rrjax.predict: error: ")


def test_predict_names_a_missing_or_unreadable_image(exported, tmp_path):
  from rrjax import predict  # pylint: disable=import-outside-toplevel
  enc = encoder_lib.load_encoder(exported)
  junk = tmp_path / "junk.png"
  junk.write_bytes(b"this is no image")
  for path, expected in ((tmp_path / "none.png", "none.png: no such image file"),
                         (junk, "junk.png: not an image PIL can decode")):
    with pytest.raises(errors.UserError, match=expected):
      predict._decoded(enc, [str(path)])  # pylint: disable=protected-access


def test_unwritable_outputs_are_one_line_errors(exported, workdir, tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  with pytest.raises(errors.UserError, match=f"--out={re.escape(str(a_file))}/sub: cannot "
                     "create it"):
    export.export(workdir, str(a_file / "sub"))
  enc = encoder_lib.load_encoder(exported)
  with pytest.raises(errors.UserError, match="N, H, W >= 1"):
    enc.embed(np.zeros((0, 16, 16, 3), np.float32))
  with pytest.raises(errors.UserError, match="with H, W >= 1"):
    enc.embed([np.zeros((0, 5, 3), np.uint8)])
  config = json.loads(open(os.path.join(exported, "config.json")).read())
  bad = shutil.copytree(exported, tmp_path / "huge")
  config["encoder"]["kwargs"]["resolution"] = 10**6
  (bad / "config.json").write_text(json.dumps(config))
  with pytest.raises(errors.UserError, match=r"not an integer in \[1, 4096\]"):
    encoder_lib.load_encoder(bad)
