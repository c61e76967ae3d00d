"""The student's jitted training step: S(A(x)) learns to recover the frozen teacher's R(x).

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
import optax
from jax.sharding import Mesh

from rrjax import losses, models, sharding
from rrjax.train_state import TrainState, apply_train, update


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

  `batch["image"]` is float32 `[B, H, W, C]` in [0, 1]; `key` is the run's training key.
  """
  loss_fn = losses.get(loss)
  student = models.with_dtype(student, compute_dtype)
  if not teacher_in_batch:
    teacher = models.with_dtype(teacher, compute_dtype)

  def step(state: TrainState, teacher_vars, batch: dict, key: jax.Array):
    images = batch["image"]
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
