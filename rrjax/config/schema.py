"""Every field of a run's config, at the paper's values (Ravula, Smyrnis, Jordan, Dimakis,
NeurIPS 2021).

Every paper config is `base()` (CLIP RN101 teacher and student on ImageNet-100, the paper's
hyperparameters, with the details its authors' code fixes) plus its experiments: sub-runs
given by `experiment(...)`. The Table 1 configs are `paper_config(corruption, name)`. A config
file imports this module like any other:

    from rrjax.config import schema, smoke

    def get_config(arg=None):
      return smoke.variant(schema.paper_config("mask(0.9)", "mask90"), arg, "mask90")

Paper setting, per experiment:
  * student: Adam 3e-4 constant, batch 256, 25 epochs of ImageNet-100 (495 steps each), loss
    `st`, tau 0.1; random-resized crop + flip, the same crop for the teacher and the student;
  * probe: Adam 1e-3, 10 epochs, on corrupted training features, a fresh draw each epoch;
    label fractions 10% and 100%; the paper's fixed hyperparameters (no selection);
  * baseline: an ImageNet-supervised ResNet-101 (torchvision's weights, `baseline.encoder`)
    fine-tuned end to end with a new head, Adam 1e-3, batch 256 (64 x 4 GPUs), 25 epochs (50
    for noise and blur); CLIP fine-tuned the same way is a second baseline (`teacher_too`);
  * evaluation: the 5,000 validation images, 10 corruption draws (one for deterministic blur).
The teacher is OpenAI's RN101 (`teacher.weights = ""`: `~/.cache/clip/RN101.pt`); the data is
TFDS imagenet2012, prepared in the TFDS data dir (`--config.data.data_dir`) or its archives in
`<data_dir>/downloads/manual/` (`rrjax/data/imagenet_subsets.py`).

Cost. Every stage streams its images from the dataset's files (`rrjax.data`), so host memory
does not grow with the dataset (`benchmarks/memory.py --scaling`); per-image state is the
features of a split (2 KB an image for RN101's 512-d embedding) and its labels, and while the
probes of an encoder train, one such array per corruption draw of the training split (a fresh
draw each of the 10 epochs: 2.6 GB for ImageNet-100). The host
decodes about 740 training views/s per core (`benchmarks/input_pipeline.py`): feeding one H100
at 40% MFU takes about 7 cores of worker processes (`data.num_workers`). Compute, estimated
from FLOP counts (not measured): CLIP RN101 costs about 10 GMACs a 224 px image forward, so
the student's 12,375 steps of 256 images (teacher forward, student forward and backward) are
about 1.3e17 multiply-adds: 1 to 2 hours on one H100; the 25-epoch baseline about as much again, the 50-epoch one twice that; probes and
evaluation (21 feature passes over the training split per experiment) about half an hour.

Smoke variants (`<config>.py:smoke`): `rrjax.config.smoke`.
"""

import ml_collections

BATCH_SIZE = 256
# An epoch of ImageNet-100 (126,689 training images) at batch 256, counted as the paper does.
STEPS_PER_EPOCH = 495
EPOCHS = 25
TRAIN_STEPS = EPOCHS * STEPS_PER_EPOCH
# Label fractions of Table 1: "ours" and "ours, 10% labels".
LABEL_FRACTIONS = (0.1, 1.0)


