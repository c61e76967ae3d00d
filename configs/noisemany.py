r"""Figure 4 (right), unknown severity: trained on noise sigma 0.1 to 0.3, tested at 0.05 to 0.5.

The student, probe and baseline see a noise level drawn uniformly per image from [0.1, 0.3];
each test runs at one fixed level, up to more severe ones than any seen in training.

  python -m rrjax.main --config=configs/noisemany.py --workdir=runs/noisemany
  python -m rrjax.main --config=configs/noisemany.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

Paper (CLIP RN101, ImageNet-100, top-1 %, mean of 10 draws), ours: tested at 0.05 85.48, 0.3
79.44, 0.5 69.08; the baseline degrades faster with the level (only plotted).

Cost (an estimate, not measured; see rrjax/config/schema.py): 3.5 to 6 hours on one H100 (the
baseline trains 50 epochs), and about 8 host cores decoding its images.
"""

from rrjax.config import schema, smoke

TRAIN = "noise(0.1,0.3)"
EVAL = tuple(f"noise({s})" for s in (0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5))


def get_config(arg: str | None = None):
  c = schema.base()
  c.experiments.noise10_30 = schema.experiment(TRAIN, EVAL)
  return smoke.variant(c, arg, "noisemany")
