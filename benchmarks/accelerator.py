"""Images/s and model-FLOPs utilisation of the student step at ImageNet scale on an accelerator.

    python benchmarks/accelerator.py                 # GPU/TPU: ResNet-50 student, ViT-B/16 teacher
    python benchmarks/accelerator.py --small         # anywhere (CI, CPU): tiny batch, 32 px

The step is `rrjax.training.student.make_train_step` jitted by `jit_train_step` over all devices, as
`rrjax.training.student.train_student` runs it: `mask(0.9)` on 224 px images, the frozen CLIP
ViT-B/16-sized teacher (`clip_vit_b16`, random weights, same cost as the real ones), the ResNet-50
student (`resnet50`, embedding width set to the teacher's 512), the `st` loss, Adam. The batch is
one device-resident array of random images, so the input pipeline is not measured.

Compute dtype (`--dtype`, bfloat16 by default): passed as `make_train_step(compute_dtype=...)`
where rrjax has that argument (the models then run their convolutions and matmuls in bfloat16
with float32 parameters; see `rrjax.models`), else as `models.load(..., dtype=...)`.

Batch: `--batch 0` (the default) picks the largest power of two from `--min-batch` per device
to `--max-batch` whose compiled step fits 90% of the device memory (`Compiled.memory_analysis()`
against the device's `bytes_limit`, which on GPU is jax's preallocated share,
XLA_PYTHON_CLIENT_MEM_FRACTION; memory is linear in the batch, so three or four compilations
suffice); a batch that still fails at run time is halved.

FLOPs per step come from XLA (`Lowered.cost_analysis()` of the step before the backend compiles
it, divided by the number of devices), so they count everything the step computes (teacher
forward, student forward and backward, optimiser); the compiled program's own count misses the
convolutions on GPU, where they are cuDNN calls; MFU is FLOPs / step time / the chip's dense bfloat16 peak (`PEAK_TFLOPS`, by
`device_kind`, or `--peak-tflops`).

Prints the device, jax version and command, a table, the peak device memory in use
(`memory_stats()['peak_bytes_in_use']`, GPU/TPU only) and ends with
`result: accelerator_mfu <percent>% (goal 40%)` (`n/a` where the peak is unknown, e.g. CPU).
"""

import argparse
import inspect
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from rrjax import corruptions, models
from rrjax.parallel import sharding
from rrjax.training import student as student_lib
from rrjax.training.state import TrainState, make_optimizer, make_schedule

# Dense bfloat16 peak TFLOP/s per chip, by a substring of `device.device_kind` (first match).
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),       # SXM; H100 NVL differs, pass --peak-tflops.
    ("H200", 989.0),
    ("A100", 312.0),
    ("L4", 121.0),
    ("TPU v4", 275.0),
    ("TPU v5 lite", 197.0),
    ("TPU v5e", 197.0),
    ("TPU v5p", 459.0),
    ("TPU v6", 918.0),
)
GOAL_PERCENT = 40


def peak_tflops(device_kind: str) -> float | None:
  """The dense bfloat16 peak of one chip of `device_kind`, or None when unknown (CPU)."""
  for name, tflops in PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return tflops
  return None


def _compute_dtype_kwargs(dtype: str) -> dict:
  """`make_train_step`'s compute-dtype argument, where this version of rrjax has one."""
  if "compute_dtype" in inspect.signature(student_lib.make_train_step).parameters:
    return {"compute_dtype": dtype}
  return {}


