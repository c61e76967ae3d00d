"""Stage: train the robust student S so that S(A(x)) recovers the teacher's R(x)."""

import os

import jax

from rrjax import corruptions, data, loop, models, sharding, step as step_lib, teacher_cache
from rrjax.checkpoint import Checkpointer
from rrjax.report import MetricsLog
from rrjax.train_state import TrainState, make_optimizer, make_schedule


def train_student(config, workdir: str, *, mesh, teacher, teacher_vars, student,
                  student_vars, train_source, metrics_path: str) -> dict:
  """Trains the student on `train_source` and returns its final variables (host arrays).

  Resumes from `<workdir>/checkpoints` when a checkpoint is there. The step computes in
  `train.compute_dtype` (float32 or bfloat16; parameters, optimiser state and the loss are
  float32 either way); the teacher cache, like every evaluation, is computed in float32.

  Args:
    config: the run's ConfigDict (fields `train.*`, `data.*`, `seed`).
    workdir: this run's directory.
    mesh: the device mesh; the global batch is split over its data axis.
    teacher, teacher_vars: the frozen teacher (inference mode, never differentiated).
    student, student_vars: the student module and its initial variables.
    train_source: the `rrjax.data.Source` of clean training images.
    metrics_path: the metrics.jsonl file.
  """
  tc = config.train
  models.compute_dtype(tc.compute_dtype, "config.train.compute_dtype")
  sharding.check_batch_size(tc.batch_size, mesh, "train.batch_size")
  schedule = make_schedule(tc.lr, tc.schedule, tc.steps, tc.warmup_steps)
  tx = make_optimizer(tc.optimizer, schedule, tc.weight_decay)
  state = TrainState.create(student_vars, tx)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  state = sharding.replicate(checkpointer.restore_or(state, "student"), mesh)
  start = int(jax.device_get(state.step))

  cached = tc.teacher == "cache"
  step_fn = step_lib.jit_train_step(
      step_lib.make_train_step(student, teacher, corruptions.build(tc.corruption), tc.loss,
                               tc.temperature, tx, teacher_in_batch=cached,
                               compute_dtype=tc.compute_dtype), mesh)
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  teacher_arg = None if cached else sharding.replicate(teacher_vars, mesh)
  batches = data.batches(train_source, tc.batch_size, train=True, seed=config.seed,
                         start_step=start, num_steps=max(tc.steps - start, 0),
                         augment=config.data.augment and not cached,
                         crop_scale=tuple(config.data.crop_scale))
  fields = ("image",)
  if cached:
    embeddings = teacher_cache.embeddings(config, teacher, teacher_vars, train_source, mesh)
    batches = (dict(b, teacher=embeddings[b["index"]]) for b in batches)
    fields = ("image", "teacher")

  state = loop.fit(state, lambda st, b: step_fn(st, teacher_arg, b, key), batches,
                   name=f"student[{tc.corruption}]", total_steps=tc.steps,
                   batch_size=tc.batch_size, mesh=mesh, checkpointer=checkpointer,
                   metrics=MetricsLog(metrics_path, resume_step=start),
                   lr_at=lambda s: float(schedule(s)), log_every=tc.log_every,
                   checkpoint_every=tc.checkpoint_every, fields=fields)
  checkpointer.close()
  return jax.device_get(state.variables())
