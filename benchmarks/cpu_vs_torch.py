"""Times the demo's student training step in rrjax (JAX on CPU) against the same step in PyTorch.

    .venv-ref/bin/python benchmarks/cpu_vs_torch.py [--batch 64 --resolution 64 --size 28
        --steps 10 --warmup 2 --torch-format channels_last --profile]

Runs in the reference venv (`make test-reference` builds it), which has torch 2.13 CPU beside
jax and rrjax; torch is never a dependency of rrjax itself. The step is the demo's: a batch of
28 px images, `mask(0.9)`, the frozen EfficientNet-Lite0 teacher on the clean images (inference
mode, no gradient), the EfficientNet-Lite0 student on the corrupted ones (training-mode
BatchNorm), both upsampling to 64 px inside, the InfoNCE `st` loss at temperature 0.1 over the
batch, one Adam step (3e-4).

JAX: `rrjax.training.student.make_train_step` jitted by `jit_train_step`, as
`rrjax.training.student.train_student` runs it. PyTorch: an EfficientNet-Lite0 written below (TF
'SAME' padding, BatchNorm eps 1e-3 and momentum 0.1 as rrjax's 0.9), loaded with the same random
weights as the JAX models, in the channels_last memory format (`--torch-format`; as fast as
contiguous NCHW here, 643 against 629 ms alternating); the script checks that the two teachers agree
on a batch before timing.

Each framework runs in its own worker process and the parent has them alternate step by step,
so that a change in the machine's load hits both. In one process they slowed each other down
(PyTorch 5x slower than alone: the idle framework's worker threads still compete for the two
cores). PyTorch runs twice: as installed, and with `OMP_WAIT_POLICY=passive`. Its OpenMP
threads spin while they wait, which on cores shared with other work made its step 6x slower
(4.8 s against 0.76 s, load average 4.3); the result compares rrjax with the faster of the two.

`--profile` adds where each step spends its time: one traced JAX step, its XLA operations
summed by kind (from the compiled HLO's op names), and the PyTorch profiler's top operators.

Ends with `result: cpu_vs_torch <r> (goal 0.5)`, JAX images/s over the faster PyTorch's.
"""

import argparse
import collections
import glob
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import torch
import torch.nn.functional as F
from flax import traverse_util
from torch import nn

from rrjax import corruptions, models
from rrjax.parallel import sharding
from rrjax.training import student as student_lib
from rrjax.models import depthwise, efficientnet
from rrjax.training.state import TrainState, make_optimizer, make_schedule

TEMPERATURE = 0.1
LR = 3e-4


class TorchConvBN(nn.Module):
  """Conv (TF 'SAME' padding, no bias) + BatchNorm, optionally ReLU6."""

  def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
               act: bool = True):
    super().__init__()
    self.kernel, self.stride, self.act = kernel, stride, act
    # Stride 1 'SAME' is symmetric: the conv pads. Strided convs pad asymmetrically first.
    self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2 if stride == 1 else 0,
                          groups=groups, bias=False)
    self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=1 - efficientnet.BN_MOMENTUM)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.stride != 1:
      (top, bottom), (left, right) = (depthwise.same_padding(n, self.kernel, self.stride)
                                      for n in x.shape[2:])
      x = F.pad(x, (left, right, top, bottom))
    x = self.bn(self.conv(x))
    return F.relu6(x) if self.act else x


class TorchMBConv(nn.Module):
  """`efficientnet.MBConv` in PyTorch: expand 1x1, depthwise kxk, project 1x1, shortcut."""

  def __init__(self, cin: int, expansion: int, kernel: int, stride: int, cout: int):
    super().__init__()
    mid = cin * expansion
    self.expand = TorchConvBN(cin, mid, 1) if expansion != 1 else nn.Identity()
    self.depthwise = TorchConvBN(mid, mid, kernel, stride, groups=mid)
    self.project = TorchConvBN(mid, cout, 1, act=False)
    self.shortcut = stride == 1 and cin == cout

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = self.project(self.depthwise(self.expand(x)))
    return x + y if self.shortcut else y


