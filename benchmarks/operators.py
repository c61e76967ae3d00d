"""Times the jitted batched corruptions against a per-image NumPy loop (the PyTorch code's way).

    python benchmarks/operators.py [--batch 256 --sizes 28,224 --repeats 3 --numpy-images 32]

The original code corrupted images one at a time on data-loader workers: a Python loop over
images, `np.random` per image, blur by a separable convolution with reflect padding. This script
writes that baseline in NumPy and compares images/s with `rrjax.corruptions.build(spec)` jitted
over the whole batch (timed with `block_until_ready`, median of --repeats after a warm-up call).
The NumPy loop is timed on the first --numpy-images images of the batch (per-image cost does not
depend on the batch). The other operators' baselines: down by a reshape's block means and
`repeat`, box by zeroing a slice, poisson by `np.random.poisson`, motion by the shifted
multiply-adds of its kernel's nonzero taps (the kernel built per image), oneof by
`rng.choice` of an alternative and that alternative's baseline; an ImageNet-C corruption by the
same NumPy function per image (its rows, marked `(host)`, measure the callback's overhead). Ends
with `result: operators_min_speedup <x>x (goal 50x)`, the smallest speedup of the jitted
operators (not the host ones) at the largest size.
"""

import argparse
import io
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from rrjax import corruptions
from rrjax.corruptions import host_ops, imagenet_c, operators
from rrjax.corruptions.jpeg import Jpeg

SPECS = ("mask(0.9)", "noise(0.5)", "blur(21,5)", "mask(0.5,0.95)", "down(4)", "box(0.1,0.5)",
         "poisson(20)", "poisson(5,500)", "motion(9,30)", "motion(9)",
         "jpeg(50)", "oneof(mask(0.9);noise(0.5);blur(21,5))")
# ImageNet-C corruptions run on the host by NumPy inside jit (`host_ops`): their rows measure the
# callback's overhead over the same NumPy per image, about 1x by design, and are left out of the
# goal's minimum, which is the jitted operators'. `--specs` takes any of the 15.
HOST_SPECS = ("gaussian_noise(3)", "glass_blur(3)", "zoom_blur(3)", "fog(3)", "frost(3)")


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


def _motion(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Correlates `image` `[H, W, C]` with `kernel` `[n, n]` over its nonzero taps, reflect padded."""
  r = (kernel.shape[0] - 1) // 2
  h, w, _ = image.shape
  padded = np.pad(image, ((r, r), (r, r), (0, 0)), mode="reflect")
  out = np.zeros_like(image)
  for i, j in zip(*np.nonzero(kernel)):
    out += np.float32(kernel[i, j]) * padded[i:i + h, j:j + w]
  return out


def numpy_corrupt(op: corruptions.Operator, image: np.ndarray,
                  rng: np.random.RandomState) -> np.ndarray:
  """One image `[H, W, C]` float32 corrupted by `op`, as a worker would."""
  h, w, _ = image.shape
  if isinstance(op, corruptions.Compose):
    for part in op.ops:
      image = numpy_corrupt(part, image, rng)
    return image
  if isinstance(op, operators.OneOf):
    return numpy_corrupt(op.ops[rng.choice(len(op.ops), p=op.probabilities)], image, rng)
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
  if isinstance(op, operators.Down):
    f = op.f
    hb, wb = -(-h // f), -(-w // f)
    padded = np.pad(image, ((0, hb * f - h), (0, wb * f - w), (0, 0)))
    counts = np.minimum(f, h - f * np.arange(hb))[:, None] * np.minimum(f, w - f * np.arange(wb))
    means = padded.reshape(hb, f, wb, f, -1).sum(axis=(1, 3)) / counts[:, :, None]
    return means.repeat(f, axis=0).repeat(f, axis=1)[:h, :w].astype(np.float32)
  if isinstance(op, operators.Box):
    s = rng.uniform(op.lo, op.hi) if op.hi > op.lo else op.lo
    side = min(round(np.sqrt(s * h * w)), h, w)
    top, left = rng.randint(h - side + 1), rng.randint(w - side + 1)
    out = image.copy()
    out[top:top + side, left:left + side] = 0
    return out
  if isinstance(op, operators.Poisson):
    peak = rng.uniform(op.lo, op.hi) if op.hi > op.lo else op.lo
    return (rng.poisson(peak * np.clip(image, 0, 1)) / peak).astype(np.float32)
  if isinstance(op, operators.Motion):
    angle = rng.uniform(0, 180) if op.angle is None else op.angle
    return _motion(image, operators.motion_kernel(op.n, np.float64(angle), np))
  if isinstance(op, Jpeg):
    # The original code's way: PIL's encoder and decoder on the 8-bit image.
    quality = int(round(rng.uniform(op.lo, op.hi))) if op.random else int(op.lo)
    buffer = io.BytesIO()
    pixels = np.round(255 * np.clip(image, 0, 1)).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer), np.float32) / 255
  if isinstance(op, host_ops.ImageNetC):
    seed = rng.randint(2**31)
    return imagenet_c.corrupt(op.corruption, op.severity, np.clip(image, 0, 1),
                              np.random.default_rng(seed))
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


def _on_host(op: corruptions.Operator) -> bool:
  """Whether any part of `op` is an ImageNet-C corruption (NumPy on the host)."""
  if isinstance(op, (corruptions.Compose, operators.OneOf)):
    return any(_on_host(part) for part in op.ops)
  return isinstance(op, host_ops.ImageNetC)


def _split_specs(text: str) -> list[str]:
  """`text` split at the `;`s outside parentheses: oneof's own `;`s stay in its spec."""
  specs, depth, start = [], 0, 0
  for i, char in enumerate(text):
    depth += {"(": 1, ")": -1}.get(char, 0)
    if char == ";" and depth == 0:
      specs.append(text[start:i])
      start = i + 1
  return specs + [text[start:]]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--sizes", default="28,224", help="comma-separated image sizes")
  parser.add_argument("--specs", default=";".join(SPECS + HOST_SPECS),
                      help="';'-separated corruption specs (a ';' inside oneof(...) stays)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--numpy-images", type=int, default=32,
                      help="images of the batch that the NumPy loop is timed on")
  args = parser.parse_args()
  sizes = [int(s) for s in args.sizes.split(",")]
  specs = _split_specs(args.specs)

  print(f"backend {jax.default_backend()}, batch {args.batch}, 3 channels, median of "
        f"{args.repeats}; NumPy timed on {args.numpy_images} images")
  width = max(16, *map(len, specs))
  print(f"{'spec':<{width}} {'size':>5} {'jax img/s':>11} {'numpy img/s':>12} {'speedup':>9}")
  speedups = {}
  for size in sizes:
    host = np.random.default_rng(0).uniform(size=(args.batch, size, size, 3)).astype(np.float32)
    device = jnp.asarray(host)
    for spec in specs:
      fast = _jax_images_per_s(spec, device, args.repeats)
      slow = _numpy_images_per_s(spec, host[:args.numpy_images], args.repeats)
      on_host = _on_host(corruptions.build(spec))
      if not on_host:
        speedups[spec, size] = fast / slow
      print(f"{spec:<{width}} {size:>5} {fast:>11.0f} {slow:>12.0f} {fast / slow:>8.2f}x"
            + ("  (host)" if on_host else ""))
  worst = min(v for (_, size), v in speedups.items() if size == max(sizes))
  print(f"result: operators_min_speedup {worst:.2f}x (goal 50x)")


if __name__ == "__main__":
  main()
