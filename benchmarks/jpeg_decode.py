r"""Which decoding wins: full decode, reduced-size (DCT-scaled) decode, or stored smaller JPEGs.

    python benchmarks/jpeg_decode.py            # ~1 minute on one core

For generated photo-like JPEGs (`rrjax.data.synthetic`'s content generator is not reused: these
are plain gradients plus texture, quality 90) of two sizes, ImageNet-like (about 400 x 350) and
large (1600 x 1200), one thread times 224 px views per second:

* `full`: decode the whole file (`rrjax.data.views.decode`), then the view from the pixels;
* `reduced`: the view from the file's bytes (`rrjax.data.views`), which decodes at 1/2, 1/4 or
  1/8 DCT scale when the crop box keeps at least 224 decoded pixels a side;
* `stored 256`: the view from the bytes of a copy resized once to a short side of 256 px and
  re-encoded (quality 90): what a one-time preparation of the dataset (an ArrayRecord of
  smaller JPEGs) would give the pipeline; no such preparation exists in rrjax.

Training views (random resized crop, scale 0.08 to 1) and eval views (resize 256, centre 224)
each. Ends with `result: reduced_decode_speedup <x> (large JPEGs, training views; no goal set)`.
"""

import io
import os
import time

import numpy as np
from PIL import Image

from rrjax.data import views

SIZE = 224
COUNT = 60


def photo(height: int, width: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width] / max(height, width)
  phase = rng.uniform(0, 6, 3)
  base = np.stack([np.sin(6 * x + phase[0]), np.cos(5 * y + phase[1]),
                   np.sin(4 * (x + y) + phase[2])], -1)
  image = 127 + 90 * base + rng.normal(0, 10, (height, width, 3))
  return np.clip(image, 0, 255).astype(np.uint8)


def encode(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=90)
  return buffer.getvalue()


def stored_256(data: bytes) -> bytes:
  """The file resized once to a short side of 256 px, re-encoded."""
  with Image.open(io.BytesIO(data)) as image:
    width, height = image.size
    scale = 256 / min(width, height)
    small = image.convert("RGB").resize((round(width * scale), round(height * scale)),
                                        Image.Resampling.BILINEAR)
  return encode(np.asarray(small))


def rate(files, view) -> float:
  start = time.perf_counter()
  for i, data in enumerate(files):
    out = view(data, np.random.default_rng(i))
    assert out.shape == (SIZE, SIZE, 3)
  return len(files) / (time.perf_counter() - start)


def main():
  print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}; command: "
        "python benchmarks/jpeg_decode.py (one thread)")
  train = lambda image, rng: views.train_view(image, SIZE, rng)
  evaluate = lambda image, rng: views.eval_view(image, SIZE)
  results = {}
  print(f"{'images':<22} {'view':<6} {'full':>7} {'reduced':>8} {'stored 256':>11}  views/s")
  for label, (height, width) in (("ImageNet-like 350x400", (350, 400)),
                                 ("large 1200x1600", (1200, 1600))):
    files = [encode(photo(height, width, i)) for i in range(COUNT)]
    small = [stored_256(f) for f in files]
    for name, view in (("train", train), ("eval", evaluate)):
      full = rate(files, lambda d, rng, view=view: view(views.decode(d), rng))
      reduced = rate(files, view)
      stored = rate(small, view)
      results[label, name] = (full, reduced, stored)
      print(f"{label:<22} {name:<6} {full:>7.0f} {reduced:>8.0f} {stored:>11.0f}")
  full, reduced, _ = results["large 1200x1600", "train"]
  print(f"load average after: {os.getloadavg()[0]:.2f}")
  print(f"result: reduced_decode_speedup {reduced / full:.2f}x (large JPEGs, training views; "
        "no goal set)")


if __name__ == "__main__":
  main()
