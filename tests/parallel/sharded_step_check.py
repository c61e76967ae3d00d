"""Run with 8 fake CPU devices (set by test_sharding.py): one student step on 8 devices vs 1.

Prints a JSON report: the losses and the largest parameter difference, and the loss of the
same batch computed shard by shard (what a per-device loss without global negatives gives).
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rrjax import corruptions, losses, models
from rrjax.parallel import sharding
from rrjax.training import student as student_lib
from rrjax.training.state import TrainState, make_optimizer, make_schedule


def main():
  assert jax.device_count() == 8, jax.devices()
  teacher, teacher_vars = models.load("tiny_cnn", pretrained=False, seed=1)
  student, student_vars = models.load("tiny_cnn", pretrained=False, seed=2)
  # SGD: the update is linear in the gradient, so parameters compare as tightly as gradients
  # (Adam's first step is lr * sign(g), which flips on gradients that are zero up to rounding).
  tx = make_optimizer("sgd", make_schedule(0.1, "constant", 10))
  fn = student_lib.make_train_step(student, teacher, corruptions.build("mask(0.5)"), "st", 0.1, tx)
  images = np.random.default_rng(0).uniform(size=(32, 16, 16, 3)).astype(np.float32)
  key = jax.random.key(3)
  out = {}
  try:
    sharding.check_batch_size(30, sharding.make_mesh(8), "train.batch_size")
    divisibility_error = ""
  except ValueError as e:
    divisibility_error = str(e)
  for n in (8, 1):
    mesh = sharding.make_mesh(n)
    state = sharding.replicate(TrainState.create(jax.tree.map(np.array, student_vars), tx), mesh)
    batch = sharding.global_batch({"image": images}, mesh)
    assert len(batch["image"].sharding.device_set) == n
    new_state, metrics = student_lib.jit_train_step(fn, mesh)(
        state, sharding.replicate(teacher_vars, mesh), batch, key)
    out[n] = (float(metrics["loss"]), jax.device_get(new_state.params),
              jax.device_get(new_state.batch_stats))
  diff = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves((out[8][1], out[8][2])), jax.tree.leaves((out[1][1], out[1][2]))))
  # The same batch's loss with negatives restricted to each 4-image shard.
  corrupted = corruptions.build("mask(0.5)")(jax.random.fold_in(key, 0), jnp.asarray(images))
  s = losses.normalize(student.apply(student_vars, corrupted, train=True,
                                     mutable=["batch_stats"])[0])
  t = losses.normalize(teacher.apply(teacher_vars, jnp.asarray(images)))
  st = losses.get("st")
  per_shard = float(np.mean([st(s[i:i + 4], t[i:i + 4], 0.1) for i in range(0, 32, 4)]))
  json.dump({"loss8": out[8][0], "loss1": out[1][0], "global": float(st(s, t, 0.1)),
             "per_shard": per_shard, "max_param_diff": diff,
             "divisibility_error": divisibility_error}, sys.stdout)


if __name__ == "__main__":
  main()
