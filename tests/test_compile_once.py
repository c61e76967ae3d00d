"""The jitted student step and feature extraction compile once, not once per call.

Compilations are counted with a `jax.monitoring` listener on the backend-compile event, which
jax records around every XLA compilation (and persistent-cache fetch) with the jitted
function's name.
"""

import collections
import contextlib

import jax
import numpy as np
from jax._src import dispatch

from rrjax import corruptions, models, probe, sharding, step as step_lib
from rrjax.train_state import TrainState, make_optimizer, make_schedule


@contextlib.contextmanager
def count_compiles():
  """Yields a Counter of backend compilations by function name, filled while in the block."""
  counts = collections.Counter()

  def listener(event, duration, **kwargs):
    del duration
    if event == dispatch.BACKEND_COMPILE_EVENT:
      counts[kwargs.get("fun_name", "?")] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def test_train_step_compiles_once(key):
  teacher, teacher_vars = models.load("tiny_cnn", pretrained=False, seed=1)
  student, student_vars = models.load("tiny_cnn", pretrained=False, seed=2)
  tx = make_optimizer("adam", make_schedule(1e-3, "constant", 4))
  mesh = sharding.make_mesh()
  step = step_lib.jit_train_step(step_lib.make_train_step(
      student, teacher, corruptions.build("mask(0.5)|noise(0.1)"), "st", 0.1, tx), mesh)
  state = sharding.replicate(TrainState.create(jax.tree.map(np.array, student_vars), tx), mesh)
  teacher_vars = sharding.replicate(teacher_vars, mesh)
  rng = np.random.default_rng(0)

  per_step = []
  for _ in range(4):
    # A fresh host batch each step, as the data loader gives.
    images = rng.uniform(size=(8, 16, 16, 3)).astype(np.float32)
    batch = sharding.global_batch({"image": images}, mesh)
    with count_compiles() as counts:
      state, metrics = step(state, teacher_vars, batch, key)
      jax.block_until_ready(metrics)
    per_step.append(counts["jit(step)"])
  assert per_step == [1, 0, 0, 0], f"compilations of the step per call: {per_step}"


def test_extract_features_compiles_once(key):
  module, variables = models.load("tiny_cnn", pretrained=False, seed=3)
  # 20 images in batches of 8: the last batch is padded, so one shape in all.
  images = np.random.default_rng(1).uniform(size=(20, 13, 13, 3)).astype(np.float32)
  corruption = corruptions.build("noise(0.2)")
  per_call = []
  for draw in range(2):
    with count_compiles() as counts:
      features = probe.extract_features(module, variables, images, corruption=corruption,
                                        key=jax.random.fold_in(key, draw), batch_size=8)
    per_call.append(counts["jit(_encode)"])
    assert features.shape[0] == 20
  assert per_call == [1, 0], f"compilations of the encoder per call: {per_call}"
