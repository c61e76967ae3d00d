r"""The paper's shapes end to end on a CPU: CLIP RN101, 224 px, ImageNet-like JPEGs, every stage.

  make scale-check     # generates the images, then runs this config (9 min on 2 CPU cores)
  python -m rrjax.data.synthetic --out=runs/imagenet_like --train=256 --test=64
  python -m rrjax.main --config=configs/scale_check.py --workdir=runs/scale_check

Table 1's mask 90% config (`configs/mask90.py`) on what any machine has: the teacher and
student are CLIP RN101 with random weights (`teacher.weights = "random"`: the real network,
not its published weights, so the accuracies mean nothing), the data is a generated folder of
JPEGs of varied size around 350 x 400 (`rrjax.data.synthetic`), decoded, cropped and resized
to 224 px by the real input pipeline (Grain worker processes, `rrjax.data`), streamed by every
stage. What it checks before an accelerator is rented: the paper path builds, compiles and runs
(student, probes, baseline, evaluation, outputs) at 224 px with RN101's 512-d embeddings.

Unlike the paper run: batches of 16 (RN101 training at 256 needs tens of GB for activations,
more than a CPU host here), 4 training steps of the student and of the baseline, 2 corruption
draws, 2 probe epochs; no zero-shot, label-shift or transfer rows (they need the published
checkpoint and other datasets). `--config.data.name=imagefolder:<dir>` points it at other images.
"""

from rrjax.config import schema, smoke

FOLDER = "runs/imagenet_like"


def get_config(arg: str | None = None):
  c = schema.paper_config("mask(0.9)", "mask90")
  c.teacher.weights = "random"
  # The paper's baseline encoder, ResNet-101 at 224 px, with random weights.
  c.baseline.encoder.weights = "random"
  c.baseline.teacher_too = False  # One baseline: the shapes are what is checked.
  c.eval.zeroshot = False         # Needs the published checkpoint's text tower.
  c.data.name = f"imagefolder:{FOLDER}"
  c.data.image_size = 224
  c.data.train_split = "train"
  c.data.val_split = "train[:32]"
  c.data.test_split = "test"
  c.train.batch_size = c.baseline.batch_size = 16
  c.train.steps = 4
  c.train.log_every = 1
  c.train.checkpoint_every = 2
  c.baseline.max_steps = 4
  c.baseline.log_every = 1
  c.eval.batch_size = 16
  c.eval.draws = 2
  c.probe.epochs = 2
  return smoke.variant(c, arg, "scale_check")
