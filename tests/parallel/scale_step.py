"""One process of a student training run over 1 or N CPU processes (run by
tests/parallel/test_multiprocess.py).

    python -m tests.parallel.scale_step --folder=F --out=D                      # one process
    python -m tests.parallel.scale_step --folder=F --out=D --num_processes=2 --process_id=I --port=P

Trains the tiny student for `STEPS` steps on `rrjax.data.batches` of the image folder F (each
process reads its own slice of the seeded global batch), with `rrjax.training.student`'s jitted step
on a mesh over every device of every process; then checkpoints the state with
`rrjax.training.checkpoint` (collectively) and restores it. Writes `D/process<I>_of<N>.npz`: the
local and the gathered global batches, the losses, the final parameters and BatchNorm statistics and
their restored copies (leaves in tree order).
"""

import argparse
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from rrjax import corruptions, data, models
from rrjax.parallel import multiprocess
from rrjax.parallel import sharding
from rrjax.training import student as student_lib
from rrjax.training.checkpoint import Checkpointer
from rrjax.training.state import TrainState, make_optimizer, make_schedule

STEPS = 3
BATCH = 16


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--folder", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--port", type=int, default=0)
  args = parser.parse_args()
  # Before anything touches a JAX backend, as in `rrjax.main`.
  multiprocess.maybe_initialize(f"127.0.0.1:{args.port}" if args.num_processes > 1 else None,
                               args.num_processes, args.process_id)
  assert jax.process_count() == args.num_processes, jax.process_count()
  mesh = sharding.make_mesh(-1)
  teacher, teacher_vars = models.load("tiny_cnn", pretrained=False, seed=1)
  student, student_vars = models.load("tiny_cnn", pretrained=False, seed=2)
  # SGD: the update is linear in the gradient, so parameters compare as tightly as gradients
  # (Adam's first step is lr * sign(g), which flips on gradients that are zero up to rounding).
  tx = make_optimizer("sgd", make_schedule(0.1, "constant", STEPS))
  fn = student_lib.jit_train_step(student_lib.make_train_step(
      student, teacher, corruptions.build("mask(0.5)"), "st", 0.1, tx), mesh)

  def initial_state():
    return TrainState.create(jax.tree.map(np.array, student_vars), tx)

  state = sharding.replicate(initial_state(), mesh)
  teacher_arg = sharding.replicate(teacher_vars, mesh)
  key = jax.random.key(3)
  source = data.load(f"imagefolder:{args.folder}", "train[:120]")
  local, global_, losses = [], [], []
  for batch in data.batches(source, BATCH, train=True, seed=0, num_steps=STEPS):
    local.append(batch["image"])
    global_.append(np.asarray(multihost_utils.process_allgather(batch["image"], tiled=True)))
    state, metrics = fn(state, teacher_arg, sharding.global_batch({"image": batch["image"]},
                                                                  mesh), key)
    losses.append(float(jax.device_get(metrics["loss"])))

  checkpointer = Checkpointer(os.path.join(args.out, f"checkpoints_{args.num_processes}"))
  checkpointer.save(state)
  restored = checkpointer.restore_latest(initial_state())
  checkpointer.close()

  def leaves(tree):
    return [np.asarray(jax.device_get(x)) for x in jax.tree.leaves(tree)]

  final = leaves((state.params, state.batch_stats))
  back = leaves((restored.params, restored.batch_stats))
  np.savez(os.path.join(args.out, f"process{args.process_id}_of{args.num_processes}.npz"),
           local=np.stack(local), global_batches=np.stack(global_), losses=np.asarray(losses),
           devices=np.asarray(len(mesh.devices.flat)), restored_step=np.asarray(restored.step),
           **{f"final_{i}": x for i, x in enumerate(final)},
           **{f"restored_{i}": x for i, x in enumerate(back)})


if __name__ == "__main__":
  main()
