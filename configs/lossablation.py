r"""Figure 6, loss ablation: five contrastive losses on the 50% to 95% mask model.

One experiment per loss (`train.loss`: st, the paper's; ss, sum, ntxent; mse, eq. 1), each
trained as in configs/randmany.py and tested at 90%, 95% and 98% masks with all labels. The
supervised baseline is not part of the figure and is not trained.

  python -m rrjax.main --config=configs/lossablation.py --workdir=runs/lossablation
  python -m rrjax.main --config=configs/lossablation.py --workdir=runs/ablation --config.only=mse
  python -m rrjax.main --config=configs/lossablation.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

Paper (CLIP RN101, ImageNet-100, top-1 %, mean of 10 draws), tested at 90/95/98%:
st 81.94/77.01/47.89, ss 81.91/76.48/49.51, sum 82.45/77.49/36.89, ntxent 82.14/76.34/27.35,
mse 77.35/71.43/22.51.

Cost (an estimate, not measured; see rrjax/config/schema.py): 6 to 11 hours on one H100 (five
student trainings), and about 8 host cores decoding its images.
"""

from rrjax.config import schema, smoke

TRAIN = "mask(0.5,0.95)"
EVAL = ("mask(0.9)", "mask(0.95)", "mask(0.98)")
LOSSES = ("st", "ss", "sum", "ntxent", "mse")


def get_config(arg: str | None = None):
  c = schema.base()
  c.probe.label_fractions = (1.0,)
  c.stages = ("train", "probe")  # The baseline does not depend on the student's loss.
  for loss in LOSSES:
    c.experiments[loss] = schema.experiment(TRAIN, EVAL, {"train.loss": loss})
  return smoke.variant(c, arg, "lossablation")
