r"""Table 2, transfer: probes on the ImageNet-100 students, fitted and tested on other datasets.

Two students, trained as configs/randmany.py (random masks, 50% to 95%) and
configs/noisemany.py (Gaussian noise, sigma 0.1 to 0.3); after training, `teacher_clean`,
`teacher_corrupted` and `ours` probes are fitted on each transfer dataset's corrupted training
images and tested on its test split under the same operator (rows: dataset=<key>):
CIFAR-10, CIFAR-100, STL-10 (TFDS, resized to 224), COVID chest X-rays and ImageNet-100B.

  python -m rrjax.main --config=configs/transfer.py --workdir=runs/transfer \
      --config.transfer.covid.name=imagefolder:/data/covid
  python -m rrjax.main --config=configs/transfer.py:smoke --workdir=/tmp/smoke   # < 1 min, CPU

COVID is an image folder (`<dir>/train/<class>/*`, `<dir>/test/<class>/*`), not a TFDS
dataset: `--config.transfer.covid.name=imagefolder:<dir>` points at it (default
`imagefolder:data/covid`, relative to the working directory).

The baseline is fine-tuned on ImageNet-100 as in configs/randmany.py / configs/noisemany.py
(its ImageNet-100 rows); its transfer rows probe the features of that fine-tuned encoder
without its head, like the students'.

Paper (CLIP RN101, top-1 %, mean of 10 draws), ours trained on random masks: CIFAR-10 80.93,
CIFAR-100 58.55, STL-10 89.44, COVID 84.01, ImageNet-100B 80.09.

Cost (an estimate, not measured; see rrjax/config/schema.py): 1 to 2 hours of student training on
one H100 per experiment and as much again for the baseline, plus about 10 minutes of feature
passes per transfer dataset. Every split streams from its files (small ones, such as CIFAR's,
are held in memory as uint8 up to `data.cache_mb`), so host memory does not grow with the
datasets.
"""

from rrjax.config import schema, smoke

MASK = "mask(0.5,0.95)"
NOISE = "noise(0.1,0.3)"
# The default COVID folder; `--config.transfer.covid.name=imagefolder:<dir>` overrides it.
COVID_DIR = "data/covid"


def get_config(arg: str | None = None):
  c = schema.base()
  # Probes are fitted on a dataset's training split with fixed hyperparameters (probe.select
  # False), so the val splits are only featurised; a small slice keeps that cheap.
  c.transfer.cifar10 = schema.transfer_dataset("cifar10", "train", "train[:2%]", "test")
  c.transfer.cifar100 = schema.transfer_dataset("cifar100", "train", "train[:2%]", "test")
  c.transfer.stl10 = schema.transfer_dataset("stl10", "train", "train[:2%]", "test")
  c.transfer.covid = schema.transfer_dataset(f"imagefolder:{COVID_DIR}", "train",
                                             "train[:2%]", "test")
  c.transfer.imagenet100b = schema.transfer_dataset("imagenet100b", "train", "train[:2%]",
                                                    "validation")
  # The paper tests transfer under the training distortion itself.
  c.experiments.mask50_95 = schema.experiment(MASK)
  c.experiments.noise10_30 = schema.experiment(NOISE)
  return smoke.variant(c, arg, "transfer")
