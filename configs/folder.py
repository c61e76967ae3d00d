r"""Your own images: the demo's recipe on any image folder, one command.

  python -m rrjax.main --config=configs/folder.py:DIR --workdir=runs/mine
  python -m rrjax.main --config=configs/folder.py:DIR:smoke --workdir=/tmp/mine_smoke
      # about 20 s: the folder itself (every file read) on tiny_cnn, random weights, 2 steps
  python -m rrjax.main --config=configs/folder.py:DIR --workdir=runs/mine_noise \
      --config.only=noise05     # the other operator; --config.only=mask90,noise05: both
  python -m rrjax.main --config=configs/folder.py:DIR:seeds ...   # seeds 0, 1, 2

Layouts (`rrjax/data/imagefolder.py`), images *.png, *.jpg, *.jpeg of any size and mode (grey,
RGBA and palette images are made RGB):

  DIR/<class>/*.jpg                    one folder: test 20%, validation 10% of the rest, the
                                       other 72% training ("all[:72%]", "all[72%:80%]",
                                       "all[80%:]"), each about that share of every class
  DIR/train/<class>/*.jpg              split folders: validation 10% of train/ ("train[90%:]"),
  DIR/test/<class>/*.jpg               training the other 90%, test all of test/

The splits are slices of the folder's fixed pseudo-random order, the same on every machine; a
folder with a `train/` or `test/` folder is read as split folders. Every image is resized (the
eval view: short side, centre crop; training: random resized crop) to a 48 px measurement, the
teacher's resolution: the operators act on it and the encoders see it as it is
(`--config.data.image_size=64 --config.teacher.resolution=64` for more detail, slower).

Minimum: at least 2 classes, and after splitting at least 5 training images and 1 test image
of every class (in one folder, 7 images a class always give that; with split folders, 1 in
test/ and about 7 in train/, whose 10% taken for validation is drawn at random), checked before
anything runs (`rrjax/config/inputs.py`); a folder with fewer training images than a batch (64;
16 for the smoke) trains on batches of the whole training split. A missing folder, an empty
class folder, a single class, a file that is no image or too few images stop the run with one
line naming the folder and what is missing (exit status 2, nothing written to the workdir); an
image whose header reads but whose pixels do not (a truncated file) is found when first
decoded, and stops the run then with one line naming the file (the workdir resumes once it is
fixed or removed).

The recipe (`configs/demo.py`, not re-chosen for your data): EfficientNet-Lite0 teacher and
student with the packaged ImageNet weights; the student trains 500 steps of 64 images; probes
at 1%, 10% and 100% of the training labels, their learning rate and epochs chosen on
validation; the supervised baseline fine-tuned end to end for the protocol's epochs (25 for the
mask, 50 for noise) and at least the student's 32,000 images, its step chosen on validation.
One experiment by default, random mask 90% (`mask90`), as `make demo`; `--config.only=noise05`
runs Gaussian noise 0.5 instead.

Cost on 2 CPU cores at the demo's scale, measured 2026-11-26 on a user-like folder (1,950 MNIST
digits of 20 to 96 px as grey PNG, RGB JPEG and palette PNG; 1,404 training images, 10
classes): 547 s of wall time (2026-11-27: the three baselines 331 s, the student 133 s, the
probes 67 s), on cores that ran the student stage about 30% slower than in the first
measurements (602 s and 604 s, when the 1% baseline trained 1,600 steps instead of the
student's 500: benchmarks/README.md, "folder_check.py"). Both operators take about twice
that. Images
are decoded in the main process (`data.num_workers` 0: a worker process started per pass
costs more than it saves here). Measured with

  python benchmarks/folder_check.py --digits=runs/mnist_digits --out=runs/folder_check

Large photos add their decoding at every pass (JPEGs are decoded at reduced size, but still a
few ms each): resizing a folder of photos to about 100 px once makes the run as cheap as above.
"""

import os

from rrjax import errors
from rrjax.config import embedded, smoke
from rrjax.data import imagefolder, splits

USAGE = ("configs/folder.py needs the image folder: --config=configs/folder.py:DIR[:smoke|:seeds]"
         " (DIR/<class>/*.jpg, or DIR/train/<class>/ and DIR/test/<class>/)")
# Fractions of what is there, as split slices (see the module docstring).
SPLITS = {
    imagefolder.ALL: ("all[:72%]", "all[72%:80%]", "all[80%:]"),
    "train": ("train[:90%]", "train[90%:]", "test"),
}
SEEDS = (0, 1, 2)
VARIANTS = ("smoke", "seeds")


def get_config(arg: str | None = None):
  directory, variant = _parse(arg)
  c = embedded.add_demo_experiments(embedded.base())
  c.only = "mask90"  # One operator: the demo's budget (module docstring).
  c.data.name = imagefolder.PREFIX + directory
  c.data.train_split, c.data.val_split, c.data.test_split = SPLITS[_layout(directory)]
  # Images of any size, measured at the encoders' input size: nothing upsampled inside.
  c.data.image_size = c.teacher.resolution
  # Decoded in this process, as the demo's Fashion-MNIST (held in memory) is: images of varied
  # sizes are not held in memory, and a worker process per pass (the probes' and the
  # baseline's validation passes number in the hundreds) costs more to start than the decoding
  # of a few thousand small images it would take off this process.
  c.data.num_workers = 0
  # The smoke reads the folder itself (its layout, splits, minimum and every file), on
  # tiny_cnn with random weights: a check of the data in seconds.
  c = smoke.variant(c, variant, "folder", keep_data=True, others={"seeds": _seeds})
  # A folder smaller than a batch trains on whole-split batches (the student needs whole ones).
  c.train.batch_size = min(c.train.batch_size, _training_images(directory, c.data.train_split))
  return c


def _training_images(directory: str, train_split: str) -> int:
  """How many images `train_split` of the folder holds (files listed, none opened)."""
  split = splits.parse(train_split)
  try:
    return len(split.indices(len(imagefolder.listing(directory, split.base)[1])))
  except errors.UserError:
    return 1 << 30  # `rrjax.config.inputs` reports the problem, with every other one.


def _parse(arg: str | None) -> tuple[str, str | None]:
  """`DIR` or `DIR:<variant>` -> (DIR, variant or None). A DIR that exists is taken whole."""
  directory, colon, variant = (arg or "").rpartition(":")
  if arg and os.path.isdir(arg):
    return arg, None
  if not arg or arg in VARIANTS or (colon and not directory):
    raise errors.UserError(USAGE)
  return (directory, variant) if colon else (arg, None)


def _layout(directory: str) -> str:
  """The base split whose fractions the run reads: "all" (one folder) or "train"."""
  if not os.path.isdir(directory):
    raise errors.UserError(f"{imagefolder.PREFIX}{directory}: no such directory"
                           + ("" if os.path.isabs(directory)
                              else f" (relative to {os.getcwd()})"))
  return imagefolder.layout_splits(directory)[0]


def _seeds(c):
  """Three training seeds: every cell the mean +- standard error over them."""
  c.seeds = SEEDS
  return c
