r"""Classifies images with an exported robust encoder: the top-k labels with probabilities.

  python -m rrjax.predict --encoder=exports/mask90 shirt.png boot.jpg
  python -m rrjax.predict --encoder=exports/mask90 --corrupt="mask(0.9)" --seed=0 shirt.png

With `--corrupt`, each image is first corrupted by the operator (at the encoder's measurement
size, as in training), the way Figure 1 of the paper reads: what the robust encoder still sees
in a 90%-masked image. The corruptions are the run's scored draw `--draw` of seed `--seed`: the
i-th image of the command is corrupted as the run corrupted the i-th image of its test split
(`rrjax.encoder`). `--fraction` picks the probe fitted with that label fraction (default:
the largest). `--save_corrupted=DIR` writes the corrupted inputs as PNGs to look at.

Output, one block per image:

  shirt.png  [mask(0.9), seed 0, draw 0]
    1. Shirt        0.71
    2. T-shirt/top  0.18
    ...

Exit status 2 with one line for a user error (a missing or unreadable image, a directory that is
no export, a bad operator spec).
"""

import os

from absl import app, flags, logging

from rrjax import errors

_MAX_IMAGE_BYTES = 256 << 20

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined when it runs (importing the module defines none)."""
  flags.DEFINE_string("encoder", None, "An export directory of `python -m rrjax.export`.")
  flags.DEFINE_integer("top_k", 5, "Labels to print per image.")
  flags.DEFINE_string("corrupt", None, "Operator spec applied first, e.g. 'mask(0.9)'.")
  flags.DEFINE_integer("seed", 0, "The run seed whose scored corruption draws to use.")
  flags.DEFINE_integer("draw", 0, "Which of its scored draws (0: the first).")
  flags.DEFINE_float("fraction", None, "The probe's label fraction (default: the largest).")
  flags.DEFINE_string("save_corrupted", None,
                      "Directory to write the (corrupted) inputs to.")


def read_images(paths: list[str]) -> list[bytes]:
  """The files' bytes (decoded by the encoder's eval view).

  Raises:
    rrjax.errors.UserError: naming a path that is missing, no regular file, or too large.
  """
  out = []
  for path in paths:
    try:
      if not os.path.isfile(path):
        raise errors.UserError(f"{path}: no such image file")
      if os.path.getsize(path) > _MAX_IMAGE_BYTES:
        raise errors.UserError(f"{path}: larger than {_MAX_IMAGE_BYTES >> 20} MiB")
      with open(path, "rb") as f:
        out.append(f.read())
    except OSError as e:
      raise errors.UserError(f"{path}: cannot read it ({e.strerror or e})") from None
  return out


def _decoded(enc, paths: list[str]):
  """The images of `paths` as the encoder's input batch, a failing file named."""
  batch = []
  for path, data in zip(paths, read_images(paths)):
    try:
      batch.append(enc.images([data])[0])
    except errors.UserError as e:
      raise errors.UserError(f"{path}: {str(e).split(': ', 1)[-1]}") from None
  import numpy as np  # pylint: disable=import-outside-toplevel
  return np.stack(batch)


def _save_corrupted(enc, images, directory: str, paths: list[str]) -> None:
  """Writes the encoder's inputs, corrupted as `classify` saw them, as PNGs."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  seen = (enc.corrupt(images, FLAGS.corrupt, seed=FLAGS.seed, draw=FLAGS.draw)
          if FLAGS.corrupt else images)
  seen = np.asarray(seen, np.float32) / (255.0 if seen.dtype == np.uint8 else 1.0)
  try:
    os.makedirs(directory, exist_ok=True)
    for path, image in zip(paths, seen):
      name = os.path.splitext(os.path.basename(path))[0] + ".png"
      Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(
          os.path.join(directory, name))
  except OSError as e:
    raise errors.UserError(f"--save_corrupted={directory}: cannot write there "
                           f"({e.strerror or e})") from None


def main(argv):
  paths = argv[1:]
  logging.set_verbosity(logging.WARNING)  # The answers are the output.
  if not FLAGS.encoder or not paths:
    errors.exit_with("rrjax.predict",
                     "usage: python -m rrjax.predict --encoder=DIR IMAGE... (see --help)")
  try:
    from rrjax import encoder as encoder_lib  # pylint: disable=import-outside-toplevel
    enc = encoder_lib.load_encoder(FLAGS.encoder)
    images = _decoded(enc, paths)
    ranked = enc.classify(images, top_k=FLAGS.top_k, corrupt=FLAGS.corrupt, seed=FLAGS.seed,
                          draw=FLAGS.draw, fraction=FLAGS.fraction)
    if FLAGS.save_corrupted:
      _save_corrupted(enc, images, FLAGS.save_corrupted, paths)
  except errors.UserError as e:
    errors.exit_with("rrjax.predict", str(e))
  width = max(len(name) for row in ranked for name, _ in row)
  how = (f"  [{FLAGS.corrupt}, seed {FLAGS.seed}, draw {FLAGS.draw}]" if FLAGS.corrupt
         else "  [clean]")
  for path, row in zip(paths, ranked):
    print(path + how)
    for rank, (name, prob) in enumerate(row, 1):
      print(f"  {rank:2d}. {name:<{width}}  {prob:.3f}")



if __name__ == "__main__":
  define_flags()
  app.run(main)
