r"""Training views per second per CPU core from ImageNet-like JPEGs, and the cores a GPU needs.

    python benchmarks/input_pipeline.py            # 2,000 synthetic JPEGs, cached (1 to 3 min)
    python benchmarks/input_pipeline.py --small    # 64 images, 2 timed steps: a quick check
    python benchmarks/input_pipeline.py --folder=/data/imagenet_folder   # real JPEGs instead

Images: `rrjax.data.synthetic.write_imagefolder` (about 350 x 400, each side +-25%, baseline
JPEG quality 90, about 75 KB each), generated once into `--cache_dir` and reused (files are in
the page cache after that, as a warm dataset on a local disk would be).

1. Bare loop, the physical reference: one process, one thread, per image PIL open + full decode
   + the RandomResizedCrop box (`rrjax.data.views.random_crop_box`) + one PIL bilinear resize of
   that box to 224 x 224, nothing else (no flip, no batching). Eval: the same with the centred
   box of "resize the short side to 256, centre crop 224", one resize. Run before and after the
   pipeline timings (the machine may be shared); the faster is the reference. (A decode at
   reduced DCT scale, as `rrjax.data.views` does with JPEG bytes, needs a box of at least
   2 x 224 = 448 pixels a side, which these images are too small to hold: no change here.)
2. The real pipeline: `rrjax.data.batches(rrjax.data.load("imagefolder:<root>", "train",
   image_size=224), --batch, train=True|False, seed=0, num_workers=W, image_size=224)` for W in
   `--workers` (1, 2 and all cores by default). Every batch is checked to be uint8
   [batch, 224, 224, 3]. Start-up (the call to the first batch, worker processes included) is
   reported apart; the rate is timed over `--steps` batches after the first round of W batches
   (each worker's first batch, which overlaps the start-up), views/s and views/s per worker.
   Eval views count the real (mask True) images of the batches.
3. Cores to feed the accelerator: its rate is the student step of `benchmarks/accelerator.py`
   at the paper's shapes (CLIP RN101 teacher and student, 224 px, batch 256), FLOPs per step
   counted by that script's own method (XLA's count of the step lowered for the CPU, in a
   child process, 40 to 70 s; `--step_tflop` gives it instead), run at an ASSUMED 40% MFU of one
   H100 (989 dense bf16 TFLOP/s): no accelerator is measured here. The H200 rate recorded in
   benchmarks/README.md is printed beside it for reference. cores = images/s over the
   1-worker pipeline's training views/s per core.

Ends with `result: train_views_per_core <N> (<R>x bare loop; goal 500 and 0.8x)`: N is the
1-worker pipeline's training views/s (one worker process, one core; the consumer's own work,
receiving the batches, is small and not counted), R = N over the bare training loop's views/s.
"""

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from PIL import Image

import rrjax.data
from rrjax.data import synthetic
from rrjax.data import views

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 224
EVAL_RESIZE = 256
GOAL_VIEWS_PER_CORE = 500
GOAL_RATIO = 0.8
# The accelerator assumption: 40% MFU (the accelerator benchmark's goal) of an H100 SXM.
ASSUMED_MFU = 0.40
H100_BF16_TFLOPS = 989.0
# The paper's student step, as benchmarks/accelerator_paper.sh runs it.
PAPER_STEP = dict(student="clip_rn101", teacher="clip_rn101", resolution=224, batch=256,
                  dtype="bfloat16", corruption="mask(0.9)")
# What that script's method counted for it (benchmarks/README.md, 2026-11-26); used by --small.
RECORDED_STEP_TFLOP = 19.47

_IMAGES = flags.DEFINE_integer("images", 2000, "Synthetic training images to generate.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", "/tmp/rrjax_bench_jpegs",
                                 "Where the synthetic folders are kept between runs.")
_FOLDER = flags.DEFINE_string("folder", None, "An existing image folder (<dir>/train/<class>/"
                              "*.jpg) to read instead of synthetic images.")
_BATCH = flags.DEFINE_integer("batch", 128, "Batch size of the pipeline.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed batches per pipeline run (after the first "
                              "round of W batches).")
_WORKERS = flags.DEFINE_list("workers", ["1", "2", "all"],
                             "Worker process counts to time; 'all' is os.cpu_count().")
_BARE_IMAGES = flags.DEFINE_integer("bare_images", 600, "Images per bare-loop timing.")
_STEP_TFLOP = flags.DEFINE_float("step_tflop", None, "FLOPs of the paper's student step, "
                                 "TFLOP; default: counted by benchmarks/accelerator.py's method.")
_SMALL = flags.DEFINE_bool("small", False, "64 images, batch 8, 2 timed steps, the recorded "
                           "FLOP count: a quick check.")


