"""configs/folder.py: a user's image folder in one command; its smoke end to end; bad folders
stop with one line naming the folder, exit status 2, and nothing in the workdir."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rrjax import errors
from rrjax.config import validate
from tests import helpers

# Class c: a blob of its colour in its quadrant, on dark noise (learnable, also in grey).
COLOURS = ((220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 220, 40))
# File kinds, in turn: every mode the decoder makes RGB, both formats.
KINDS = ("rgb.jpg", "rgb.png", "grey.png", "rgba.png", "palette.png", "grey.jpeg")
METHODS = {"teacher_clean", "clean_probe_on_corrupted", "teacher_corrupted", "ours", "baseline"}


def make_images(root, classes=3, per_class=10, seed=0, prefix="") -> str:
  """`root/[prefix/]class_<c>/*`: `per_class` images of each class (or a count per class),
  20 to 90 px on each side."""
  rng = np.random.default_rng(seed)
  counts = per_class if isinstance(per_class, tuple) else (per_class,) * classes
  for c, count in enumerate(counts):
    folder = os.path.join(root, prefix, f"class_{c}")
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
      h, w = rng.integers(20, 90, 2)
      pixels = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
      y, x = divmod(c % 4, 2)
      pixels[y * h // 2:(y + 1) * h // 2, x * w // 2:(x + 1) * w // 2] = COLOURS[c % 4]
      kind = KINDS[(i + c) % len(KINDS)]
      image = Image.fromarray(pixels)
      mode = {"grey": "L", "rgba": "RGBA", "palette": "P"}.get(kind.split(".")[0])
      if mode:
        image = image.convert(mode)
      image.save(os.path.join(folder, f"{i:02d}_{kind}"))
  return str(root)


def test_the_layout_picks_the_splits_and_the_variants(tmp_path):
  one = make_images(tmp_path / "one", per_class=2)
  c = helpers.load_config("folder", one)
  assert c.data.name == f"imagefolder:{one}"
  assert (c.data.train_split, c.data.val_split, c.data.test_split) == (
      "all[:72%]", "all[72%:80%]", "all[80%:]")
  assert (c.data.image_size, c.teacher.resolution, c.teacher.name) == (48, 48,
                                                                       "efficientnet_lite0")
  assert c.only == "mask90" and list(c.experiments) == ["mask90", "noise05"]
  validate.validate(c)
  split = make_images(tmp_path / "split", per_class=2, prefix="train")
  make_images(tmp_path / "split", per_class=1, prefix="test")
  c = helpers.load_config("folder", f"{split}:smoke")
  assert (c.data.name, c.data.train_split, c.data.val_split, c.data.test_split) == (
      f"imagefolder:{split}", "train[:90%]", "train[90%:]", "test")
  assert (c.train.steps, c.teacher.name, c.data.image_size) == (2, "tiny_cnn", 40)
  assert helpers.load_config("folder", f"{split}:seeds").seeds == (0, 1, 2)


def test_a_folder_smaller_than_a_batch_trains_on_whole_split_batches(tmp_path):
  """7 images a class (the stated minimum) give 2 x 7 x 72% = 10 training images: a batch of
  10, not the demo's 64 (or the smoke's 16), which the student's whole batches would refuse."""
  small = make_images(tmp_path / "small", classes=2, per_class=7)
  assert helpers.load_config("folder", small).train.batch_size == 10
  assert helpers.load_config("folder", f"{small}:smoke").train.batch_size == 10
  large = make_images(tmp_path / "large", classes=2, per_class=60)
  assert helpers.load_config("folder", large).train.batch_size == 64


@pytest.mark.parametrize("arg, message", [
    (None, "configs/folder.py needs the image folder: --config=configs/folder.py:DIR"),
    ("smoke", "configs/folder.py needs the image folder"),
    ("/nowhere/at/all", "imagefolder:/nowhere/at/all: no such directory"),
    ("{one}:bogus", "configs/folder.py: unknown argument 'bogus'; allowed: smoke, seeds"),
])
def test_bad_arguments(tmp_path, arg, message):
  one = make_images(tmp_path, per_class=1)
  with pytest.raises(errors.UserError, match=message):
    helpers.load_config("folder", arg and arg.format(one=one))