def base() -> ml_collections.ConfigDict:
  """Every field, at the paper's values; `experiments` is left to the caller."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Training seeds: () is one run at `seed`; several are one whole run each (data order, crops,
  # corruption draws, label subsets, probe and head initialisation) in `<workdir>/seed_<s>`,
  # and `<workdir>/results.json` holds every cell as the mean +- standard error over them.
  c.seeds = ()

  c.teacher = ml_collections.ConfigDict()
  c.teacher.name = "clip_rn101"
  c.teacher.weights = ""          # "" -> OpenAI's RN101.pt in ~/.cache/clip.
  c.teacher.resolution = 224

  c.student = ml_collections.ConfigDict()
  c.student.name = ""             # The teacher's architecture, initialised from its weights.

  c.data = ml_collections.ConfigDict()
  c.data.name = "imagenet100"
  c.data.data_dir = ""            # "" -> TFDS's default data dir.
  c.data.image_size = 0           # 0 -> 224, the measurement the operators act on.
  c.data.train_split = "train"    # All 126,689 images, as in the paper.
  # The paper's probe hyperparameters are fixed (probe.select False), so this split is only
  # featurised, never used to choose anything; it overlaps the training split.
  c.data.val_split = "train[:2%]"
  c.data.test_split = "validation"  # The 5,000 ImageNet-100 validation images.
  c.data.augment = True           # RandomResizedCrop(224) + flip, one crop for both views.
  c.data.crop_scale = (0.08, 1.0)  # RandomResizedCrop's default scale range.
  # Input pipeline (`rrjax.data`): worker processes decoding and augmenting (-1: one per core
  # but one, none for a split held in memory), and the size under which a split of fixed-size
  # images is decoded once and held in memory as uint8 (larger ones stream from their files).
  c.data.num_workers = -1
  c.data.cache_mb = 1024

  c.train = ml_collections.ConfigDict()
  c.train.corruption = "mask(0.9)"
  c.train.loss = "st"
  c.train.temperature = 0.1
  c.train.optimizer = "adam"
  c.train.lr = 3e-4
  # The authors' cosine schedule barely decayed and their weight decay was never passed.
  c.train.schedule = "constant"
  c.train.warmup_steps = 0
  c.train.weight_decay = 0.0
  c.train.batch_size = BATCH_SIZE
  c.train.steps = TRAIN_STEPS
  c.train.teacher = "step"        # Augmented views change every step: no teacher cache.
  c.train.cache_dir = ""
  # "float32" or "bfloat16": the compute dtype of the student's and the baseline's training
  # steps (teacher forward included); parameters, optimiser state and the loss stay float32.
  c.train.compute_dtype = "float32"
  c.train.log_every = 50
  c.train.checkpoint_every = 1000

  c.eval = ml_collections.ConfigDict()
  c.eval.corruptions = ("mask(0.9)",)
  c.eval.draws = 10
  c.eval.batch_size = 256
  # Appendix baseline: classical restoration of A(x), then the frozen teacher + probe.
  c.eval.restored = False
  # Zero-shot rows from the teacher checkpoint's text tower (CLIP teachers: zeroshot.TEACHERS).
  c.eval.zeroshot = False
  c.eval.zeroshot_template = "a photo of a {}."
  c.eval.zeroshot_tokenizer = ""  # CLIP RN teachers: "" -> the hub's CLIP BPE tokenizer.
  # Label shift (Table 3): with a name, the probes and baseline trained on data.* are also
  # scored on this split, whose labels must be data.name's classes (rows: dataset=<name>).
  c.eval.data = ml_collections.ConfigDict()
  c.eval.data.name = ""           # "" -> no label-shift evaluation.
  c.eval.data.data_dir = ""
  c.eval.data.split = ""

  c.probe = ml_collections.ConfigDict()
  c.probe.label_fractions = LABEL_FRACTIONS
  c.probe.lr = 1e-3
  c.probe.epochs = 10
  c.probe.min_steps = 0           # The paper's 10 epochs at every label fraction.
  c.probe.batch_size = 256
  c.probe.weight_decay = 0.0
  c.probe.select = False

  c.baseline = ml_collections.ConfigDict()
  # The baseline's pretrained encoder (fine-tuned with a new head; name "": the teacher's). The
  # paper's is an ImageNet-supervised ResNet-101: torchvision's weights, read as data into
  # `rrjax.models.resnet`. With `teacher_too`, the teacher is also fine-tuned the same way, as
  # a second baseline (rows `baseline_teacher`).
  c.baseline.encoder = paper_baseline_encoder()
  c.baseline.teacher_too = True   # CLIP fine-tuned end to end: a strong second baseline.
  c.baseline.lr = 1e-3
  c.baseline.schedule = "constant"
  c.baseline.weight_decay = 0.0
  c.baseline.batch_size = BATCH_SIZE
  c.baseline.epochs = EPOCHS      # Experiments set 50 for noise and blur (`experiment`).
  c.baseline.max_steps = 10**9    # No cap: the epochs (or the student's budget) decide.
  # Hyperparameters chosen on `data.val_split` like the probe's (`rrjax.training.baseline`): a
  # training per learning rate of `lr_grid` (empty: `lr`), the step with the best validation
  # top-1, scored at about `val_points` steps. Off in the paper configs: their validation split
  # overlaps the training split, and the paper fixed the baseline's protocol.
  c.baseline.select = False
  c.baseline.lr_grid = ()
  c.baseline.val_points = 25
  c.baseline.log_every = 50
  # Steps between checkpoints (0: only at the end and on SIGTERM); the best state on validation
  # is written with each (`rrjax.training.loop.Validation`).
  c.baseline.checkpoint_every = 1000

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1

  # Transfer (Table 2): `transfer.<key> = transfer_dataset(...)`; after training, the probes
  # are fitted and tested on each (rows: dataset=<key>), in the stage "transfer". Empty: none.
  c.transfer = ml_collections.ConfigDict()

  # What runs: "train" (the student), "probe" (the probes of every encoder on corrupted
  # images; the clean-teacher ceiling always runs), "baseline" (fine-tuning end to end) and
  # "transfer" (probes on the `transfer` datasets). An experiment may set its own.
  c.stages = ("train", "probe", "baseline", "transfer")
  c.only = ""
  # Sub-runs by name, in the order they run (`experiments.<name> = experiment(...)`, one by one:
  # a dict assigned whole becomes a ConfigDict with sorted keys; see `rrjax.config.experiments`).
  # Empty: one run of the fields above.
  c.experiments = ml_collections.ConfigDict(sort_keys=False)
  return c


def transfer_dataset(name: str, train_split: str, val_split: str, test_split: str,
                     data_dir: str = "", image_size: int = 0) -> ml_collections.ConfigDict:
  """An entry of `config.transfer`: a dataset for `rrjax.data.load` and its three splits.

  `image_size` 0 is the run's measurement size (that of `data.*`: 224 in the paper configs),
  so that the operators act on transfer images at the size they act on the training data;
  `data_dir` "" is TFDS's default.
  """
  return ml_collections.ConfigDict(
      {"name": name, "data_dir": data_dir, "image_size": image_size,
       "train_split": train_split, "val_split": val_split, "test_split": test_split})


def baseline_epochs(corruption: str) -> int:
  """The paper trained the baseline 25 epochs on masked images, 50 on noisy or blurred ones."""
  return EPOCHS if corruption.startswith("mask") else 2 * EPOCHS


def experiment(train: str, evals: tuple[str, ...] | None = None,
               extra: dict | None = None) -> ml_collections.ConfigDict:
  """A sub-run trained on `train` and evaluated on `evals` (default: `train` itself).

  `extra`: further fields it sets, by dotted path, e.g. `{"train.loss": "ss"}`. Returns the
  nested fields, for `config.experiments.<name> = experiment(...)`.
  """
  fields = {"train.corruption": train, "eval.corruptions": tuple(evals or (train,)),
            "baseline.epochs": baseline_epochs(train), **(extra or {})}
  nested = {}
  for path, value in fields.items():
    *parents, leaf = path.split(".")
    node = nested
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return ml_collections.ConfigDict(nested)


def paper_config(corruption: str, name: str) -> ml_collections.ConfigDict:
  """Table 1: one experiment `name`, trained and tested on `corruption`.

  With the appendix's pixel-space route (`restored` rows) and the zero-shot rows of the
  teacher's text tower.
  """
  c = base()
  c.eval.restored = True
  c.eval.zeroshot = True
  c.experiments[name] = experiment(corruption)
  return c


# torchvision's ImageNet-supervised ResNet-101 (IMAGENET1K_V1), where `torch.hub` saves it:
# https://download.pytorch.org/models/resnet101-63fe2227.pth
TORCHVISION_RESNET101 = "~/.cache/torch/hub/checkpoints/resnet101-63fe2227.pth"


def paper_baseline_encoder() -> ml_collections.ConfigDict:
  """The paper's supervised baseline: an ImageNet-supervised ResNet-101 (torchvision's)."""
  return ml_collections.ConfigDict(
      {"name": "resnet101", "weights": TORCHVISION_RESNET101, "resolution": 224})
