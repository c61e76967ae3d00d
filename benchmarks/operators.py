"""Times the jitted batched corruptions against a per-image NumPy loop (the PyTorch code's way).

    python benchmarks/operators.py [--batch 256 --sizes 28,224 --repeats 3 --numpy-images 32]

The original code corrupted images one at a time on data-loader workers: a Python loop over
images, `np.random` per image, blur by a separable convolution with reflect padding. This script
writes that baseline in NumPy and compares images/s with `rrjax.corruptions.build(spec)` jitted
over the whole batch (timed with `block_until_ready`, median of --repeats after a warm-up call).
The NumPy loop is timed on the first --numpy-images images of the batch (per-image cost does not
depend on the batch). Ends with `result: operators_min_speedup <x>x (goal 50x)`, the smallest
speedup over all specs at the largest size.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from rrjax import corruptions

SPECS = ("mask(0.9)", "noise(0.5)", "blur(21,5)", "mask(0.5,0.95)")


def _blur_1d(image: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
  """Correlates `image` `[H, W, C]` along `axis` with `taps` `[n]`, reflect padded."""
  r = (taps.size - 1) // 2
  pad = [(0, 0)] * 3
  pad[axis] = (r, r)
  padded = np.pad(image, pad, mode="reflect")
  size = image.shape[axis]
  out = np.zeros_like(image)
  for j, t in enumerate(taps):
    out += t * np.take(padded, np.arange(j, j + size), axis=axis)
  return out


def numpy_corrupt(op: corruptions.Operator, image: np.ndarray,
                  rng: np.random.RandomState) -> np.ndarray:
  """One image `[H, W, C]` float32 corrupted by `op` (not composed), as a worker would."""
  h, w, _ = image.shape
  if isinstance(op, corruptions.Mask):
    p = rng.uniform(op.lo, op.hi) if op.hi > op.lo else op.lo
    masked = rng.permutation(h * w)[:int(h * w * p)]
    keep = np.ones(h * w, np.float32)
    keep[masked] = 0
    return image * keep.reshape(h, w, 1)
  if isinstance(op, corruptions.Noise):
    sigma = rng.uniform(op.lo, op.hi) if op.hi > op.lo else op.lo
    return image + np.float32(sigma) * rng.standard_normal(image.shape).astype(np.float32)
  if isinstance(op, corruptions.Blur):
    sigma = rng.uniform(op.lo, op.hi) if op.hi > op.lo else op.lo
    t = np.arange(op.n, dtype=np.float32) - (op.n - 1) // 2
    taps = np.exp(-t**2 / (2 * sigma**2))
    taps /= taps.sum()
    return _blur_1d(_blur_1d(image, taps, axis=1), taps, axis=0)
  raise ValueError(f"no NumPy baseline for {op}")


def _jax_images_per_s(spec: str, images: jax.Array, repeats: int) -> float:
  op = corruptions.build(spec)
  key = jax.random.key(0)
  jax.block_until_ready(op(key, images))  # Compile and warm up.
  times = []
  for i in range(repeats):
    k = jax.random.fold_in(key, i)
    start = time.perf_counter()
    jax.block_until_ready(op(k, images))
    times.append(time.perf_counter() - start)
  return images.shape[0] / statistics.median(times)


def _numpy_images_per_s(spec: str, images: np.ndarray, repeats: int) -> float:
  op, rng = corruptions.build(spec), np.random.RandomState(0)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for image in images:
      numpy_corrupt(op, image, rng)
    times.append(time.perf_counter() - start)
  return images.shape[0] / statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--sizes", default="28,224", help="comma-separated image sizes")
  parser.add_argument("--specs", default=";".join(SPECS),
                      help="';'-separated corruption specs")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--numpy-images", type=int, default=32,
                      help="images of the batch that the NumPy loop is timed on")
  args = parser.parse_args()
  sizes = [int(s) for s in args.sizes.split(",")]
  specs = args.specs.split(";")

  print(f"backend {jax.default_backend()}, batch {args.batch}, 3 channels, median of "
        f"{args.repeats}; NumPy timed on {args.numpy_images} images")
  print(f"{'spec':<16} {'size':>5} {'jax img/s':>11} {'numpy img/s':>12} {'speedup':>9}")
  speedups = {}
  for size in sizes:
    host = np.random.default_rng(0).uniform(size=(args.batch, size, size, 3)).astype(np.float32)
    device = jnp.asarray(host)
    for spec in specs:
      fast = _jax_images_per_s(spec, device, args.repeats)
      slow = _numpy_images_per_s(spec, host[:args.numpy_images], args.repeats)
      speedups[spec, size] = fast / slow
      print(f"{spec:<16} {size:>5} {fast:>11.0f} {slow:>12.0f} {fast / slow:>8.2f}x")
  worst = min(v for (_, size), v in speedups.items() if size == max(sizes))
  print(f"result: operators_min_speedup {worst:.2f}x (goal 50x)")


if __name__ == "__main__":
  main()
