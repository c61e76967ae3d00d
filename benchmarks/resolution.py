"""The embedded default's encoder resolution: probe accuracy against the cost of a student step.

    python benchmarks/resolution.py [--resolutions 32,48,64 --steps 5]

Per resolution of EfficientNet-Lite0 (the 28 px Fashion-MNIST images are upsampled to it inside
the encoder): the frozen teacher's validation top-1 with a probe fitted on its features of the
clean, mask(0.9)- and noise(0.5)-corrupted training split (the embedded default's splits, lr
3e-3, 10 epochs, one corruption draw), and the median seconds of one student step (batch 64,
mask(0.9), teacher forward included) after two compiling steps. What chose 48 px for
`rrjax/config/embedded.py`: the clean ceiling within a point of 64 px at 1.6 times the speed.
"""

import argparse
import statistics
import time

import jax
import numpy as np
from absl import flags

from rrjax import corruptions, models
from rrjax.config import embedded
from rrjax.evaluation import probe, scoring, tasks
from rrjax.evaluation.features import Encoder
from rrjax.parallel import sharding
from rrjax.training import student
from rrjax.training.state import TrainState, make_optimizer

OPS = ("identity", "mask(0.9)", "noise(0.5)")


def _step_seconds(resolution: int, steps: int, mesh) -> float:
  module, variables = models.load("efficientnet_lite0", head="embed", resolution=resolution)
  tx = make_optimizer("adam", 3e-4)
  step = student.jit_train_step(student.make_train_step(
      module, module, corruptions.build("mask(0.9)"), "st", 0.1, tx), mesh)
  state = sharding.replicate(TrainState.create(jax.tree.map(np.array, variables), tx), mesh)
  teacher_vars = sharding.replicate(variables, mesh)
  batch = {"image": np.random.default_rng(0).integers(0, 255, (64, 28, 28, 1), np.uint8)}
  key, times = jax.random.key(0), []
  for i in range(steps + 2):
    start = time.perf_counter()
    state, out = step(state, teacher_vars, batch, key)
    jax.block_until_ready(out)
    if i >= 2:  # The first steps compile.
      times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--resolutions", default="32,48,64")
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()
  c = embedded.base()
  sources = tasks.hold_small(tasks.load_sources(c), c.data.cache_mb << 20)
  labels, val_labels = sources["train"].labels(), sources["val"].labels()
  mesh = sharding.make_mesh()
  print(f"train {c.data.train_split}, val {c.data.val_split}")
  print("resolution | " + " | ".join(f"val top-1 {op}" for op in OPS) + " | student step (s)")
  for resolution in map(int, args.resolutions.split(",")):
    module, variables = models.load("efficientnet_lite0", head="embed", resolution=resolution)
    encoder = Encoder(module, variables, batch_size=c.eval.batch_size, mesh=mesh)
    cells = []
    for name in OPS:
      op = corruptions.build(name)
      train = encoder.features(sources["train"], op, jax.random.key(1))
      val = encoder.features(sources["val"], op, jax.random.key(2))
      fitted = probe.fit(train, labels, len(sources["train"].class_names), lr=3e-3, epochs=10)
      cells.append(scoring.top1(probe.logits(fitted, val), val_labels))
    seconds = _step_seconds(resolution, args.steps, mesh)
    print(f"{resolution} | " + " | ".join(f"{v:.1f}" for v in cells) + f" | {seconds:.3f}",
          flush=True)


if __name__ == "__main__":
  main()