class TorchLite0(nn.Module):
  """`efficientnet.EfficientNetLite0(head="embed")` in PyTorch: NHWC [0, 1] images -> [B, 1280]."""

  def __init__(self, resolution: int):
    super().__init__()
    self.resolution = resolution
    self.stem = TorchConvBN(3, efficientnet.STEM_WIDTH, 3, 2)
    blocks, cin = [], efficientnet.STEM_WIDTH
    for expansion, kernel, stride, cout, repeats in efficientnet.STAGES:
      for i in range(repeats):
        blocks.append(TorchMBConv(cin, expansion, kernel, stride if i == 0 else 1, cout))
        cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.head = TorchConvBN(cin, efficientnet.HEAD_WIDTH, 1)

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", antialias=True,
                      align_corners=False)
    x = (x - 0.5) / 0.5
    return self.head(self.blocks(self.stem(x))).mean(dim=(2, 3))


def torch_state_dict(variables) -> dict[str, torch.Tensor]:
  """The Flax Lite0 variables as a `TorchLite0` state dict (convs HWIO -> OIHW)."""
  flat = traverse_util.flatten_dict(jax.device_get(variables))
  leaves = {"kernel": "conv.weight", "scale": "bn.weight", "bias": "bn.bias",
            "mean": "bn.running_mean", "var": "bn.running_var"}
  # Flax module name -> TorchLite0 path; the BatchNorm after each conv joins that conv.
  top = {"conv_stem": "stem", "bn0": "stem", "conv_head": "head", "bn1": "head"}
  block = {"expand_conv": "expand", "bn0": "expand", "depthwise_conv": "depthwise",
           "bn1": "depthwise", "project_conv": "project", "bn2": "project"}
  state = {}
  for (_, *modules, leaf), value in flat.items():
    if modules[0].startswith("blocks_"):
      path = f"blocks.{modules[0][len('blocks_'):]}.{block[modules[1]]}"
    else:
      path = top[modules[0]]
    value = np.asarray(value)
    if value.ndim == 4:
      value = value.transpose(3, 2, 0, 1)
    state[f"{path}.{leaves[leaf]}"] = torch.tensor(value)
  return state


def torch_mask(images: torch.Tensor, fraction: float) -> torch.Tensor:
  """`mask(fraction)` on NHWC images: exactly int(H*W*p) positions per image set to 0."""
  b, h, w, _ = images.shape
  masked = torch.rand(b, h * w).argsort(dim=1)[:, :int(h * w * fraction)]
  keep = torch.ones(b, h * w).scatter_(1, masked, 0.0)
  return images * keep.view(b, h, w, 1)


def torch_st_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
  """`rrjax.losses.st` on unnormalised embeddings."""
  logits = F.normalize(s, dim=1) @ F.normalize(t, dim=1).T / TEMPERATURE
  return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


_LAYERS = (("depthwise_conv", "depthwise conv"), ("/bn", "BatchNorm"),
           ("conv_stem", "conv (stem, 1x1)"), ("expand_conv", "conv (stem, 1x1)"),
           ("project_conv", "conv (stem, 1x1)"), ("conv_head", "conv (stem, 1x1)"),
           ("relu6", "ReLU6"), ("select_n", "ReLU6"), ("resize", "resize 28->64"),
           ("_sample_and_apply", "corruption"))
_PHASES = ("teacher fwd", "student fwd", "student bwd", "other")


def _kind(name: str, op_name: str) -> tuple[str, str]:
  """`(layer, phase)` of one HLO instruction, from its name and its JAX op path."""
  if "transpose(jvp(EfficientNetLite0))" in op_name:
    phase = "student bwd"
  elif "jvp(EfficientNetLite0)" in op_name:
    phase = "student fwd"
  elif "EfficientNetLite0/" in op_name:
    phase = "teacher fwd"
  else:
    phase = "other"
  for key, layer in _LAYERS:
    if key in op_name:
      return layer, phase
  if not op_name and name.startswith(("ynn_fusion", "convolution")):
    # The weight-gradient convolutions XLA builds carry no op path; the step has no others.
    return "conv (stem, 1x1)", "student bwd"
  if not op_name and name.startswith(("copy", "transpose")):
    return "layout copies (XLA-inserted)", phase
  return ("other model ops" if "EfficientNetLite0" in op_name else "loss, Adam, rest"), phase


