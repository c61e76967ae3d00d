r"""Writes examples of a dataset split as PNG files, to look at or to feed `rrjax.predict`.

  python -m rrjax.data.write_images --data=fashion_mnist_local --split='test[:5]' \
      --out=runs/demo_images

Each example becomes `<out>/<index>_<class>.png` (the class name with every character other
than letters, digits, '-' and '.' made '_'), its stored pixels unchanged; an image folder's
files are copied as they are (`.jpg` for a JPEG): what the run's eval view reads.
"""

import io
import os
import re

import numpy as np
from absl import app, flags
from PIL import Image

from rrjax import errors

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined when it runs (importing the module defines none)."""
  flags.DEFINE_string("data", "fashion_mnist_local", "Dataset name (`config.data.name`).")
  flags.DEFINE_string("split", "test[:5]", "Split, with an optional slice.")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir, if the dataset needs one.")
  flags.DEFINE_string("out", None, "Directory to write the PNG files to.")


def write(data: str, split: str, out: str, data_dir: str | None = None) -> list[str]:
  """Writes every example of `split` of `data` to `out`; returns the paths."""
  from rrjax import data as data_lib  # pylint: disable=import-outside-toplevel
  source = data_lib.load(data, split, data_dir=data_dir)
  images, labels = source.read(np.arange(len(source)))
  os.makedirs(out, exist_ok=True)
  paths = []
  for i, (image, label) in enumerate(zip(images, labels)):
    name = re.sub(r"[^A-Za-z0-9.-]", "_", source.class_names[int(label)])
    ext = "png"
    if isinstance(image, bytes):
      with Image.open(io.BytesIO(image)) as pil:
        ext = {"JPEG": "jpg"}.get(pil.format, (pil.format or "png").lower())
    paths.append(os.path.join(out, f"{i}_{name}.{ext}"))
    if isinstance(image, bytes):
      with open(paths[-1], "wb") as f:
        f.write(image)
    else:
      Image.fromarray(np.asarray(image)).save(paths[-1])
  return paths


def main(argv):
  del argv
  if not FLAGS.out:
    errors.exit_with("rrjax.data.write_images", "--out is required")
  try:
    paths = write(FLAGS.data, FLAGS.split, FLAGS.out, FLAGS.data_dir)
  except errors.UserError as e:
    errors.exit_with("rrjax.data.write_images", str(e))
  print(f"wrote {len(paths)} images to {FLAGS.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
