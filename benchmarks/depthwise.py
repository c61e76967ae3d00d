"""Times the two depthwise-conv formulations (forward and gradient) on the default backend.

    python benchmarks/depthwise.py [--batch 64 --size 32 --channels 96 --kernel 5 --repeats 5]

Prints a table (impl, forward ms, grad ms, speedup of the grad over 'lax') and ends with
`result: depthwise_grad_speedup <value>x (goal 5x)`, the 'shifted' over 'lax' gradient speedup.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from rrjax.models import depthwise


def _median_ms(fn, args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # Compile and warm up outside the timed runs.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--channels", type=int, default=96)
  parser.add_argument("--kernel", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  kx, kk = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (args.batch, args.size, args.size, args.channels), jnp.float32)
  w = jax.random.normal(kk, (args.kernel, args.kernel, 1, args.channels), jnp.float32)
  print(f"backend {jax.default_backend()}, x {x.shape}, kernel {w.shape}, stride 1, SAME, "
        f"median of {args.repeats}")

  rows = {}
  for impl in ("lax", "shifted", "auto"):
    conv = lambda a, k, impl=impl: depthwise.depthwise_conv(a, k, 1, "SAME", impl)
    fwd = jax.jit(conv)
    grad = jax.jit(jax.grad(lambda a, k, conv=conv: conv(a, k).sum(), argnums=(0, 1)))
    rows[impl] = (_median_ms(fwd, (x, w), args.repeats), _median_ms(grad, (x, w), args.repeats))

  base = rows["lax"][1]
  print(f"{'impl':<8} {'forward ms':>11} {'grad ms':>10} {'grad speedup':>13}")
  for impl, (f_ms, g_ms) in rows.items():
    print(f"{impl:<8} {f_ms:>11.1f} {g_ms:>10.1f} {base / g_ms:>12.1f}x")
  print(f"result: depthwise_grad_speedup {base / rows['shifted'][1]:.1f}x (goal 5x)")


if __name__ == "__main__":
  main()