def _jax_profile(step, hlo_text: str) -> dict[tuple[str, str], float]:
  """Milliseconds of one traced `step()` by `_kind`, summed over threads."""
  # Instruction -> its op path; a fusion without one gets the first one inside its computation.
  op_names, calls, inside, computation = {}, {}, collections.defaultdict(str), None
  for line in hlo_text.splitlines():
    header = re.match(r"(?:ENTRY )?%([\w.\-]+) \(.*\{$", line)
    if header:
      computation = header.group(1)
      continue
    match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = ", line)
    if match:
      op_name = re.search(r'op_name="([^"]*)"', line)
      called = re.search(r"calls=%([\w.\-]+)", line)
      op_names[match.group(1)] = op_name.group(1) if op_name else ""
      calls[match.group(1)] = called.group(1) if called else None
      if op_name and not inside[computation]:
        inside[computation] = op_name.group(1)
  kinds = {name: _kind(name, op_name or inside[calls[name]])
           for name, op_name in op_names.items()}
  directory = tempfile.mkdtemp()
  with jax.profiler.trace(directory):
    step()
  path = glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True)[0]
  totals = collections.Counter()
  for plane in jax.profiler.ProfileData.from_file(path).planes:
    if plane.name != "/host:CPU":
      continue
    for line in plane.lines:
      if line.name == "python":
        continue
      for event in line.events:
        if event.name in kinds:
          totals[kinds[event.name]] += event.duration_ns / 1e6
  return totals


def _jax_side(args, host: np.ndarray):
  """`(step, describe_profile)` for the rrjax step on `host` images."""
  mesh = sharding.make_mesh()
  teacher, teacher_vars = models.load("efficientnet_lite0", pretrained=False,
                                      resolution=args.resolution, seed=1)
  student, student_vars = models.load("efficientnet_lite0", pretrained=False,
                                      resolution=args.resolution, seed=2)
  tx = make_optimizer("adam", make_schedule(LR, "constant", 1))
  corruption = corruptions.build(f"mask({args.fraction})")
  batch = sharding.global_batch({"image": host}, mesh)
  teacher_vars = sharding.replicate(teacher_vars, mesh)
  key = jax.random.key(0)
  jitted = student_lib.jit_train_step(
      student_lib.make_train_step(student, teacher, corruption, "st", TEMPERATURE, tx), mesh)
  holder = [sharding.replicate(TrainState.create(student_vars, tx), mesh)]

  def step():
    holder[0], metrics = jitted(holder[0], teacher_vars, batch, key)
    jax.block_until_ready(metrics)

  def profile():
    totals = _jax_profile(step, jitted.lower(holder[0], teacher_vars, batch, key).compile()
                          .as_text())
    layers = sorted({layer for layer, _ in totals},
                    key=lambda layer: -sum(totals[layer, phase] for phase in _PHASES))
    lines = ["JAX step by layer and phase: ms in one traced step, summed over threads",
             f"  {'layer':<30}" + "".join(f"{phase:>13}" for phase in _PHASES + ("total",))]
    for layer in layers:
      row = [totals[layer, phase] for phase in _PHASES]
      lines.append(f"  {layer:<30}" + "".join(f"{ms:>13.1f}" for ms in row + [sum(row)]))
    return lines

  return step, profile


def _torch_side(args, host: np.ndarray):
  """`(step, describe_profile)` for the PyTorch step, after checking it against rrjax's."""
  teacher_module, teacher_vars = models.load("efficientnet_lite0", pretrained=False,
                                             resolution=args.resolution, seed=1)
  _, student_vars = models.load("efficientnet_lite0", pretrained=False,
                                resolution=args.resolution, seed=2)
  teacher, student = TorchLite0(args.resolution), TorchLite0(args.resolution)
  teacher.load_state_dict(torch_state_dict(teacher_vars))
  student.load_state_dict(torch_state_dict(student_vars))
  if args.torch_format == "channels_last":
    teacher.to(memory_format=torch.channels_last)
    student.to(memory_format=torch.channels_last)
  teacher.eval().requires_grad_(False)
  student.train()
  optimizer = torch.optim.Adam(student.parameters(), lr=LR)
  images = torch.from_numpy(host)
  with torch.no_grad():
    reference = teacher(images).numpy()
  ours = np.asarray(teacher_module.apply(teacher_vars, host, train=False))
  diff = np.abs(ours - reference).max() / np.abs(reference).max()
  if diff > 1e-3:
    raise SystemExit(f"the PyTorch model does not match rrjax's (relative diff {diff:.1e})")
  print(f"info torch {torch.__version__} ({torch.get_num_threads()} threads, "
        f"{args.torch_format}); its teacher and rrjax's agree to {diff:.1e} (max abs diff / "
        f"max abs value)", flush=True)

  def step():
    with torch.no_grad():
      t = teacher(images)
    loss = torch_st_loss(student(torch_mask(images, args.fraction)), t)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

  def profile():
    with torch.profiler.profile() as prof:
      step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    return ["PyTorch step, top operators (self CPU time)"] + table.splitlines()

  return step, profile


