"""Helpers for pipeline tests: a tiny image folder and a tiny-encoder config."""

import importlib.util
import os
import subprocess
import sys

import ml_collections
import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str | None = None):
  """`get_config(arg)` of `configs/<name>.py`, imported by path as `--config` does."""
  spec = importlib.util.spec_from_file_location(f"config_{name}",
                                                os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def make_folder(root, classes=3, per_class=48, test_per_class=12, size=16, seed=0) -> str:
  """`root/{train,test}/<class>/*.png`: class c is a bright square in corner c plus noise."""
  rng = np.random.default_rng(seed)
  for split, n in (("train", per_class), ("test", test_per_class)):
    for c in range(classes):
      folder = os.path.join(root, split, f"class{c}")
      os.makedirs(folder, exist_ok=True)
      for i in range(n):
        image = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        y, x = divmod(c, 2)
        image[y * size // 2:(y + 1) * size // 2, x * size // 2:(x + 1) * size // 2] += 150
        Image.fromarray(image).save(os.path.join(folder, f"{i:03d}.png"))
  return str(root)


def tiny_config(folder: str):
  """The demo's smoke config on `tiny_cnn` (random init) and an image folder."""
  c = load_config("demo", "smoke")
  c.teacher.name = "tiny_cnn"
  c.teacher.weights = "random"
  c.teacher.resolution = 16
  c.data.name = f"imagefolder:{folder}"
  c.data.train_split = "train[:120]"
  c.data.val_split = "train[120:]"
  c.data.test_split = "test"
  c.data.crop_scale = (0.5, 1.0)
  c.train.batch_size = 16
  c.train.steps = 4
  c.train.checkpoint_every = 2
  c.eval.batch_size = 32
  c.baseline.batch_size = 16
  c.experiments = [{"name": "mask", "train.corruption": "mask(0.5)",
                    "eval.corruptions": ("mask(0.5)", "mask(0.9)")}]
  return c


def write_tiny_config_file(path, folder: str, *assignments: str) -> str:
  """A `--config` file whose `get_config` is `tiny_config(folder)` with `assignments` applied.

  Each assignment is a line of Python on the config `c`, e.g. `"c.train.steps = 100"`.
  """
  lines = ["from tests import pipeline_util", "", "",
           "def get_config(arg=None):",
           "  del arg",
           f"  c = pipeline_util.tiny_config({folder!r})",
           *(f"  {line}" for line in assignments),
           "  return c"]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return os.fspath(path)


def main_command(config_path: str, workdir: str, *flags: str) -> list[str]:
  """`python -m rrjax.main --config=... --workdir=... flags...` with this interpreter."""
  return [sys.executable, "-m", "rrjax.main", f"--config={config_path}", f"--workdir={workdir}",
          *flags]


def main_env(**extra: str) -> dict[str, str]:
  """The environment for `main_command`: this repo importable (tests too), CPU only."""
  pythonpath = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
  return dict(os.environ, PYTHONPATH=pythonpath, JAX_PLATFORMS="cpu", **extra)


def run_main(config_path: str, workdir: str, *flags: str,
             timeout: float = 300) -> subprocess.CompletedProcess:
  """Runs `rrjax.main` in a subprocess to completion; stdout and stderr captured as text."""
  return subprocess.run(main_command(config_path, workdir, *flags), env=main_env(),
                        capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)


def main_in_process(monkeypatch, config_arg: str, workdir: str, *overrides: str):
  """`python -m rrjax.main --config=<config_arg> --workdir=<workdir> overrides...`, in-process.

  `config_arg` is `configs/<name>.py[:arg]` relative to the repo, or an absolute path.
  Returns the parsed `--config` as `rrjax.main` saw it (overrides applied).
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from rrjax import main  # pylint: disable=g-import-not-at-top
  argv = ["rrjax.main", f"--config={os.path.join(REPO, config_arg)}", f"--workdir={workdir}",
          *overrides]
  # ml_collections reads `--config.*` overrides from sys.argv, as under `app.run`.
  monkeypatch.setattr(sys, "argv", argv)
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  main.main(["rrjax.main"])
  return flags.FLAGS.config


def folder_dataset(folder: str, train_split: str = "train[:120]",
                   val_split: str = "train[120:]", test_split: str = "test"):
  """An entry of `config.transfer` for an image folder made by `make_folder`."""
  return ml_collections.ConfigDict(
      {"name": f"imagefolder:{folder}", "data_dir": "", "image_size": 0,
       "train_split": train_split, "val_split": val_split, "test_split": test_split})