def bare_train(paths: Sequence[str], seed: int = 0) -> float:
  """Views/s of open + decode + RandomResizedCrop box + one bilinear resize, one thread."""
  rng = np.random.default_rng(seed)
  start = time.perf_counter()
  for path in paths:
    with Image.open(path) as image:
      width, height = image.size
      top, left, h, w = views.random_crop_box((height, width), rng)
      view = np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BILINEAR,
                                     box=(left, top, left + w, top + h)))
    assert view.shape == (SIZE, SIZE, 3), view.shape
  return len(paths) / (time.perf_counter() - start)


def bare_eval(paths: Sequence[str]) -> float:
  """Views/s of open + decode + one bilinear resize of the "256, centre 224" box, one thread."""
  start = time.perf_counter()
  for path in paths:
    with Image.open(path) as image:
      width, height = image.size
      side = SIZE * min(height, width) / EVAL_RESIZE
      top, left = (height - side) / 2, (width - side) / 2
      view = np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BILINEAR,
                                     box=(left, top, left + side, top + side)))
    assert view.shape == (SIZE, SIZE, 3), view.shape
  return len(paths) / (time.perf_counter() - start)


def time_pipeline(source, batch_size: int, *, train: bool, workers: int, steps: int) -> dict:
  """Start-up seconds and views/s of `rrjax.data.batches` with `workers` worker processes.

  The first `workers` batches (each worker's first) are start-up; the next `steps` are timed.
  Eval streams end with the source: fewer timed batches then (`timed` says how many).
  """
  start = time.perf_counter()
  stream = rrjax.data.batches(source, batch_size, train=train, seed=0, image_size=SIZE,
                              num_steps=workers + steps, num_workers=workers)
  times, views_ = [], []
  for batch in stream:
    image = batch["image"]
    if image.dtype != np.uint8 or image.shape != (batch_size, SIZE, SIZE, 3):
      raise AssertionError(f"batch image {image.dtype} {image.shape}, expected uint8 "
                           f"{(batch_size, SIZE, SIZE, 3)}")
    times.append(time.perf_counter())
    views_.append(int(np.sum(batch["mask"])))
  startup = times[0] - start
  if len(times) < workers + 2:
    return {"startup": startup, "timed": 0, "views_per_s": float("nan")}
  timed = slice(workers, None)  # Batches after the first round, timed from its last one.
  seconds = times[-1] - times[workers - 1]
  return {"startup": startup, "timed": len(times) - workers,
          "views_per_s": sum(views_[timed]) / seconds}


