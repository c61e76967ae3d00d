r"""Figure 4 (left), unknown severity: trained on 50% to 95% masks, tested at 50% to 99%.

The student, probe and baseline see a mask fraction drawn uniformly per image from [0.5, 0.95];
each test runs at one fixed fraction, up to more severe ones than any seen in training.

  python -m rrjax.main --config=configs/randmany.py --workdir=runs/randmany
  python -m rrjax.main --config=configs/randmany.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

Paper (CLIP RN101, ImageNet-100, top-1 %, mean of 10 draws), ours: tested at 50% 85.28, 90%
81.94, 95% 77.01, 98% 47.89, 99% 5.60; the baseline trained on the same range is below it at
every level (only plotted).

Cost (an estimate, not measured; see rrjax/config/schema.py): 2.5 to 4 hours on one H100, and about 8 host
cores decoding its images.
"""

from rrjax.config import schema, smoke

TRAIN = "mask(0.5,0.95)"
EVAL = tuple(f"mask({p})" for p in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99))


def get_config(arg: str | None = None):
  c = schema.base()
  c.experiments.mask50_95 = schema.experiment(TRAIN, EVAL)
  return smoke.variant(c, arg, "randmany")
