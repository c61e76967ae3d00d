r"""A synthetic ImageNet-like image folder: JPEG photos-alike of varied sizes, learnable classes.

    python -m rrjax.data.synthetic --out=/tmp/jpegs --train=10000 --test=1000 [--classes=10]
    root = write_imagefolder("/tmp/jpegs", num_train=10000, num_test=1000)
    source = rrjax.data.load("imagefolder:" + root, "train")   # native_size None: sizes vary

For measuring the input pipeline (benchmarks/input_pipeline.py) where ImageNet is not at hand:
what costs time there is reading, decoding and resizing JPEGs of ImageNet's sizes, so the
files are real baseline JPEGs (Pillow, quality 90, 4:2:0 chroma, like most of ImageNet's) of
about its mean size, and their content compresses like a photo's rather than like a flat colour
or like noise.

Layout (the `imagefolder:` loader's, `imagefolder.py`):

    <root>/train/class_<c>/train_<i>.jpg     i = 0 .. num_train - 1, c = i % num_classes
    <root>/test/class_<c>/test_<i>.jpg
    <root>/synthetic.json                     the parameters and totals, written last

* Size: height and width each uniform within +-25% of `mean_size` (height, width), drawn
  independently, so aspect ratios vary too (ImageNet's mean is about 400 x 350 landscape).
* Content: a smooth random colour field (a bicubic blow-up of a few random colours), random
  ellipses and polygons, a slight box blur, a grain texture of random strength (windows of one
  noise tile per folder) and the class's own sinusoidal grating (orientation and period by
  class) plus a colour cast (hue by class), so classes are learnable from crops.
  The default folder averages about 75 KB per image, 0.53 bytes per pixel (ImageNet's
  training JPEGs: about 110 KB, 0.6 to 0.8 bytes per pixel).
* Deterministic: image i of a split is a pure function of (seed, split, i) and the parameters,
  drawn from `np.random.default_rng([seed, split, i])`, whatever the number of workers: a seed
  gives the same bytes on every run with the same numpy, Pillow and libjpeg (the per-pixel
  arithmetic is IEEE basic operations only; the grating reads a cosine table rather than a
  vectorised `np.cos` whose last bit may differ between CPUs), and another seed other images.
* Idempotent and never half-written: the folder is generated in a temporary sibling
  directory, `synthetic.json` last, and renamed to `root` when complete. A `root` whose
  `synthetic.json` records the same parameters and which holds exactly the expected files is
  returned as it is; one written by this module with other parameters (it has a
  `synthetic.json`) is replaced; any other non-empty `root` is an error, never overwritten.
* Parallel: threads (`workers`, default all cores) render and write the images; numpy and
  Pillow release the GIL for the heavy parts. About 5 ms per image per core; measured on 2
  cores shared with other jobs (load 3.8 to 4): 1,000 images in 4.2 s, 10,000 in 50 s.
"""

import colorsys
import concurrent.futures
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw, ImageFilter

from rrjax import errors

MANIFEST = "synthetic.json"
SPLITS = ("train", "test")
# Bumped whenever the images change for the same parameters, so old folders are regenerated.
FORMAT_VERSION = 1
# Each side is drawn uniformly in [1 - SIZE_SPREAD, 1 + SIZE_SPREAD] x its mean.
SIZE_SPREAD = 0.25
_MIN_SIDE = 16
# One period of the class grating, as a table (see `render`).
_TABLE_SIZE = 1024
_COS_TABLE = np.array([math.cos(2 * math.pi * k / _TABLE_SIZE) for k in range(_TABLE_SIZE)],
                      np.float32)


