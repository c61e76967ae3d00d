r"""Table 3 / Figure 5, label shift: the students' probes tested on 5 unseen ImageNet classes.

Two students, trained as configs/randmany.py (random masks, 50% to 95%) and
configs/noisemany.py (Gaussian noise, sigma 0.1 to 0.3), with their probes and baselines fitted
on ImageNet-100, are also scored on "imagenet100_labelshift": the validation images of 5 classes
outside ImageNet-100, each labelled as a similar ImageNet-100 class (cup -> cocktail shaker,
Dungeness crab -> rock crab, mountain bike -> moped, wood rabbit -> hare, French bulldog ->
American Staffordshire terrier; rrjax/data/imagenet_subsets.py). Tested at fixed masks of 50% to
99% and noise of 0.05 to 0.5; rows dataset="imagenet100_labelshift" (and the usual ImageNet-100
rows at the same levels).

  python -m rrjax.main --config=configs/labelshift.py --workdir=runs/labelshift
  python -m rrjax.main --config=configs/labelshift.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

Paper: Figure 5 plots only (no table of numbers): ours above the baseline at every mask level;
under noise, slightly below it at small sigma and well above it as sigma grows.

Cost (an estimate, not measured; see rrjax/config/schema.py): as configs/randmany.py plus
configs/noisemany.py, 5 to 8 hours on one H100 and about 8 host cores decoding its images; the
label-shift set (250 images) adds little.
"""

from rrjax.config import schema, smoke

MASK = "mask(0.5,0.95)"
NOISE = "noise(0.1,0.3)"
MASK_EVAL = tuple(f"mask({p})" for p in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99))
NOISE_EVAL = tuple(f"noise({s})" for s in (0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5))


def get_config(arg: str | None = None):
  c = schema.base()
  c.eval.data.name = "imagenet100_labelshift"
  c.eval.data.split = "validation"
  c.experiments.mask50_95 = schema.experiment(MASK, MASK_EVAL)
  c.experiments.noise10_30 = schema.experiment(NOISE, NOISE_EVAL)
  return smoke.variant(c, arg, "labelshift")
