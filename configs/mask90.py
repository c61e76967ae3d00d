r"""Table 1, random mask 90%: trained and tested on `mask(0.9)`.

  python -m rrjax.main --config=configs/mask90.py --workdir=runs/mask90
  python -m rrjax.main --config=configs/mask90.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

Paper (CLIP RN101, ImageNet-100, top-1 %, mean of 10 draws): ours 82.96, ours with 10% labels
79.87, supervised baseline (an ImageNet-supervised ResNet-101 fine-tuned end to end, row
baseline) 74.12. The paper's naive route, 12.34, is by its magnitude the frozen teacher with the
probe fitted on clean images applied to corrupted ones (row clean_probe_on_corrupted); row
teacher_corrupted, a probe fitted on corrupted features, is a stronger naive route the paper
does not report. Row baseline_teacher (CLIP fine-tuned end to end) has no paper number.

Cost (an estimate, not measured; see rrjax/config/schema.py): 2.5 to 4 hours on one H100,
and about 8 host cores decoding its images.
"""

from rrjax.config import schema, smoke


def get_config(arg: str | None = None):
  return smoke.variant(schema.paper_config("mask(0.9)", "mask90"), arg, "mask90")
