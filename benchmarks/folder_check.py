r"""`configs/folder.py` at the demo's scale on a user-like folder: wall time and results.

  python benchmarks/folder_check.py --digits=runs/mnist_digits --out=runs/folder_check

Builds `<out>/images/<digit>/*` from the MNIST digits of `python -m rrjax.data.mnist_digits`
(`make digits` writes them): `--per_class` images of each digit (default 195: 1,950 images, of
which configs/folder.py trains on 72%, about 1,400), each resized to a random size from 20 to 96
px, saved as grey PNG, RGB JPEG or palette PNG at random, in one folder per class (no split
folders): the kind of folder a user brings. Then runs

  python -m rrjax.main --config=configs/folder.py:<out>/images --workdir=<out>/run

and prints its wall time and report. An existing run in `<out>/run` resumes (rerun with a fresh
--out to time it again).
"""

import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("digits", "runs/mnist_digits", "The MNIST digits image folder.")
flags.DEFINE_string("out", "runs/folder_check", "Where the folder and the run go.")
flags.DEFINE_integer("per_class", 195, "Images per digit.")
flags.DEFINE_integer("seed", 0, "Seeds the sizes and formats.")


def build(digits: str, out: str, per_class: int, seed: int) -> int:
  """Writes the user-like folder; returns its image count."""
  rng = np.random.default_rng(seed)
  count = 0
  for digit in sorted(os.listdir(os.path.join(digits, "train"))):
    source = os.path.join(digits, "train", digit)
    names = sorted(os.listdir(source))[:per_class]
    target = os.path.join(out, digit)
    os.makedirs(target, exist_ok=True)
    for i, name in enumerate(names):
      grey = Image.open(os.path.join(source, name)).convert("L")
      side = int(rng.integers(20, 97))
      image = grey.resize((side, side), Image.Resampling.BILINEAR)
      kind = int(rng.integers(3))
      if kind == 0:
        image.save(os.path.join(target, f"{i:04d}.png"))
      elif kind == 1:
        image.convert("RGB").save(os.path.join(target, f"{i:04d}.jpg"), quality=90)
      else:
        image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE).save(
            os.path.join(target, f"{i:04d}.png"))
      count += 1
  return count


def main(argv):
  del argv
  images = os.path.join(FLAGS.out, "images")
  if not os.path.isdir(images):
    print(f"built {images}: {build(FLAGS.digits, images, FLAGS.per_class, FLAGS.seed)} images")
  command = [sys.executable, "-m", "rrjax.main", f"--config=configs/folder.py:{images}",
             f"--workdir={os.path.join(FLAGS.out, 'run')}"]
  print(" ".join(command), flush=True)
  start = time.perf_counter()
  status = subprocess.call(command, cwd=ROOT)
  print(f"rc={status}, wall {time.perf_counter() - start:.0f} s, load average "
        f"{os.getloadavg()[0]:.2f}")
  report = os.path.join(FLAGS.out, "run", "report.md")
  if os.path.exists(report):
    print(open(report, encoding="utf-8").read())
  sys.exit(status)


if __name__ == "__main__":
  app.run(main)
