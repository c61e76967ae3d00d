r"""Table 1, Gaussian blur n=37, std 9: trained and tested on `blur(37,9)`.

  python -m rrjax.main --config=configs/blur37.py --workdir=runs/blur37
  python -m rrjax.main --config=configs/blur37.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

Paper (CLIP RN101, ImageNet-100, top-1 %, mean of 10 draws): ours 77.80, ours with 10% labels
74.84, supervised baseline 68.94.
The paper's naive route: 18.20, by its magnitude the frozen teacher with the probe
fitted on clean images applied to corrupted ones (row clean_probe_on_corrupted; row
teacher_corrupted fits the probe on corrupted features, a stronger route).

Cost (an estimate, not measured; see rrjax/config/schema.py): 3.5 to 6 hours on one H100 (the
baseline trains 50 epochs), and about 8 host cores decoding its images.
"""

from rrjax.config import schema, smoke


def get_config(arg: str | None = None):
  return smoke.variant(schema.paper_config("blur(37,9)", "blur37"), arg, "blur37")
