r"""Table 1, Gaussian noise sigma 0.1: trained and tested on `noise(0.1)`.

  python -m rrjax.main --config=configs/noise01.py --workdir=runs/noise01
  python -m rrjax.main --config=configs/noise01.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

Paper (CLIP RN101, ImageNet-100, top-1 %, mean of 10 draws): ours 84.46, ours with 10% labels
80.99, supervised baseline 82.23.

Cost (an estimate, not measured; see rrjax/config/schema.py): 3.5 to 6 hours on one H100 (the
baseline trains 50 epochs), and about 8 host cores decoding its images.
"""

from rrjax.config import schema, smoke


def get_config(arg: str | None = None):
  return smoke.variant(schema.paper_config("noise(0.1)", "noise01"), arg, "noise01")
