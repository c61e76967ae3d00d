r"""Operator mismatch: trained on 50% to 95% masks, tested on masks, noise and blur.

The limitation the paper names (Conclusion, Appendix D.8): the method needs to know the kind
of distortion in advance, since the student learns to invert the one it was trained on. The
mask model of configs/randmany.py (student, probe and baseline) is tested on a 90% mask and
on every noise and blur setting of Table 1.

  python -m rrjax.main --config=configs/crossop.py --workdir=runs/crossop
  python -m rrjax.main --config=configs/crossop.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

Paper: no number in the main text (its Conclusion points to Appendix D.8, not reproduced here);
compare with each operator's own model in Table 1 (configs/noise*.py, configs/blur*.py).

Cost (an estimate, not measured; see rrjax/config/schema.py): 2.5 to 4 hours on one H100, and about 8 host
cores decoding its images.
"""

from rrjax.config import schema, smoke

TRAIN = "mask(0.5,0.95)"
EVAL = ("mask(0.9)", "noise(0.1)", "noise(0.3)", "noise(0.5)", "blur(21,5)", "blur(37,9)")


def get_config(arg: str | None = None):
  c = schema.base()
  c.experiments.mask50_95 = schema.experiment(TRAIN, EVAL)
  return smoke.variant(c, arg, "crossop")
