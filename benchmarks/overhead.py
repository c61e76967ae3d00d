"""Times the full student training step against its bare forward/backward part.

    python benchmarks/overhead.py [--model efficientnet_lite0 --resolution 64 --size 28
                                   --batch 64 --steps 10 --warmup 2]

Full: `rrjax.training.student.make_train_step` + `jit_train_step` (corruption, teacher forward,
student forward/backward, Adam update). Bare: the same jit over the same mesh of value_and_grad of
the same loss on already-corrupted images plus the teacher forward, no corruption and no optimiser
update. Both read the same device-resident batch. Median of --steps steps after --warmup, the two
steps alternating so that a change in the machine's load hits both. Ends with `result:
pipeline_overhead_ratio <r> (goal 1.05)`, full over bare step time.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from rrjax import corruptions, losses, models
from rrjax.parallel import sharding
from rrjax.training import student as student_lib
from rrjax.training.state import TrainState, apply_train, make_optimizer, make_schedule

import timing  # benchmarks/timing.py


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="efficientnet_lite0")
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--size", type=int, default=28, help="input image size")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--corruption", default="mask(0.9)")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  args = parser.parse_args()

  mesh = sharding.make_mesh()
  teacher, teacher_vars = models.load(args.model, pretrained=False, resolution=args.resolution,
                                      seed=1)
  student, student_vars = models.load(args.model, pretrained=False, resolution=args.resolution,
                                      seed=2)
  tx = make_optimizer("adam", make_schedule(3e-4, "constant", 1))
  corruption = corruptions.build(args.corruption)
  key = jax.random.key(0)
  host = np.random.default_rng(0).uniform(size=(args.batch, args.size, args.size, 3))
  batch = sharding.global_batch({"image": host.astype(np.float32)}, mesh)
  corrupted = sharding.global_batch(
      {"image": np.asarray(corruption(key, jnp.asarray(host, jnp.float32)))}, mesh)
  teacher_vars = sharding.replicate(teacher_vars, mesh)
  loss_fn = losses.get("st")

  full = student_lib.jit_train_step(
      student_lib.make_train_step(student, teacher, corruption, "st", 0.1, tx), mesh)

  def bare_step(state, teacher_vars, batch, key):
    del key
    t = jax.lax.stop_gradient(losses.normalize(
        teacher.apply(teacher_vars, batch["image"], train=False).astype(jnp.float32)))

    def objective(params):
      s, new_stats = apply_train(student, params, state.batch_stats, batch["image"])
      return loss_fn(losses.normalize(s.astype(jnp.float32)), t, 0.1), new_stats

    (value, new_stats), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    return state.replace(batch_stats=new_stats), {"loss": value, "grads": grads}

  bare = student_lib.jit_train_step(bare_step, mesh)

  def runner(fn, images):
    # A host copy: the step donates the state, which must not delete `student_vars`.
    fresh = TrainState.create(jax.tree.map(np.array, student_vars), tx)
    holder = [sharding.replicate(fresh, mesh)]

    def run():
      holder[0], metrics = fn(holder[0], teacher_vars, images, key)
      jax.block_until_ready(metrics)
    return run

  print(f"backend {jax.default_backend()}, {args.model} at {args.resolution} px, inputs "
        f"{args.size} px, batch {args.batch}, {args.corruption}, median of {args.steps} "
        f"interleaved after {args.warmup} warm-up")
  full_ms, bare_ms = (1e3 * t for t in timing.interleaved_medians(
      [runner(full, batch), runner(bare, corrupted)], args.warmup, args.steps))
  print(f"{'step':<44} {'ms':>8}")
  print(f"{'full (corruption+teacher+fwd/bwd+adam)':<44} {full_ms:>8.1f}")
  print(f"{'bare (teacher+fwd/bwd on corrupted images)':<44} {bare_ms:>8.1f}")
  print(f"result: pipeline_overhead_ratio {full_ms / bare_ms:.3f} (goal 1.05)")


if __name__ == "__main__":
  main()
