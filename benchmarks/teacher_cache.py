"""Times an epoch of student training with cached teacher embeddings vs the teacher in the step.

    python benchmarks/teacher_cache.py [--n 6000 --batch 64 --resolution 64 --size 28
                                        --steps 5 --cache-batch 32]

Both steps are `rrjax.training.student.make_train_step` at the demo's settings (EfficientNet-Lite0,
inputs 28 px upsampled to 64, batch 64, mask(0.9)): one runs the teacher forward, the other
(`teacher_in_batch=True`) reads `batch["teacher"]`. An epoch is ceil(n / batch) steps times the
median step time over --steps steps after one compiling step, the two steps alternating. The one-off
cost of building the cache (teacher forward over n images in batches of --cache-batch, the demo's
eval batch) is printed apart. Ends with `result: teacher_cache_speedup <x>x`, epoch time without the
cache over epoch time with it (the cache build not included).
"""

import argparse
import math

import jax
import numpy as np

from rrjax import corruptions, models
from rrjax.parallel import sharding
from rrjax.training import student as student_lib
from rrjax.training.state import TrainState, make_optimizer, make_schedule

import timing  # benchmarks/timing.py


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=6000, help="training images")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--size", type=int, default=28)
  parser.add_argument("--corruption", default="mask(0.9)")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--cache-batch", type=int, default=32)
  args = parser.parse_args()

  mesh = sharding.make_mesh()
  teacher, teacher_vars = models.load("efficientnet_lite0", pretrained=False,
                                      resolution=args.resolution, seed=1)
  student, student_vars = models.load("efficientnet_lite0", pretrained=False,
                                      resolution=args.resolution, seed=2)
  teacher_vars = sharding.replicate(teacher_vars, mesh)
  tx = make_optimizer("adam", make_schedule(3e-4, "constant", 1))
  corruption = corruptions.build(args.corruption)
  key = jax.random.key(0)
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
  embed_dim = models.info("efficientnet_lite0").embed_dim
  cached = rng.normal(size=(args.batch, embed_dim)).astype(np.float32)

  def runner(in_batch: bool):
    step = student_lib.jit_train_step(student_lib.make_train_step(
        student, teacher, corruption, "st", 0.1, tx, teacher_in_batch=in_batch), mesh)
    fields = {"image": images, "teacher": cached} if in_batch else {"image": images}
    batch = sharding.global_batch(fields, mesh)
    holder = [sharding.replicate(TrainState.create(jax.tree.map(np.array, student_vars), tx),
                                 mesh)]

    def run():
      holder[0], metrics = step(holder[0], None if in_batch else teacher_vars, batch, key)
      jax.block_until_ready(metrics)
    return run

  forward = jax.jit(lambda v, x: teacher.apply(v, x, train=False))
  cache_images = sharding.global_batch({"image": images[:args.cache_batch]}, mesh)["image"]
  forward_s, = timing.interleaved_medians(
      [lambda: jax.block_until_ready(forward(teacher_vars, cache_images))], 1, args.steps)
  with_teacher, with_cache = timing.interleaved_medians([runner(False), runner(True)], 1,
                                                        args.steps)
  steps_per_epoch = math.ceil(args.n / args.batch)
  build_s = math.ceil(args.n / args.cache_batch) * forward_s

  print(f"backend {jax.default_backend()}, EfficientNet-Lite0 at {args.resolution} px, inputs "
        f"{args.size} px, batch {args.batch}, {args.corruption}, {args.n} images "
        f"({steps_per_epoch} steps/epoch), median of {args.steps} interleaved steps")
  print(f"{'mode':<37} {'step ms':>8} {'epoch s':>8}")
  print(f"{'teacher in the step':<37} {1e3 * with_teacher:>8.1f} "
        f"{steps_per_epoch * with_teacher:>8.1f}")
  print(f"{'cached embeddings (teacher_in_batch)':<37} {1e3 * with_cache:>8.1f} "
        f"{steps_per_epoch * with_cache:>8.1f}")
  print(f"{'one-off cache build':<37} {'':>8} {build_s:>8.1f}")
  print(f"result: teacher_cache_speedup {with_teacher / with_cache:.2f}x")


if __name__ == "__main__":
  main()