def test_smoke_through_main_on_images_of_every_size_and_mode(tmp_path, monkeypatch):
  """`python -m rrjax.main --config=configs/folder.py:<dir>:smoke`, in-process, on 3 classes of
  10 images (PNG and JPEG; RGB, grey, RGBA, palette; 20 to 90 px)."""
  folder = make_images(tmp_path / "mine")
  workdir = tmp_path / "run"
  config = helpers.main_in_process(monkeypatch, f"configs/folder.py:{folder}:smoke",
                                   str(workdir))
  assert config.data.name == f"imagefolder:{folder}"
  results = json.loads((workdir / "results.json").read_text())
  rows = results["rows"]
  assert {r["method"] for r in rows} == METHODS
  assert {r["experiment"] for r in rows} == {"mask90"}
  for method in METHODS - {"teacher_clean"}:
    cells = [r for r in rows if r["method"] == method]
    assert {r["label_fraction"] for r in cells} == {0.01, 1.0}, method
    assert all(r["eval_corruption"] == "mask(0.9)" and len(r["draws"]) == 2 for r in cells)
  # 30 images: 21 training, 3 validation, 6 test (2 a class); top-1 is a count of 6.
  for r in rows:
    assert r["dataset"] == f"imagefolder:{folder}"
    assert 0 <= r["top1_mean"] <= 100, r
    assert all(round(d * 6 / 100, 6).is_integer() for d in r["draws"]), r
  for name in ("report.md", "metrics.jsonl"):
    assert os.path.getsize(workdir / name) > 0


def _bad_folder(case, root):
  """A folder that is wrong in one way; returns the start of the error's one line."""
  name = f"imagefolder:{root}"
  if case == "empty_class":
    make_images(root, per_class=8)
    os.makedirs(os.path.join(root, "class_3"))
    return f"{name}: class folder {root}/class_3 has no images (.png, .jpg, .jpeg)"
  if case == "one_class":
    make_images(root, classes=1, per_class=8)
    return (f"{name}: one class folder (class_0) in {root}; a classifier needs at least 2 "
            "classes, one folder of images each")
  if case == "unreadable":
    make_images(root, per_class=8)
    with open(os.path.join(root, "class_1", "broken.jpg"), "wb") as f:
      f.write(b"\xff\xd8 not a JPEG after all")
    return f"{name}: cannot read image {root}/class_1/broken.jpg: cannot identify image file"
  if case == "too_few":
    make_images(root, per_class=(8, 8, 4))  # 72% of 4 is 3 training images.
    return (f"{name}: too few images per class after splitting (config.data.train_split "
            "'all[:72%]', test_split 'all[80%:]'): class 'class_2': 3 training images; every "
            "class needs at least 5 training images and 1 test image: add images to its class "
            "folder")
  assert case == "missing_test_class"
  make_images(root, per_class=8, prefix="train")
  make_images(root, classes=2, per_class=2, prefix="test")
  return (f"{name}: too few images per class after splitting (config.data.train_split "
          "'train[:90%]', test_split 'test'): class 'class_2': 0 test images; every class")


@pytest.mark.parametrize("case", ["empty_class", "one_class", "unreadable", "too_few",
                                  "missing_test_class"])
def test_bad_folders_stop_with_one_line_before_the_workdir(case, tmp_path, monkeypatch, capsys):
  monkeypatch.delenv("RRJAX_TRACEBACK", raising=False)
  root = tmp_path / "mine"
  message = _bad_folder(case, str(root))
  workdir = tmp_path / "run"
  with pytest.raises(SystemExit) as info:
    helpers.main_in_process(monkeypatch, f"configs/folder.py:{root}", str(workdir))
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err
  assert err.strip().splitlines()[-1].startswith(f"rrjax: error: {message}"), err[-2000:]
  assert not workdir.exists()


def test_the_command_line_exits_2_naming_the_folder(tmp_path):
  """Through `python -m rrjax.main`, side by side: a folder that is not there (refused while
  the config loads), one with too few images (before the run starts), and the demo's config on
  a user's folder (its splits are Fashion-MNIST's), which says which config fits."""
  few, mine = tmp_path / "few", tmp_path / "mine"
  message = _bad_folder("too_few", str(few))
  make_images(mine, per_class=2)
  # The start and the end of each one line.
  cases = {
      "nowhere": ([f"--config=configs/folder.py:{tmp_path}/nowhere"],
                  f"imagefolder:{tmp_path}/nowhere: no such directory", "directory"),
      "few": ([f"--config=configs/folder.py:{few}"], message, "folder"),
      "demo": (["--config=configs/demo.py", f"--config.data.name=imagefolder:{mine}"],
               f"imagefolder:{mine}: no such directory {mine}/train; ",
               f"; for your own image folder use --config=configs/folder.py:{mine}, which reads "
               "either layout and splits it by fractions"),
  }
  runs = {case: subprocess.Popen(
      [sys.executable, "-m", "rrjax.main", *args, f"--workdir={tmp_path / f'run_{case}'}"],
      env=helpers.main_env(), cwd=helpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for case, (args, _, _) in cases.items()}
  for case, process in runs.items():
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, (case, stderr[-3000:])
    assert "Traceback" not in stderr, case
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"rrjax: error: {cases[case][1]}"), (case, stderr[-2000:])
    assert last.endswith(cases[case][2]), (case, last)
    assert not (tmp_path / f"run_{case}").exists(), case
