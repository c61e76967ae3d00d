"""Stage: the supervised baseline, fine-tuned end to end on corrupted images.

The paper's baseline is an ImageNet-pretrained network whose final layer is replaced by a C-way
head, fine-tuned end to end on corrupted images with their labels (Adam, lr 1e-3). Here the
encoder is the teacher's architecture and weights (`head="logits"` with `num_classes=C`: the
classifier is new), trained on the labelled subset of a label fraction. Its steps compute in
`train.compute_dtype`, as the student's (`rrjax.training.student`): bfloat16 compute with float32
parameters, optimiser state, logits and loss; it is evaluated in float32, as the student.

    model, variables = train_baseline(config, f"{rundir}/baseline_0.1", mesh=mesh,
                                      train_source=labelled, num_classes=10)
    encoder = backbone(model)   # the fine-tuned encoder without its head, for transfer probes
"""

import functools

import jax
import optax

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


def steps_for(config, num_labelled: int) -> int:
  """Training steps for `num_labelled` examples: `epochs` passes, capped by `max_steps`."""
  bc = config.baseline
  per_epoch = max(num_labelled // bc.batch_size, 1)
  return int(min(bc.epochs * per_epoch, bc.max_steps))


def train_baseline(config, workdir: str, *, mesh, train_source, num_classes: int):
  """Fine-tunes the pretrained encoder + a new head; returns `(model, variables)`.

  Resumes from `<workdir>/checkpoints` when a checkpoint is there (`loop.train`).
  """
  bc = config.baseline
  dtype = models.compute_dtype(config.train.compute_dtype, "config.train.compute_dtype")
  sharding.check_batch_size(bc.batch_size, mesh, "baseline.batch_size")
  model, variables = models.load_from_config(config.teacher, head="logits",
                                             num_classes=num_classes)
  total = steps_for(config, len(train_source))
  # A constant schedule does not depend on the length of training: label fractions then share
  # one compiled step.
  optim = (float(bc.lr), bc.schedule, total if bc.schedule != "constant" else 0,
           float(bc.weight_decay))
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

  trained = loop.train(TrainState.create(variables, tx), lambda st, b: step_fn(st, b, key),
                       batches_from, workdir=workdir,
                       name=f"baseline[{config.train.corruption}]", total_steps=total,
                       batch_size=bc.batch_size, mesh=mesh, lr_at=lambda s: float(schedule(s)),
                       log_every=bc.log_every, checkpoint_every=0, fields=("image", "label"))
  return model, trained


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
