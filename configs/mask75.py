r"""Table 1, random mask 75%: trained and tested on `mask(0.75)`.

  python -m rrjax.main --config=configs/mask75.py --workdir=runs/mask75
  python -m rrjax.main --config=configs/mask75.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

Paper (CLIP RN101, ImageNet-100, top-1 %, mean of 10 draws): ours 83.99, ours with 10% labels
80.36, supervised baseline 75.68.

Cost (an estimate, not measured; see rrjax/config/schema.py): 2.5 to 4 hours on one H100,
and about 8 host cores decoding its images.
"""

from rrjax.config import schema, smoke


def get_config(arg: str | None = None):
  return smoke.variant(schema.paper_config("mask(0.75)", "mask75"), arg, "mask75")
