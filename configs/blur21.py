r"""Table 1, Gaussian blur n=21, std 5: trained and tested on `blur(21,5)`.

  python -m rrjax.main --config=configs/blur21.py --workdir=runs/blur21
  python -m rrjax.main --config=configs/blur21.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

Paper (CLIP RN101, ImageNet-100, top-1 %, mean of 10 draws): ours 83.24, ours with 10% labels
80.94, supervised baseline 76.40.

Cost (an estimate, not measured; see rrjax/config/schema.py): 3.5 to 6 hours on one H100 (the
baseline trains 50 epochs), and about 8 host cores decoding its images.
"""

from rrjax.config import schema, smoke


def get_config(arg: str | None = None):
  return smoke.variant(schema.paper_config("blur(21,5)", "blur21"), arg, "blur21")
