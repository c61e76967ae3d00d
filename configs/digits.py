r"""The demo's recipe on a small dataset it never saw: 1,200 MNIST digits as an image folder.

The embedded default's teacher, student and settings (`configs/demo.py`: EfficientNet-Lite0 at
48 px, the student's 500 steps, the baseline's epochs, budget and learning rates, probes and
the baseline's step chosen on validation), on handwritten digits instead of Fashion-MNIST: 1,200
training images (120 a class), 1,000 validation images, 1,000 test images, grey 28 px, the
operators acting at 28 px. The hyperparameters were chosen on Fashion-MNIST and are not
re-chosen here: how well the recipe carries over is the question.

  make digits   # = python -m rrjax.data.mnist_digits --out=runs/mnist_digits, then
                #   python -m rrjax.main --config=configs/digits.py --workdir=runs/digits

Mask 90% and noise 0.5, one seed (`:seeds` for three); docs/embedded_default.md ("A dataset it
never saw") has the numbers and the wall time.
"""

from rrjax.config import embedded, smoke

DIGITS_DIR = "runs/mnist_digits"


def get_config(arg: str | None = None):
  c = embedded.add_demo_experiments(embedded.base())
  c.data.name = f"imagefolder:{DIGITS_DIR}"
  c.data.train_split = "train[:1200]"
  c.data.val_split = "train[7000:]"
  c.data.test_split = "test[:1000]"
  return smoke.variant(c, arg, "digits", keep_model=True, others={"seeds": _seeds})


def _seeds(c):
  c.seeds = (0, 1, 2)
  return c
