r"""Table 1, Gaussian noise sigma 0.5: trained and tested on `noise(0.5)`.

  python -m rrjax.main --config=configs/noise05.py --workdir=runs/noise05
  python -m rrjax.main --config=configs/noise05.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

Paper (CLIP RN101, ImageNet-100, top-1 %, mean of 10 draws): ours 76.23, ours with 10% labels
73.14, supervised baseline 71.43.
The paper's naive route: 6.14, by its magnitude the frozen teacher with the probe
fitted on clean images applied to corrupted ones (row clean_probe_on_corrupted; row
teacher_corrupted fits the probe on corrupted features, a stronger route).

Cost (an estimate, not measured; see rrjax/config/schema.py): 3.5 to 6 hours on one H100 (the
baseline trains 50 epochs), and about 8 host cores decoding its images.
"""

from rrjax.config import schema, smoke


def get_config(arg: str | None = None):
  return smoke.variant(schema.paper_config("noise(0.5)", "noise05"), arg, "noise05")
