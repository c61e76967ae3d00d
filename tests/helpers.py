"""Helpers for tests of whole runs: a tiny image folder, a tiny-encoder config, the entry point."""

import collections
import contextlib
import importlib.util
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
from jax._src import dispatch
from PIL import Image

from rrjax import data, models
from rrjax.config import embedded, smoke
from rrjax.io import files, metrics
from rrjax.training import student

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def eval_arrays(source) -> tuple[np.ndarray, np.ndarray]:
  """A (small) source's eval views in memory, float32 `[N, S, S, 3]` in [0, 1], and labels:
  what the run's streamed evaluation feeds the encoders, for checks by hand."""
  images, labels = [], []
  for batch in data.batches(source, min(len(source), 1024), train=False, seed=0,
                            process_index=0, process_count=1):
    images.append(batch["image"][batch["mask"]])
    labels.append(batch["label"][batch["mask"]])
  return np.concatenate(images).astype(np.float32) / 255, np.concatenate(labels)


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


def tiny_config(folder: str, **fields):
  """The embedded default's smoke variant (`rrjax.config.smoke`) on `tiny_cnn` (random init) and
  the image folder `folder`: one experiment "mask", trained on mask(0.5), 4 steps.

  `fields`: values by dotted path with "__" for the dots (`train__lr=1.0`); a field that the
  experiment sets is set there, or the experiment would replace it.
  """
  c = embedded.base()
  c.experiments.mask = {"train": {"corruption": "mask(0.5)"},
                        "eval": {"corruptions": ("mask(0.5)", "mask(0.9)")}}
  c = smoke.smoke(c)
  c.data.name = f"imagefolder:{folder}"
  c.data.image_size = 0
  c.data.train_split = "train[:120]"
  c.data.val_split = "train[120:]"
  c.data.test_split = "test"
  c.probe.label_fractions = (0.1, 1.0)
  c.probe.select = False
  c.train.steps = 4
  for key, value in fields.items():
    *parents, leaf = key.replace("__", ".").split(".")
    node = c.experiments.mask
    for p in parents:
      node = node.get(p) if node is not None and p in node else None
    node = node if node is not None and leaf in node else c
    if node is c:
      for p in parents:
        node = node[p]
    node[leaf] = value
  return c


def train_student(config, workdir: str) -> dict:
  """`rrjax.training.student.train_student` of `config`'s teacher as its own student, on one
  device; returns the trained variables."""
  teacher, teacher_vars = models.load_from_config(config.teacher)
  return student.train_student(
      config, workdir, mesh=jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",)),
      teacher=teacher, teacher_vars=teacher_vars, student=teacher,
      student_vars=jax.tree.map(np.array, teacher_vars),
      train_source=data.load(config.data.name, config.data.train_split))


def write_tiny_config_file(path, folder: str, *assignments: str) -> str:
  """A `--config` file whose `get_config` is `tiny_config(folder)` with `assignments` applied.

  Each assignment is a line of Python on the config `c`, e.g. `"c.train.steps = 100"`.
  """
  lines = ["from tests import helpers", "", "",
           "def get_config(arg=None):",
           "  del arg",
           f"  c = helpers.tiny_config({folder!r})",
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
  environ = {k: v for k, v in os.environ.items() if k != "RRJAX_TRACEBACK"}  # One-line errors.
  return dict(environ, PYTHONPATH=pythonpath, JAX_PLATFORMS="cpu", **extra)


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


@contextlib.contextmanager
def count_compiles():
  """Yields a Counter of backend compilations by function name, filled while in the block.

  Counted with a `jax.monitoring` listener on the backend-compile event, which jax records
  around every XLA compilation (and persistent-cache fetch) with the jitted function's name.
  """
  counts = collections.Counter()

  def listener(event, duration, **kwargs):
    del duration
    if event == dispatch.BACKEND_COMPILE_EVENT:
      counts[kwargs.get("fun_name", "?")] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def write_metrics(path) -> None:
  """A metrics.jsonl with the lines of two runs, a student and a baseline, 5 steps each (as
  `metrics.merge_runs` gathers them)."""
  with metrics.MetricsLog(path) as log:
    for step in range(1, 6):
      log.write(step=step, run="student[mask(0.9)]", loss=5.0 / step, lr=3e-4,
                images_per_s=100.0)
    for step in range(1, 6):
      log.write(step=step, run="baseline[mask(0.9)]", loss=2.0 / step, lr=1e-3,
                images_per_s=50.0)


def write_results(workdir, config) -> bytes:
  """An earlier run's results.json in `workdir`; returns its bytes."""
  path = os.path.join(workdir, "results.json")
  files.write_json(path, {"config": config.to_dict(), "rows": [], "timing": {"total": 1.0}})
  with open(path, "rb") as f:
    return f.read()


# The allowed forms that a corruption spec's error lists (rrjax.corruptions.spec).
ALLOWED_FORMS = (
    "allowed forms: mask(p) | mask(lo,hi) | noise(sigma) | noise(lo,hi) | blur(n,sigma) | "
    "blur(n,lo,hi) | identity | down(f) | box(s) | box(lo,hi) | poisson(peak) | "
    "poisson(lo,hi) | motion(n) | motion(n,angle) | jpeg(q) | jpeg(lo,hi) | "
    "oneof(A;B;...) | oneof(w:A;w:B;...) | an ImageNet-C corruption at severity s in 1..5: "
    "gaussian_noise(s), shot_noise(s), impulse_noise(s), defocus_blur(s), glass_blur(s), "
    "motion_blur(s), zoom_blur(s), snow(s), frost(s), fog(s), brightness(s), contrast(s), "
    "elastic_transform(s), pixelate(s), jpeg_compression(s)")
