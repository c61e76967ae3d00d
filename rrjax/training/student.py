"""The robust student: its jitted step and its training, S(A(x)) recovering the teacher's R(x).

    student, student_vars = student_model(config, teacher, teacher_vars)
    variables = train_student(config, rundir, mesh=mesh, teacher=teacher,
                              teacher_vars=teacher_vars, student=student,
                              student_vars=student_vars, train_source=source)

One step, for a global batch x of clean training views:
  1. y = A(x) with fresh per-image randomness (key folded with the step),
  2. t = R(x), the frozen teacher in inference mode (or embeddings read from the batch when they
     were precomputed), never differentiated,
  3. s = S(y), the student in training mode (BatchNorm batch statistics),
  4. loss(normalize(s), normalize(t)) over the whole global batch (paper eq. 2 by default),
  5. one optimiser update of the student.

Mixed precision (`compute_dtype="bfloat16"`): the teacher and student forwards (and the
student's backward) compute in bfloat16 as `rrjax.models` describes; parameters, gradients,
optimiser state, BatchNorm statistics, the embeddings s and t, their normalisation and the loss
stay float32.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from rrjax import corruptions, data, losses, models
from rrjax.parallel import sharding
from rrjax.training import loop, teacher_cache
from rrjax.training.state import TrainState, apply_train, make_optimizer, make_schedule, update


def make_train_step(student, teacher, corruption: Callable, loss: str, temperature: float,
                    tx: optax.GradientTransformation, teacher_in_batch: bool = False,
                    compute_dtype="float32"):
  """Returns `step(state, teacher_vars, batch, key) -> (state, metrics)` (not jitted).

  Args:
    student, teacher: Flax encoder modules (`apply(variables, images, train) -> [B, D]`).
    corruption: the forward operator `A(key, images) -> images`.
    loss: a name for `rrjax.losses.get`.
    temperature: tau of the contrastive losses.
    tx: the optimiser.
    teacher_in_batch: read precomputed teacher embeddings from `batch["teacher"]` `[B, D]`
      instead of running the teacher.
    compute_dtype: "float32" or "bfloat16" (`rrjax.models.COMPUTE_DTYPES`), the dtype the
      teacher and student compute in; the variables are float32 either way.

  `batch["image"]` is uint8 `[B, H, W, C]` (or float32 in [0, 1]), made float on device
  (`rrjax.data.to_float`); `key` is the run's training key.
  """
  loss_fn = losses.get(loss)
  student = models.with_dtype(student, compute_dtype)
  if not teacher_in_batch:
    teacher = models.with_dtype(teacher, compute_dtype)

  def step(state: TrainState, teacher_vars, batch: dict, key: jax.Array):
    images = data.to_float(batch["image"])
    corrupted = corruption(jax.random.fold_in(key, state.step), images)
    if teacher_in_batch:
      t = batch["teacher"]
    else:
      t = teacher.apply(teacher_vars, images, train=False)
    t = jax.lax.stop_gradient(losses.normalize(t.astype(jnp.float32)))

    def objective(params):
      s, new_stats = apply_train(student, params, state.batch_stats, corrupted)
      return loss_fn(losses.normalize(s.astype(jnp.float32)), t, temperature), new_stats

    (value, new_stats), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    new_state = update(state, tx, grads, new_stats)
    metrics = {"loss": value, "grad_norm": optax.global_norm(grads)}
    return new_state, metrics

  return step


def jit_train_step(step_fn, mesh: Mesh):
  """Jits a student step over `mesh`: the batch split on the data axis, the rest replicated.

  The state is donated, so its buffers are reused for the next state.
  """
  return sharding.jit_data_parallel(step_fn, mesh, num_args=4, batch_argnums=(2,))


def student_model(config, teacher, teacher_vars):
  """The student and its initial variables: the teacher's architecture and weights (paper), or
  the encoder `config.student.name`, randomly initialised."""
  if not config.student.name or config.student.name == config.teacher.name:
    return teacher, jax.tree.map(np.array, teacher_vars)
  name, kwargs = architecture(config)
  return models.load(name, pretrained=False, head="embed", seed=config.seed, **kwargs)


def architecture(config) -> tuple[str, dict]:
  """`(name, kwargs)` such that `rrjax.models.load(name, pretrained=False, head="embed",
  **kwargs)` builds the student's module (its variables' structure; the weights are the
  trained ones): what an exported encoder needs to be rebuilt."""
  if config.student.name and config.student.name != config.teacher.name:
    name = config.student.name  # Randomly initialised: its name is its architecture.
  elif models.is_hub_name(config.teacher.name):
    from rrjax.models import hub  # pylint: disable=import-outside-toplevel
    name = hub.standalone_name(config.teacher.name, config.teacher.weights)
  else:
    name = config.teacher.name
  return name, ({"resolution": config.teacher.resolution} if config.teacher.resolution else {})


def train_student(config, workdir: str, *, mesh, teacher, teacher_vars, student,
                  student_vars, train_source) -> dict:
  """Trains the student on `train_source` and returns its final variables (host arrays).

  Resumes from `<workdir>/checkpoints` when a checkpoint is there (`loop.train`). The step
  computes in `train.compute_dtype` (float32 or bfloat16; parameters, optimiser state and the
  loss are float32 either way); the teacher cache, like every evaluation, is computed in
  float32.

  Args:
    config: the run's ConfigDict (fields `train.*`, `data.*`, `seed`).
    workdir: this run's directory.
    mesh: the device mesh; the global batch is split over its data axis.
    teacher, teacher_vars: the frozen teacher (inference mode, never differentiated).
    student, student_vars: the student module and its initial variables.
    train_source: the `rrjax.data.Source` of clean training images.
  """
  tc = config.train
  models.compute_dtype(tc.compute_dtype, "config.train.compute_dtype")
  sharding.check_batch_size(tc.batch_size, mesh, "train.batch_size")
  schedule = make_schedule(tc.lr, tc.schedule, tc.steps, tc.warmup_steps)
  tx = make_optimizer(tc.optimizer, schedule, tc.weight_decay)
  cached = tc.teacher == "cache"
  step_fn = jit_train_step(
      make_train_step(student, teacher, corruptions.build(tc.corruption), tc.loss,
                      tc.temperature, tx, teacher_in_batch=cached,
                      compute_dtype=tc.compute_dtype), mesh)
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  teacher_arg = None if cached else sharding.replicate(teacher_vars, mesh)
  embeddings = (teacher_cache.embeddings(config, teacher, teacher_vars, train_source, mesh)
                if cached else None)

  def batches_from(start):
    batches = data.batches(train_source, tc.batch_size, train=True, seed=config.seed,
                           start_step=start, num_steps=max(tc.steps - start, 0),
                           augment=config.data.augment and not cached,
                           crop_scale=tuple(config.data.crop_scale),
                           num_workers=config.data.num_workers)
    if not cached:
      return batches
    return (dict(b, teacher=embeddings[b["index"]]) for b in batches)

  return loop.train(TrainState.create(student_vars, tx),
                    lambda st, b: step_fn(st, teacher_arg, b, key), batches_from,
                    workdir=workdir, name=f"student[{tc.corruption}]", total_steps=tc.steps,
                    batch_size=tc.batch_size, mesh=mesh, lr_at=lambda s: float(schedule(s)),
                    log_every=tc.log_every, checkpoint_every=tc.checkpoint_every,
                    fields=("image", "teacher") if cached else ("image",))
