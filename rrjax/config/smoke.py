"""Smoke variants: any config, shrunk to run offline in under a minute on 2 CPU cores.

    python -m rrjax.main --config=configs/mask90.py:smoke --workdir=/tmp/smoke

`smoke(c)` keeps the first experiment of `c` (or the ones named), with the first and last of
its eval corruptions and of the label fractions, its first transfer dataset and its label-shift
set both replaced by the smoke data, on `tiny_cnn` with random weights (40 px measurements,
seen at 16 px), 2 training steps, 2 draws and tiny splits. `keep_model=True` keeps the config's
own encoder and weights, seen at 32 px (the embedded default's smoke: the real EfficientNet-
Lite0). The data is the dataset named by the environment variable `RRJAX_SMOKE_DATA` (default
"fashion_mnist_local"; the tests point it at a generated `imagefolder:<dir>`). The smoke splits
("train[:96]", "train[96:128]", "test[:32]") fit any dataset with at least 128 training and 32
test images. `keep_data=True` keeps the config's own dataset and splits instead (the smoke of
`configs/folder.py:DIR`: the user's folder itself), measured at the smoke's 40 px.
"""

import os
from collections.abc import Callable, Sequence

import ml_collections

from rrjax import errors
from rrjax.corruptions import host_ops
from rrjax.config import schema

SMOKE_DATA_ENV = "RRJAX_SMOKE_DATA"
SMOKE_DATA_DEFAULT = "fashion_mnist_local"


def variant(c: ml_collections.ConfigDict, arg: str | None, config_name: str, *,
            keep_model: bool = False, keep_data: bool = False,
            others: dict[str, Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]]
            | None = None) -> ml_collections.ConfigDict:
  """`c` for `--config=configs/<config_name>.py[:arg]`: the run itself, its smoke test, or one
  of the config's `others` variants (name -> function of `c`); `keep_model`, `keep_data`: of
  `smoke`."""
  others = others or {}
  if not arg:
    return c
  if arg == "smoke":
    return smoke(c, keep_model=keep_model, keep_data=keep_data)
  if arg in others:
    return others[arg](c)
  raise errors.UserError(f"configs/{config_name}.py: unknown argument {arg!r}; allowed: "
                         f"{', '.join(['smoke', *others])}")


def smoke(c: ml_collections.ConfigDict, *, keep: Sequence[str] | None = None,
          keep_model: bool = False, keep_data: bool = False) -> ml_collections.ConfigDict:
  """`c` shrunk to its smoke test (module docstring); `keep`: the experiments to keep."""
  names = list(c.experiments)
  chosen = ml_collections.ConfigDict(sort_keys=False)
  for name in (keep if keep is not None else names[:1]):
    entry = c.experiments[name]
    if "eval" in entry and "corruptions" in entry.eval:
      # An imagenet_c grid token stands for its cells: the smoke keeps the first and last.
      entry.eval.corruptions = ends(host_ops.expand(entry.eval.corruptions))
    chosen[name] = entry
  c.experiments = chosen
  c.probe.label_fractions = ends(c.probe.label_fractions)
  if keep_model:
    c.teacher.resolution = 32
  else:
    c.teacher.name = "tiny_cnn"
    c.teacher.weights = "random"
    c.eval.zeroshot = False         # tiny_cnn has no text tower.
    c.teacher.resolution = 16
  if not keep_data:
    c.data.name = os.environ.get(SMOKE_DATA_ENV) or SMOKE_DATA_DEFAULT
    c.data.data_dir = ""
    c.data.train_split = "train[:96]"
    c.data.val_split = "train[96:128]"
    c.data.test_split = "test[:32]"
  # The operators act on the measurement: blur(37,9) reflect-pads by 18 px, so it must be wider.
  c.data.image_size = 40
  c.data.crop_scale = (0.5, 1.0)
  if c.eval.data.name:
    # The smoke validation split stands in for the label-shift set: the same classes.
    c.eval.data.update(name=c.data.name, data_dir="", split=c.data.val_split)
  if c.transfer:
    # Its first transfer dataset, on the smoke data (one more feature and probe pass).
    first = next(iter(c.transfer))
    c.transfer = ml_collections.ConfigDict({first: schema.transfer_dataset(
        c.data.name, c.data.train_split, c.data.val_split, c.data.test_split,
        image_size=c.data.image_size)})
  c.seeds = ()                    # One run.
  c.train.batch_size = 16
  c.train.steps = 2
  c.train.log_every = 1
  c.train.checkpoint_every = 2    # One save, at the end.
  c.eval.draws = 2
  c.eval.batch_size = 32
  c.probe.epochs = 2
  c.probe.batch_size = 32
  # The teacher's architecture, as the smoke run's encoder (the paper's ResNet-101 needs
  # torchvision's weights and 224 px).
  c.baseline.encoder.update(name="", weights="", resolution=0)
  c.baseline.teacher_too = False
  c.baseline.batch_size = 16
  c.baseline.max_steps = 2
  c.baseline.log_every = 1
  return c


def ends(grid) -> tuple:
  """The first and last items of `grid`: they exercise every code path, and each eval
  operator costs a compilation of its own."""
  return tuple(dict.fromkeys((grid[0], grid[-1])))