def write_imagefolder(root: str, *, num_train: int, num_test: int, num_classes: int = 10,
                      seed: int = 0, mean_size: tuple[int, int] = (350, 400),
                      quality: int = 90, workers: int | None = None) -> str:
  """Writes (or finds complete) the synthetic image folder at `root` (module docstring).

  Args:
    root: the folder; created, or replaced when a previous `write_imagefolder` left other
      parameters there.
    num_train, num_test: images in `train/` and `test/`; class c gets images i = c mod
      `num_classes`, so classes differ in size by one at most.
    num_classes: class folders `class_<c>`, c = 0 .. num_classes - 1.
    seed: non-negative int; the images are a pure function of it and the other parameters.
    mean_size: (height, width) around which each image's sides are drawn (+-25%).
    quality: JPEG quality (Pillow's scale, 1 to 95).
    workers: threads rendering and writing; default `os.cpu_count()`. Does not change the
      files.

  Returns:
    `root`, as given.

  Raises:
    errors.UserError: bad parameters, or a non-empty `root` this module did not write.
  """
  params = _params(num_train, num_test, num_classes, seed, mean_size, quality)
  if _is_complete(root, params):
    return root
  _check_replaceable(root)
  parent = os.path.dirname(os.path.abspath(root))
  os.makedirs(parent, exist_ok=True)
  start = time.perf_counter()
  # Written beside `root` and renamed when complete: an interrupted run leaves no folder that
  # looks like a finished one (and the temporary sibling is removed on exceptions).
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(root))}.")
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's is 0700; the folder gets the usual permissions.
  try:
    stats = _generate(tmp, params, workers or os.cpu_count() or 1)
    manifest = {**params, **stats, "seconds": round(time.perf_counter() - start, 2)}
    with open(os.path.join(tmp, MANIFEST), "w") as f:
      json.dump(manifest, f, indent=1)
    if os.path.isdir(root) and os.listdir(root):
      shutil.rmtree(root)  # Ours (checked above), with other parameters or files.
    os.replace(tmp, root)  # rename(2) replaces an empty directory too.
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return root


def is_complete(root: str, *, num_train: int, num_test: int, num_classes: int = 10,
                seed: int = 0, mean_size: tuple[int, int] = (350, 400),
                quality: int = 90) -> bool:
  """Whether `root` holds exactly what `write_imagefolder` with these arguments writes."""
  return _is_complete(root, _params(num_train, num_test, num_classes, seed, mean_size, quality))


def _is_complete(root: str, params: dict) -> bool:
  manifest = read_manifest(root)
  if manifest is None or {k: manifest.get(k) for k in params} != params:
    return False
  expected = _layout(params["num_train"], params["num_test"], params["num_classes"])
  for split in SPLITS:
    split_dir = os.path.join(root, split)
    want = {}
    for relative, _, _ in expected[split]:
      class_name, name = os.path.split(relative)
      want.setdefault(class_name, set()).add(name)
    try:
      have = {c: set(os.listdir(os.path.join(split_dir, c))) for c in os.listdir(split_dir)}
    except (FileNotFoundError, NotADirectoryError):
      have = {}  # No folder: right only for an empty split.
    if have != want:
      return False
  return True


def read_manifest(root: str) -> dict | None:
  """The `synthetic.json` of `root`: parameters, file count and bytes; None if absent."""
  try:
    with open(os.path.join(root, MANIFEST)) as f:
      manifest = json.load(f)
  except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
    return None
  return manifest if isinstance(manifest, dict) else None


def image_shape(rng: np.random.Generator, mean_size: Sequence[int]) -> tuple[int, int]:
  """(height, width), each uniform within +-25% of `mean_size`, at least 16."""
  return tuple(max(_MIN_SIDE, int(round(m * rng.uniform(1 - SIZE_SPREAD, 1 + SIZE_SPREAD))))
               for m in mean_size)


