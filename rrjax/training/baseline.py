"""Stage: the supervised baseline, fine-tuned end to end on corrupted images.

The paper's baseline is an ImageNet-pretrained network whose final layer is replaced by a C-way
head, fine-tuned end to end on corrupted images with their labels (Adam, lr 1e-3). Here the
encoder is `baseline.encoder` (the paper configs: torchvision's ImageNet-supervised ResNet-101),
or the teacher's architecture and weights when its name is "" (`head="logits"` with
`num_classes=C`: the classifier is new), trained on the labelled subset of a label fraction;
`baseline.teacher_too` fine-tunes the teacher as well, as a second baseline (`rows`). Its steps
compute in `train.compute_dtype`, as the student's (`rrjax.training.student`): bfloat16 compute
with float32 parameters, optimiser state, logits and loss; it is evaluated in float32, as the
student.

Its budget (`steps_for`): `baseline.epochs` passes over the labelled images (the paper's 25, 50
for noise and blur). With `baseline.select`, at least as many images as the student sees in
training (`train.steps * train.batch_size`, counted as views: each step is a full batch, also
when fewer images are labelled), so that no label fraction gives it less compute
than the method it is compared with (the step is chosen on validation, so more steps cannot
hurt it), and its hyperparameters are chosen on the validation split, as the probes' are: one training per learning rate of
`baseline.lr_grid` (empty: `baseline.lr`), each scored on the corrupted validation images (one
fixed draw) about `baseline.val_points` times and at the end; the (learning rate, step) with the
best validation top-1 is the baseline (early stopping on validation). Without it, the last step
at `baseline.lr` (the paper's fixed protocol).

    model, variables, chosen = train_baseline(config, f"{rundir}/baseline_0.1", mesh=mesh,
                                              train_source=labelled, val_source=val,
                                              num_classes=10)
    encoder = backbone(model)   # the fine-tuned encoder without its head, for transfer probes
"""

import functools
import os

import jax
import optax
from absl import logging

from rrjax import corruptions, data, models
from rrjax.parallel import sharding
from rrjax.training import loop
from rrjax.training.state import TrainState, apply_train, make_optimizer, make_schedule, update


def make_step(model, corruption, tx, compute_dtype="float32"):
  """`step(state, batch, key) -> (state, metrics)`: cross-entropy on A(x), one update.

  `model` computes in `compute_dtype` ("float32" or "bfloat16"); its logits are float32.
  """
  model = models.with_dtype(model, compute_dtype)

  def step(state: TrainState, batch: dict, key: jax.Array):
    corrupted = corruption(jax.random.fold_in(key, state.step), data.to_float(batch["image"]))

    def objective(params):
      logits, new_stats = apply_train(model, params, state.batch_stats, corrupted)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
      return ce, new_stats

    (value, new_stats), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    return update(state, tx, grads, new_stats), {"loss": value,
                                                 "grad_norm": optax.global_norm(grads)}

  return step


