r"""Table 1, Gaussian noise sigma 0.5: trained and tested on `noise(0.5)`.

  python -m rrjax.main --config=configs/noise05.py --workdir=runs/noise05
  python -m rrjax.main --config=configs/noise05.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

Paper (CLIP RN101, ImageNet-100, top-1 %, mean of 10 draws): ours 76.23, ours with 10% labels
73.14, supervised baseline 71.43.
The frozen clean teacher with a probe fitted on corrupted images (row teacher_corrupted): 6.14.

Cost (an estimate, not measured; see configs/common.py): 3.5 to 6 hours on one H100 (the
baseline trains 50 epochs), and a host with more than 80 GB of memory.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # For configs/common.py.
import common  # noqa: E402  pylint: disable=g-import-not-at-top


def get_config(arg: str | None = None):
  return common.variant(common.paper_config("noise(0.5)", "noise05"), arg, "noise05")