def texture_tile(seed: int, mean_size: Sequence[int]) -> np.ndarray:
  """float32 `[2 * max_h, 2 * max_w]` grain, about unit variance, shared by a folder's images.

  A coarse part (noise at quarter resolution, bilinearly enlarged) and a fine part (per-pixel
  noise): images take windows of it at random offsets, which is cheaper than fresh noise.
  """
  rng = np.random.default_rng([seed, len(SPLITS)])
  height, width = (2 * int(math.ceil(m * (1 + SIZE_SPREAD))) for m in mean_size)
  coarse = rng.standard_normal((-(-height // 4), -(-width // 4)), np.float32)
  coarse = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))
  fine = rng.standard_normal((height, width), np.float32)
  return 0.7 * coarse + 0.9 * fine


def render(rng: np.random.Generator, label: int, num_classes: int, mean_size: Sequence[int],
           texture: np.ndarray) -> np.ndarray:
  """One image of class `label`: uint8 `[h, w, 3]`, h and w from `image_shape`.

  Args:
    rng: the image's generator (everything random about it comes from here).
    label: its class in [0, num_classes).
    num_classes: the number of classes (spreads their hues and grating orientations).
    mean_size: (height, width) around which the size is drawn.
    texture: `texture_tile(seed, mean_size)`.
  """
  height, width = image_shape(rng, mean_size)
  cast = np.array(colorsys.hsv_to_rgb(label / num_classes, 0.6, 0.8)) * 255
  # Smooth background: a few random colours, leaning to the class's, blown up bicubically.
  grid = 0.6 * rng.uniform(0, 255, (rng.integers(2, 6), rng.integers(2, 6), 3)) + 0.4 * cast
  canvas = Image.fromarray(grid.astype(np.uint8)).resize((width, height),
                                                          Image.Resampling.BICUBIC)
  draw = ImageDraw.Draw(canvas)
  for _ in range(rng.integers(4, 30)):
    # Radii log-uniform from 4 px to a third of the image: a few large shapes, many small ones.
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    rx = math.exp(rng.uniform(math.log(4), math.log(max(4, width / 3))))
    ry = math.exp(rng.uniform(math.log(4), math.log(max(4, height / 3))))
    fill = tuple(int(c) for c in 0.5 * rng.uniform(0, 255, 3) + 0.5 * cast)
    if rng.random() < 0.5:
      draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)
    else:
      angles = np.sort(rng.uniform(0, 2 * math.pi, rng.integers(3, 7)))
      draw.polygon([(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles], fill=fill)
  canvas = canvas.filter(ImageFilter.BoxBlur(rng.uniform(0.4, 1.0)))  # Soft edges; cheap.
  # The class's grating: orientation and period by class, random phase; read from a cosine
  # table so that the pixels never depend on a platform's `cos`.
  angle = math.pi * label / num_classes
  period = 6 + 3 * (label % 5)
  step = _TABLE_SIZE / period
  kx, ky = np.float32(step * math.cos(angle)), np.float32(step * math.sin(angle))
  offset = np.float32(rng.uniform(0, _TABLE_SIZE) + _TABLE_SIZE * (1 + width // period))
  phase = (kx * np.arange(width, dtype=np.float32)[None, :] + offset
           + ky * np.arange(height, dtype=np.float32)[:, None])
  grating = _COS_TABLE[phase.astype(np.int32) & (_TABLE_SIZE - 1)]
  top = rng.integers(0, texture.shape[0] - height + 1)
  left = rng.integers(0, texture.shape[1] - width + 1)
  grain = texture[top:top + height, left:left + width]
  shade = np.float32(15) * grating + np.float32(rng.uniform(10, 28)) * grain
  pixels = np.asarray(canvas, np.float32) + shade[..., None]
  return np.clip(pixels, 0, 255).astype(np.uint8)


def _params(num_train, num_test, num_classes, seed, mean_size, quality) -> dict:
  """The manifest's parameters, validated; what `is_complete` compares."""
  ints = dict(num_train=num_train, num_test=num_test, num_classes=num_classes, seed=seed,
              quality=quality)
  for name, value in ints.items():
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
      raise errors.UserError(f"{name} must be an int, got {value!r}")
  if num_train < 0 or num_test < 0 or num_train + num_test == 0:
    raise errors.UserError(f"need num_train, num_test >= 0, not both 0; got {num_train}, "
                           f"{num_test}")
  if num_classes < 1 or seed < 0 or not 1 <= quality <= 95:
    raise errors.UserError(f"need num_classes >= 1, seed >= 0 and 1 <= quality <= 95; got "
                           f"{num_classes}, {seed}, {quality}")
  if (len(mean_size) != 2 or
      not all(isinstance(m, (int, np.integer)) and m >= _MIN_SIDE for m in mean_size)):
    raise errors.UserError(f"mean_size must be (height, width) ints >= {_MIN_SIDE}, got "
                           f"{mean_size!r}")
  return {"generator": "rrjax.data.synthetic", "format_version": FORMAT_VERSION,
          **{k: int(v) for k, v in ints.items()}, "mean_size": [int(m) for m in mean_size]}


def _layout(num_train: int, num_test: int, num_classes: int) -> dict[str, list]:
  """`{split: [(relative path, index, label)]}`: image i of a split has label i % classes."""
  digits = max(2, len(str(num_classes - 1)))
  layout = {}
  for split, count in zip(SPLITS, (num_train, num_test)):
    layout[split] = [
        (os.path.join(f"class_{i % num_classes:0{digits}d}", f"{split}_{i:07d}.jpg"), i,
         i % num_classes) for i in range(count)]
  return layout


def _check_replaceable(root: str) -> None:
  if not os.path.exists(root):
    return
  if not os.path.isdir(root):
    raise errors.UserError(f"{root} exists and is not a directory")
  if os.listdir(root) and read_manifest(root) is None:
    raise errors.UserError(f"{root} is not empty and has no {MANIFEST}: not a synthetic folder "
                           "this module wrote, so it is left alone; pick another directory")


def _generate(out: str, params: dict, workers: int) -> dict:
  """Renders and writes every image under `out`; returns totals for the manifest."""
  seed, mean_size = params["seed"], params["mean_size"]
  texture = texture_tile(seed, mean_size)
  jobs = []
  for split_id, (split, items) in enumerate(_layout(
      params["num_train"], params["num_test"], params["num_classes"]).items()):
    for class_index in range(min(params["num_classes"], len(items))):
      os.makedirs(os.path.dirname(os.path.join(out, split, items[class_index][0])))
    jobs += [(os.path.join(out, split, relative), split_id, i, label)
             for relative, i, label in items]

  def write(chunk):
    sizes = []
    for path, split_id, index, label in chunk:
      rng = np.random.default_rng([seed, split_id, index])
      pixels = render(rng, label, params["num_classes"], mean_size, texture)
      # Baseline, not optimised, 4:2:0: the usual camera/ImageNet JPEG; fixed for equal bytes.
      Image.fromarray(pixels).save(path, "JPEG", quality=params["quality"], subsampling="4:2:0",
                                   optimize=False, progressive=False)
      sizes.append((*pixels.shape[:2], os.path.getsize(path)))
    return sizes

  chunks = [jobs[k:k + 64] for k in range(0, len(jobs), 64)]
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    sizes = np.array([s for part in pool.map(write, chunks) for s in part], np.int64)
  return {"files": len(jobs), "bytes": int(sizes[:, 2].sum()),
          "height_range": [int(sizes[:, 0].min()), int(sizes[:, 0].max())],
          "width_range": [int(sizes[:, 1].min()), int(sizes[:, 1].max())]}


def _define_flags() -> dict:
  """The command line's flags; defined only when run as a program, so that importing this
  module defines no flags."""
  return {
      "out": flags.DEFINE_string("out", None, "Directory of the image folder to write."),
      "train": flags.DEFINE_integer("train", None, "Images in train/."),
      "test": flags.DEFINE_integer("test", None, "Images in test/."),
      "classes": flags.DEFINE_integer("classes", 10, "Class folders."),
      "seed": flags.DEFINE_integer("seed", 0, "Seed of the images."),
      "size": flags.DEFINE_list("size", ["350", "400"], "Mean height,width of the images."),
      "quality": flags.DEFINE_integer("quality", 90, "JPEG quality."),
      "workers": flags.DEFINE_integer("workers", None, "Threads (default: all cores)."),
  }


def main(values: dict) -> None:
  """Writes the folder the flags describe and prints what is there."""
  root = values["out"].value
  kwargs = dict(num_train=values["train"].value, num_test=values["test"].value,
                num_classes=values["classes"].value, seed=values["seed"].value,
                mean_size=tuple(int(s) for s in values["size"].value),
                quality=values["quality"].value)
  reused = is_complete(root, **kwargs)
  start = time.perf_counter()
  write_imagefolder(root, **kwargs, workers=values["workers"].value)
  seconds = time.perf_counter() - start
  m = read_manifest(root)
  what = "already complete, nothing written" if reused else f"wrote it in {seconds:.1f} s"
  print(f"{root}: {what}; {m['num_train']} train + {m['num_test']} test JPEGs (quality "
        f"{m['quality']}), {m['num_classes']} classes, seed {m['seed']}; heights "
        f"{m['height_range'][0]}..{m['height_range'][1]}, widths {m['width_range'][0]}.."
        f"{m['width_range'][1]}; {m['bytes'] / 2**20:.1f} MiB, "
        f"{m['bytes'] / m['files'] / 1e3:.0f} KB per image")


if __name__ == "__main__":
  _values = _define_flags()
  flags.mark_flags_as_required(["out", "train", "test"])
  app.run(lambda argv: main(_values))