def _worker(args) -> None:
  """Serves one framework's step to the parent: 'step' -> 'time <s>', 'profile' -> lines."""
  host = np.random.default_rng(0).uniform(size=(args.batch, args.size, args.size, 3))
  side = {"jax": _jax_side, "torch": _torch_side}[args.worker]
  step, profile = side(args, host.astype(np.float32))
  print("ready", flush=True)
  for command in sys.stdin:
    if command.strip() == "step":
      start = time.perf_counter()
      step()
      print(f"time {time.perf_counter() - start}", flush=True)
    else:
      print("\n".join(profile() + ["end"]), flush=True)


class _Worker:
  """A `_worker` subprocess for one framework."""

  def __init__(self, label: str, name: str, argv: list[str], env: dict[str, str] | None = None):
    self.process = subprocess.Popen([sys.executable, __file__, "--worker", name] + argv,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                    env={**os.environ, **(env or {})})
    for line in self._lines():
      if line == "ready":
        break
      print(f"{label}: {line.removeprefix('info ')}")

  def _lines(self):
    for line in self.process.stdout:
      yield line.rstrip("\n")
    raise SystemExit(f"worker {self.process.args[3]} exited with {self.process.wait()}")

  def ask(self, command: str) -> list[str]:
    self.process.stdin.write(command + "\n")
    self.process.stdin.flush()
    if command == "step":
      return [next(self._lines())]
    return list(iter(self._lines().__next__, "end"))

  def close(self):
    self.process.stdin.close()
    self.process.wait()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--size", type=int, default=28, help="input image size")
  parser.add_argument("--fraction", type=float, default=0.9, help="mask fraction")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--torch-format", choices=("channels_last", "contiguous"),
                      default="channels_last",
                      help="PyTorch memory format")
  parser.add_argument("--profile", action="store_true")
  parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    _worker(args)
    return

  print(f"jax {jax.__version__} (CPU), {os.cpu_count()} CPU cores; command: "
        f"{' '.join([os.path.basename(sys.executable)] + sys.argv)}")
  print(f"EfficientNet-Lite0 student + frozen teacher at {args.resolution} px from {args.size} "
        f"px inputs, batch {args.batch}, mask({args.fraction}), st loss, Adam")
  argv = [f"--batch={args.batch}", f"--resolution={args.resolution}", f"--size={args.size}",
          f"--fraction={args.fraction}", f"--torch-format={args.torch_format}"]
  settings = {"rrjax (JAX, XLA:CPU)": ("jax", None), "PyTorch": ("torch", None),
              "PyTorch, passive OpenMP": ("torch", {"OMP_WAIT_POLICY": "passive"})}
  workers = {label: _Worker(label, name, argv, env) for label, (name, env) in settings.items()}
  times = {name: [] for name in workers}
  for i in range(args.warmup + args.steps):
    for name, worker in workers.items():
      seconds = float(worker.ask("step")[0].split()[1])
      if i >= args.warmup:
        times[name].append(seconds)
  rates = {name: args.batch / statistics.median(t) for name, t in times.items()}
  print(f"median of {args.steps} steps, the workers alternating, after {args.warmup} "
        f"warm-up steps each")
  print(f"{'framework':<26} {'step ms':>9} {'img/s':>8}")
  for name, rate in rates.items():
    print(f"{name:<26} {1e3 * args.batch / rate:>9.1f} {rate:>8.1f}")
  if args.profile:
    for name in ("rrjax (JAX, XLA:CPU)", "PyTorch, passive OpenMP"):
      print("\n".join([""] + workers[name].ask("profile")))
  for worker in workers.values():
    worker.close()
  jax_rate, *torch_rates = rates.values()
  print(f"result: cpu_vs_torch {jax_rate / max(torch_rates):.2f} (goal 0.5)")


if __name__ == "__main__":
  main()