def steps_per_epoch(config, num_labelled: int) -> int:
  return max(num_labelled // config.baseline.batch_size, 1)


def steps_for(config, num_labelled: int) -> int:
  """Training steps for `num_labelled` examples: `epochs` passes, capped by `max_steps`; under
  `baseline.select`, at least the images the student of the same config sees
  (`train.steps * train.batch_size`, also when this run does not train it)."""
  bc = config.baseline
  steps = bc.epochs * steps_per_epoch(config, num_labelled)
  if bc.select:
    # Every step is a full batch of views: with fewer labelled images than a batch the
    # training stream runs on across epochs (`rrjax.data.pipeline`, drop_remainder=False), so
    # 40 images in batches of 64 are still 64 views a step.
    student_images = config.train.steps * config.train.batch_size
    steps = max(steps, -(-student_images // bc.batch_size))
  return int(min(steps, bc.max_steps))


def learning_rates(config) -> tuple[float, ...]:
  """The learning rates tried: `baseline.lr_grid` under `baseline.select`, else `baseline.lr`."""
  bc = config.baseline
  grid = tuple(bc.lr_grid) if bc.select else ()
  return tuple(float(lr) for lr in grid) or (float(bc.lr),)


ENCODERS = ("baseline", "teacher")


def encoder_section(config, encoder: str = "baseline"):
  """The config section (`name`, `weights`, `resolution`) of the encoder a baseline starts
  from: "baseline" is `baseline.encoder` (the teacher when its name is ""), "teacher" the
  teacher."""
  if encoder not in ENCODERS:
    raise ValueError(f"encoder {encoder!r} not one of {ENCODERS}")
  section = config.baseline.encoder
  return section if encoder == "baseline" and section.name else config.teacher


def rows(config) -> tuple[tuple[str, str], ...]:
  """`(method name in the rows, encoder)` of each baseline the config trains: `baseline`, and
  `baseline_teacher` when `baseline.teacher_too` and the baseline's encoder is not the
  teacher."""
  out = [("baseline", "baseline")]
  section, teacher = encoder_section(config), config.teacher
  if config.baseline.teacher_too and (section.name, section.weights) != (teacher.name,
                                                                          teacher.weights):
    out.append(("baseline_teacher", "teacher"))
  return tuple(out)


def train_baseline(config, workdir: str, *, mesh, train_source, num_classes: int,
                   val_source=None, encoder: str = "baseline") -> tuple:
  """Fine-tunes the pretrained encoder + a new head; `(model, variables, chosen)`.

  Args:
    config: the run's ConfigDict (fields `baseline.*`, `train.*`, `data.*`, `eval.*`, `seed`).
    workdir: this label fraction's directory; one subdirectory per learning rate tried.
    mesh: the device mesh.
    train_source: the labelled training images (`rrjax.data.Source` with labels).
    num_classes: C.
    val_source: the validation split, needed under `baseline.select`.
    encoder: which pretrained encoder is fine-tuned (`encoder_section`).

  Returns:
    The `head="logits"` model, its chosen variables (host arrays), and what was chosen:
    `{"lr", "steps", "best_step"?, "val_top1"?}` (the last two under `baseline.select`).

  Resumes from the checkpoints under `workdir` (`loop.train`).
  """
  bc = config.baseline
  select = bool(bc.select)
  if select and val_source is None:
    raise ValueError("baseline.select needs the validation split (val_source)")
  best, scores = None, {}
  for lr in learning_rates(config):
    rundir = workdir if not select else os.path.join(workdir, f"lr_{lr:g}")
    model, variables, chosen = _train_one(config, rundir, lr, mesh=mesh,
                                          train_source=train_source, num_classes=num_classes,
                                          val_source=val_source if select else None,
                                          encoder=encoder)
    if select:
      scores[f"{lr:g}"] = chosen["val_top1"]
    if best is None or chosen.get("val_score", 0.0) > best[2].get("val_score", 0.0):
      best = (model, variables, chosen)
  best[2].pop("val_score", None)
  if len(scores) > 1:
    best[2]["val_top1_by_lr"] = scores
    logging.info("baseline: chose %s on validation", best[2])
  return best


def _train_one(config, workdir: str, lr: float, *, mesh, train_source, num_classes: int,
               val_source, encoder: str) -> tuple:
  """One fine-tuning at learning rate `lr`, the best step on `val_source` when given."""
  bc = config.baseline
  dtype = models.compute_dtype(config.train.compute_dtype, "config.train.compute_dtype")
  sharding.check_batch_size(bc.batch_size, mesh, "baseline.batch_size")
  model, variables = models.load_from_config(encoder_section(config, encoder), head="logits",
                                             num_classes=num_classes)
  total = steps_for(config, len(train_source))
  # A constant schedule does not depend on the length of training: label fractions then share
  # one compiled step.
  optim = (lr, bc.schedule, total if bc.schedule != "constant" else 0, float(bc.weight_decay))
  schedule, tx = _optimizer(*optim)
  step_fn = _jitted_step(model, corruptions.build(config.train.corruption), optim, dtype.name,
                         mesh)
  key = jax.random.fold_in(jax.random.key(config.seed), 2)

  def batches_from(start):
    return data.batches(train_source, bc.batch_size, train=True, seed=config.seed,
                        start_step=start, num_steps=max(total - start, 0),
                        augment=config.data.augment, crop_scale=tuple(config.data.crop_scale),
                        drop_remainder=len(train_source) >= bc.batch_size,
                        num_workers=config.data.num_workers)

  validation = None
  if val_source is not None:
    every = max(steps_per_epoch(config, len(train_source)),
                -(-total // bc.val_points))
    validation = loop.Validation(every, _val_score(config, model, val_source, mesh))
  name = f"baseline[{config.train.corruption}] lr={lr:g} n={len(train_source)}"
  trained = loop.train(TrainState.create(variables, tx), lambda st, b: step_fn(st, b, key),
                       batches_from, workdir=workdir, name=name, total_steps=total,
                       batch_size=bc.batch_size, mesh=mesh, lr_at=lambda s: float(schedule(s)),
                       log_every=bc.log_every, checkpoint_every=bc.checkpoint_every,
                       fields=("image", "label"), validation=validation)
  chosen = {"lr": lr, "steps": total}
  if validation is not None:
    chosen.update(best_step=validation.best_step, val_top1=round(validation.best_score, 2),
                  val_score=validation.best_score)
  return model, trained, chosen


def _val_score(config, model, val_source, mesh):
  """`variables -> top-1` of the model's classifier on the corrupted validation split, under
  the draw the probes' validation features use (`rrjax.run.probe_rows`)."""
  from rrjax.evaluation import scoring  # pylint: disable=g-import-not-at-top
  from rrjax.evaluation.features import extract_features  # pylint: disable=g-import-not-at-top
  op = corruptions.build(config.train.corruption)
  labels = val_source.labels()

  def score(variables) -> float:
    logits = extract_features(model, variables, val_source, corruption=op,
                              key=jax.random.key(config.seed + 1),
                              batch_size=config.eval.batch_size, mesh=mesh,
                              num_workers=config.data.num_workers)
    return scoring.top1(logits, labels)

  return score


def checkpoint_dir(config, workdir: str, lr: float) -> str:
  """Where `train_baseline(config, workdir)` keeps the variables it returned for learning rate
  `lr`: the best state on validation under `baseline.select`, else the last checkpoint."""
  if config.baseline.select:
    return os.path.join(workdir, f"lr_{lr:g}", "best")
  return os.path.join(workdir, "checkpoints")


def backbone(model):
  """The encoder of a `head="logits"` model: the same module and variables, `head="embed"`."""
  if getattr(model, "head", None) != "logits":
    raise TypeError(f"{type(model).__name__} has no `head` attribute set to 'logits'")
  return model.clone(head="embed")


def _optimizer(lr, schedule, total, weight_decay):
  schedule = make_schedule(lr, schedule, total, 0)
  return schedule, make_optimizer("adam", schedule, weight_decay)


@functools.lru_cache(maxsize=4)
def _jitted_step(model, corruption, optim: tuple, compute_dtype: str, mesh):
  """One compiled step per (model, operator, optimiser, dtype, mesh), shared by label fractions."""
  return sharding.jit_data_parallel(
      make_step(model, corruption, _optimizer(*optim)[1], compute_dtype), mesh, num_args=3,
      batch_argnums=(1,))
