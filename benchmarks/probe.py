"""Times the optax linear probe against one epoch of student training at the demo's settings.

    python benchmarks/probe.py [--n 6000 --dim 1280 --classes 10 --epochs 10 --batch 64
                                --resolution 64 --size 28 --steps 5]

Probe: `rrjax.evaluation.probe.fit` on random cached features `[n, dim]` (10 epochs, batch 256),
timed on a second call (the first compiles; both are printed). Student epoch: ceil(n / batch) steps
of `rrjax.training.student.make_train_step` (EfficientNet-Lite0, mask(0.9)) times the median step
time over --steps steps after one warm-up step. Ends with `result: probe_vs_epoch_percent <p>% (goal
5%)`, warm probe time over the epoch time.
"""

import argparse
import math
import statistics
import time

import jax
import numpy as np

from rrjax import corruptions, models
from rrjax.evaluation import probe
from rrjax.parallel import sharding
from rrjax.training import student as student_lib
from rrjax.training.state import TrainState, make_optimizer, make_schedule


def _probe_seconds(features, labels, classes: int, epochs: int) -> float:
  start = time.perf_counter()
  fitted = probe.fit(features, labels, classes, epochs=epochs)
  jax.block_until_ready(fitted)
  return time.perf_counter() - start


def _step_seconds(args) -> float:
  """Median seconds of one demo student step."""
  mesh = sharding.make_mesh()
  teacher, teacher_vars = models.load("efficientnet_lite0", pretrained=False,
                                      resolution=args.resolution, seed=1)
  student, student_vars = models.load("efficientnet_lite0", pretrained=False,
                                      resolution=args.resolution, seed=2)
  tx = make_optimizer("adam", make_schedule(3e-4, "constant", 1))
  step = student_lib.jit_train_step(student_lib.make_train_step(
      student, teacher, corruptions.build("mask(0.9)"), "st", 0.1, tx), mesh)
  state = sharding.replicate(TrainState.create(jax.tree.map(np.array, student_vars), tx), mesh)
  teacher_vars = sharding.replicate(teacher_vars, mesh)
  images = np.random.default_rng(0).uniform(size=(args.batch, args.size, args.size, 3))
  batch = sharding.global_batch({"image": images.astype(np.float32)}, mesh)
  key = jax.random.key(0)
  times = []
  for i in range(args.steps + 1):
    start = time.perf_counter()
    state, metrics = step(state, teacher_vars, batch, key)
    jax.block_until_ready(metrics)
    if i:  # Step 0 compiles.
      times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=6000, help="training images")
  parser.add_argument("--dim", type=int, default=1280, help="feature dimension")
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--epochs", type=int, default=10, help="probe epochs")
  parser.add_argument("--batch", type=int, default=64, help="student batch size")
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--size", type=int, default=28)
  parser.add_argument("--steps", type=int, default=5, help="timed student steps")
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  features = rng.normal(size=(args.n, args.dim)).astype(np.float32)
  labels = rng.integers(0, args.classes, args.n)
  cold = _probe_seconds(features, labels, args.classes, args.epochs)
  warm = _probe_seconds(features, labels, args.classes, args.epochs)
  step_s = _step_seconds(args)
  steps_per_epoch = math.ceil(args.n / args.batch)
  epoch_s = steps_per_epoch * step_s

  print(f"backend {jax.default_backend()}, features {args.n}x{args.dim}, {args.classes} "
        f"classes, {args.epochs} probe epochs; student EfficientNet-Lite0 at "
        f"{args.resolution} px, batch {args.batch}, median of {args.steps} steps")
  print(f"{'what':<36} {'seconds':>9}")
  print(f"{'probe.fit, first call (compiles)':<36} {cold:>9.2f}")
  print(f"{'probe.fit, second call':<36} {warm:>9.2f}")
  print(f"{'student step':<36} {step_s:>9.3f}")
  print(f"{f'student epoch ({steps_per_epoch} steps)':<36} {epoch_s:>9.1f}")
  print(f"result: probe_vs_epoch_percent {100 * warm / epoch_s:.1f}% (goal 5%)")


if __name__ == "__main__":
  main()