class Bench:
  """The student step with its state on the devices; compiled per batch size."""

  def __init__(self, args):
    self.mesh = sharding.make_mesh()
    self.resolution = args.resolution
    teacher, teacher_vars = models.load(args.teacher, pretrained=False, seed=1,
                                        **_model_options(args, args.teacher))
    # A student of another width is given the teacher's (resnet50); a CLIP student initialised
    # from its teacher (the paper: RN101 for RN101) already has it.
    width = models.info(args.teacher).embed_dim
    resize = {} if models.info(args.student).embed_dim == width else {"embed_dim": width}
    student, student_vars = models.load(
        args.student, pretrained=False, seed=2, **resize, **_model_options(args, args.student))
    tx = make_optimizer("adam", make_schedule(3e-4, "constant", 1))
    self.dtype_kwargs = _compute_dtype_kwargs(args.dtype)
    step = student_lib.make_train_step(student, teacher, corruptions.build(args.corruption), "st",
                                    0.1, tx, **self.dtype_kwargs)
    self.step = step
    self.jitted = student_lib.jit_train_step(step, self.mesh)
    self.state = sharding.replicate(TrainState.create(student_vars, tx), self.mesh)
    self.teacher_vars = sharding.replicate(teacher_vars, self.mesh)
    self.key = jax.random.key(0)

  def compile(self, batch_size: int):
    """The step compiled for a global batch of `batch_size` images (no batch allocated)."""
    images = jax.ShapeDtypeStruct((batch_size, self.resolution, self.resolution, 3),
                                  jnp.float32, sharding=sharding.batch_sharding(self.mesh))
    lowered = self.jitted.lower(self.state, self.teacher_vars, {"image": images}, self.key)
    compiled = lowered.compile()
    compiled.device_flops = self.global_flops(batch_size, lowered) / self.mesh.devices.size
    return compiled

  def global_flops(self, batch_size: int, lowered=None) -> float:
    """FLOPs of one step on the whole batch, counted on the program before compilation.

    Some backends (jax 0.11 on GPU) give no cost analysis before compilation; the same step is
    then lowered (not run) for the host CPU, where XLA counts the same operations.
    """
    cost = lowered.cost_analysis() if lowered is not None else None
    if cost:
      return flops(lowered)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices("cpu")[:1]), (sharding.DATA,))
    abstract = lambda tree: jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding.replicated(mesh)), tree)
    images = jax.ShapeDtypeStruct((batch_size, self.resolution, self.resolution, 3),
                                  jnp.float32, sharding=sharding.batch_sharding(mesh))
    on_cpu = student_lib.jit_train_step(self.step, mesh).lower(
        abstract(self.state), abstract(self.teacher_vars), {"image": images},
        abstract(self.key))
    return flops(on_cpu)

  def step_seconds(self, compiled, batch_size: int, warmup: int, steps: int) -> float:
    """Median seconds of `steps` calls of `compiled` after `warmup`, on random images."""
    images = np.random.default_rng(0).uniform(
        size=(batch_size, self.resolution, self.resolution, 3)).astype(np.float32)
    batch = sharding.global_batch({"image": images}, self.mesh)
    times = []
    for i in range(warmup + steps):
      start = time.perf_counter()
      self.state, metrics = compiled(self.state, self.teacher_vars, batch, self.key)
      jax.block_until_ready(metrics)
      if i >= warmup:
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops(program) -> float:
  """FLOPs of one call of `program` (lowered or compiled), as XLA's cost analysis counts them."""
  cost = program.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def memory_bytes(compiled) -> int:
  """Arguments, outputs and temporaries of `compiled` on one device, aliased buffers once."""
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)


def largest_batch(bench: Bench, limit: int, smallest: int, largest: int) -> tuple[int, object]:
  """The largest power-of-two batch in [smallest, largest] whose step fits 90% of `limit`.

  Memory grows linearly with the batch: two compilations give the slope, a third checks the
  predicted size, and smaller ones follow while it does not fit.
  """
  budget = 0.9 * limit
  first = bench.compile(smallest)
  if memory_bytes(first) > budget:
    raise SystemExit(f"batch {smallest} needs {memory_bytes(first) / 2**30:.1f} GiB of "
                     f"{limit / 2**30:.1f} GiB; pass a smaller --min-batch")
  second = bench.compile(2 * smallest)
  per_image = (memory_bytes(second) - memory_bytes(first)) / smallest
  fixed = memory_bytes(first) - per_image * smallest
  size = smallest
  while 2 * size <= largest and fixed + per_image * 2 * size <= budget:
    size *= 2
  known = {smallest: first, 2 * smallest: second}
  while size > smallest:
    compiled = known.get(size) or bench.compile(size)
    print(f"batch {size}: needs {memory_bytes(compiled) / 2**30:.1f} GiB of "
          f"{limit / 2**30:.1f} GiB")
    if memory_bytes(compiled) <= budget:
      return size, compiled
    size //= 2
  return smallest, first


