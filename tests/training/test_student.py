"""rrjax.training.student: the student's jitted step compiles once; the student's encoder."""

import jax
import numpy as np

from rrjax import corruptions, models
from rrjax.parallel import sharding
from tests import helpers
from rrjax.training import student as student_lib
from rrjax.training.state import TrainState, make_optimizer, make_schedule


def test_train_step_compiles_once(key):
  teacher, teacher_vars = models.load("tiny_cnn", pretrained=False, seed=1)
  student, student_vars = models.load("tiny_cnn", pretrained=False, seed=2)
  tx = make_optimizer("adam", make_schedule(1e-3, "constant", 4))
  mesh = sharding.make_mesh()
  step = student_lib.jit_train_step(student_lib.make_train_step(
      student, teacher, corruptions.build("mask(0.5)|noise(0.1)"), "st", 0.1, tx), mesh)
  state = sharding.replicate(TrainState.create(jax.tree.map(np.array, student_vars), tx), mesh)
  teacher_vars = sharding.replicate(teacher_vars, mesh)
  rng = np.random.default_rng(0)

  per_step = []
  for _ in range(4):
    # A fresh host batch each step, as the data loader gives.
    images = rng.uniform(size=(8, 16, 16, 3)).astype(np.float32)
    batch = sharding.global_batch({"image": images}, mesh)
    with helpers.count_compiles() as counts:
      state, metrics = step(state, teacher_vars, batch, key)
      jax.block_until_ready(metrics)
    per_step.append(counts["jit(step)"])
  assert per_step == [1, 0, 0, 0], f"compilations of the step per call: {per_step}"
