r"""Operator mismatch: trained on 50% to 95% masks, tested on masks, noise and blur.

The limitation the paper names (Conclusion, Appendix D.8): the method needs to know the kind
of distortion in advance, since the student learns to invert the one it was trained on. The
mask model of configs/randmany.py (student, probe and baseline) is tested on a 90% mask and
on every noise and blur setting of Table 1.

  python -m rrjax.main --config=configs/crossop.py --workdir=runs/crossop
  python -m rrjax.main --config=configs/crossop.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

Paper: no number in the main text (its Conclusion points to Appendix D.8, not reproduced here);
compare with each operator's own model in Table 1 (configs/noise*.py, configs/blur*.py).

Cost (an estimate, not measured; see configs/common.py): 2.5 to 4 hours on one H100, and a host
with more than 80 GB of memory.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # For configs/common.py.
import common  # noqa: E402  pylint: disable=g-import-not-at-top

TRAIN = "mask(0.5,0.95)"
EVAL = ("mask(0.9)", "noise(0.1)", "noise(0.3)", "noise(0.5)", "blur(21,5)", "blur(37,9)")


def get_config(arg: str | None = None):
  c = common.base()
  c.experiments = [common.experiment("mask50_95", TRAIN, EVAL)]
  return common.variant(c, arg, "crossop")