def count_step_tflop() -> float:
  """TFLOP of the paper's student step by benchmarks/accelerator.py's method, in a child
  process (random CLIP RN101 weights, the step lowered for the CPU; nothing run)."""
  code = (
      "import argparse, sys; sys.path.insert(0, 'benchmarks'); import accelerator\n"
      f"step = {PAPER_STEP!r}\n"
      "args = argparse.Namespace(small=False, **{k: v for k, v in step.items() if k != 'batch'})\n"
      "print('TFLOP', accelerator.Bench(args).global_flops(step['batch']) / 1e12)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
  found = re.search(r"^TFLOP ([\d.]+)$", out.stdout, re.M)
  if out.returncode or not found:
    raise SystemExit(f"counting the step's FLOPs failed ({out.returncode}): {out.stderr[-2000:]}"
                     "\npass --step_tflop")
  return float(found.group(1))


def recorded_h200() -> str:
  """The bf16 paper-shape row recorded in benchmarks/README.md, or why there is none."""
  try:
    with open(os.path.join(ROOT, "benchmarks", "README.md")) as f:
      text = f.read()
  except OSError as e:
    return f"not found ({e})"
  row = re.search(r"^\| bfloat16 \| ([\d.]+) \| (\d+) \| ([\d.]+) \| \**([\d.]+%)", text, re.M)
  if not row or "H200" not in text:
    return "not found in benchmarks/README.md"
  ms, img_s, _, mfu = row.groups()
  return f"{img_s} img/s ({ms} ms per batch of 256, {mfu} MFU, bf16)"


def main(argv: Sequence[str]) -> None:
  del argv
  small = _SMALL.value
  images = 64 if small else _IMAGES.value
  batch = 8 if small else _BATCH.value
  steps = 2 if small else _STEPS.value
  bare_count = min(64, _BARE_IMAGES.value) if small else _BARE_IMAGES.value
  cores = os.cpu_count() or 1
  workers = sorted({cores if w == "all" else int(w) for w in _WORKERS.value})
  print(f"{cores} CPU cores, load average {os.getloadavg()[0]:.2f}; command: "
        f"{shlex.join(['python'] + sys.argv)}")

  if _FOLDER.value:
    root = _FOLDER.value
    print(f"images: {root} (given)")
  else:
    root = os.path.join(_CACHE_DIR.value, f"train{images}")
    reused = synthetic.is_complete(root, num_train=images, num_test=0)
    start = time.perf_counter()
    synthetic.write_imagefolder(root, num_train=images, num_test=0)
    m = synthetic.read_manifest(root)
    what = "reused" if reused else f"generated in {time.perf_counter() - start:.1f} s"
    print(f"images: {root}, {what}: {m['files']} synthetic JPEGs (quality {m['quality']}), "
          f"heights {m['height_range'][0]}..{m['height_range'][1]}, widths "
          f"{m['width_range'][0]}..{m['width_range'][1]}, {m['bytes'] / m['files'] / 1e3:.0f} KB "
          "mean")
  source = rrjax.data.load("imagefolder:" + root, "train", image_size=SIZE)
  train_dir = os.path.join(root, "train")
  classes = [c for c in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, c))]
  paths = sorted(os.path.join(train_dir, c, f) for c in classes
                 for f in os.listdir(os.path.join(train_dir, c))
                 if f.lower().endswith((".jpg", ".jpeg")))
  paths = paths[::max(1, len(paths) // bare_count)][:bare_count]  # Spread over the classes.
  if not paths:
    raise SystemExit(f"{train_dir}: no JPEGs")

  # Before the pipeline's child processes: the count loads two CLIP RN101 models.
  if _STEP_TFLOP.value:
    step_tflop, how = _STEP_TFLOP.value, "given by --step_tflop"
  elif small:
    step_tflop, how = RECORDED_STEP_TFLOP, "recorded in benchmarks/README.md (--small)"
  else:
    start = time.perf_counter()
    step_tflop = count_step_tflop()
    how = (f"counted by benchmarks/accelerator.py's method in {time.perf_counter() - start:.0f} "
           "s (XLA's count of the step lowered for the CPU)")

  bare = {"train": [bare_train(paths)], "eval": [bare_eval(paths)]}
  rows = {}
  for train in (True, False):
    for w in workers:
      rows[(train, w)] = time_pipeline(source, batch, train=train, workers=w, steps=steps)
  bare["train"].append(bare_train(paths))
  bare["eval"].append(bare_eval(paths))

  print(f"\nbare loop, 1 process 1 thread, {len(paths)} images, {SIZE} px (before / after the "
        "pipeline runs; the faster is the reference):")
  print(f"{'view':<6} {'before':>8} {'after':>8}  views/s")
  for name, (before, after) in bare.items():
    print(f"{name:<6} {before:>8.0f} {after:>8.0f}")
  reference = {"train": max(bare["train"]), "eval": max(bare["eval"])}

  print(f"\nrrjax.data.batches, batch {batch}, uint8 [{batch}, {SIZE}, {SIZE}, 3] checked; "
        f"{steps} timed batches after the first round of W:")
  print(f"{'view':<6} {'workers':>7} {'start-up s':>10} {'timed':>6} {'views/s':>9} "
        f"{'per core':>9} {'x bare':>7}")
  for (train, w), row in rows.items():
    kind = "train" if train else "eval"
    per_core = row["views_per_s"] / w
    print(f"{kind:<6} {w:>7} {row['startup']:>10.2f} {row['timed']:>6} "
          f"{row['views_per_s']:>9.0f} {per_core:>9.0f} {per_core / reference[kind]:>7.2f}")
  per_core = rows[(True, workers[0])]["views_per_s"] / workers[0]
  ratio = per_core / reference["train"]

  gflop_per_image = step_tflop * 1e3 / PAPER_STEP["batch"]
  rate = ASSUMED_MFU * H100_BF16_TFLOPS * 1e3 / gflop_per_image
  print(f"\naccelerator rate, ASSUMED (no accelerator measured here): the student step at the "
        f"paper's shapes ({PAPER_STEP['student']} student, {PAPER_STEP['teacher']} teacher, "
        f"{PAPER_STEP['resolution']} px, batch {PAPER_STEP['batch']}, {PAPER_STEP['corruption']}"
        f"), {step_tflop:.2f} TFLOP per step, {how}; = {gflop_per_image:.1f} GFLOP per image; "
        f"at {100 * ASSUMED_MFU:.0f}% MFU of one H100 ({H100_BF16_TFLOPS:.0f} dense bf16 "
        f"TFLOP/s): {rate:.0f} images/s")
  h200 = recorded_h200()
  print(f"for reference, recorded in benchmarks/README.md (one H200, another session, not "
        f"measured here): {h200}")
  print(f"host cores needed at {rate:.0f} images/s: {rate / per_core:.1f} (at {per_core:.0f} "
        f"training views/s per core, the {workers[0]}-worker run)")
  recorded = re.match(r"(\d+) img/s", h200)
  if recorded:
    print(f"  at the recorded H200 rate, {recorded.group(1)} images/s: "
          f"{int(recorded.group(1)) / per_core:.1f}")
  print(f"load average after: {os.getloadavg()[0]:.2f}")
  print(f"result: train_views_per_core {per_core:.0f} ({ratio:.2f}x bare loop; goal "
        f"{GOAL_VIEWS_PER_CORE} and {GOAL_RATIO}x)")


if __name__ == "__main__":
  app.run(main)