def _model_options(args, name: str) -> dict:
  options = {"resolution": args.resolution}
  if args.small and name.startswith("clip_vit"):
    # The tower's position embeddings fix its input size: a tiny image needs a tiny grid.
    options["config"] = {"image_size": args.resolution}
  if not _compute_dtype_kwargs(args.dtype):
    options["dtype"] = args.dtype
  return options


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--student", default="resnet50")
  parser.add_argument("--teacher", default="clip_vit_b16")
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--corruption", default="mask(0.9)")
  parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  parser.add_argument("--batch", type=int, default=0, help="global batch; 0: largest that fits")
  parser.add_argument("--min-batch", type=int, default=64, help="per device, for the search")
  parser.add_argument("--max-batch", type=int, default=2048)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="dense bf16 peak per chip, overriding the table")
  parser.add_argument("--small", action="store_true",
                      help="batch 2 at 32 px, 2 steps: a functional check on any backend")
  args = parser.parse_args()
  if args.small:
    args.resolution, args.batch, args.steps, args.warmup = 32, args.batch or 2, 2, 1

  devices = jax.devices()
  kind = devices[0].device_kind
  peak = args.peak_tflops or peak_tflops(kind)
  stats = devices[0].memory_stats() or {}
  limit = stats.get("bytes_limit")
  print(f"device {kind} x{len(devices)} ({jax.default_backend()}), jax {jax.__version__}, "
        f"peak {peak or 'unknown'} bf16 TFLOP/s per chip; command: "
        f"{' '.join(['python'] + sys.argv)}")

  bench = Bench(args)
  if args.batch:
    size, compiled = args.batch, bench.compile(args.batch)
  elif limit:
    size, compiled = largest_batch(bench, limit, args.min_batch * len(devices), args.max_batch)
  else:
    raise SystemExit(f"{jax.default_backend()} reports no memory limit: pass --batch")
  while True:
    try:
      seconds = bench.step_seconds(compiled, size, args.warmup, args.steps)
      break
    except jax.errors.JaxRuntimeError as e:
      if "RESOURCE_EXHAUSTED" not in str(e) or size < 2 * len(devices):
        raise
      print(f"batch {size}: out of memory at run time, halving")
      size //= 2
      bench = Bench(args)  # The failed call may have consumed the donated state.
      compiled = bench.compile(size)

  # Per device, counted on the program before the backend compiles it: on GPU the compiled
  # program's convolutions are cuDNN custom calls, which its cost analysis counts as nothing
  # (0.13 TFLOP instead of about 20 for the RN101 step at batch 256).
  step_flops = compiled.device_flops
  achieved = step_flops / seconds / 1e12
  dtype = args.dtype if bench.dtype_kwargs or args.dtype == "float32" else f"{args.dtype} (load)"
  print(f"{args.student} student, {args.teacher} teacher, {args.resolution} px, "
        f"{args.corruption}, st loss, Adam, compute dtype {dtype}; median of {args.steps} steps "
        f"after {args.warmup} warm-up")
  print(f"{'batch':>6} {'step ms':>9} {'img/s':>9} {'TFLOP/step/chip':>16} "
        f"{'TFLOP/s/chip':>13} {'MFU':>7}")
  mfu = f"{100 * achieved / peak:.1f}%" if peak else "n/a"
  print(f"{size:>6} {1e3 * seconds:>9.1f} {size / seconds:>9.1f} {step_flops / 1e12:>16.3f} "
        f"{achieved:>13.2f} {mfu:>7}")
  peak_bytes = (devices[0].memory_stats() or {}).get("peak_bytes_in_use")
  print("peak device memory: " + (f"{peak_bytes / 2**30:.2f} GiB" if peak_bytes else
                                  "not available on this backend"))
  print(f"result: accelerator_mfu {mfu} (goal {GOAL_PERCENT}%)")


if __name__ == "__main__":
  main()
