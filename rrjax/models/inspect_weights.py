"""Checks a weights file before a run uses it: reads it as data and lists what it holds.

    python -m rrjax.models.inspect_weights ckpt.pth                  # tensors of a .pt/.pth
    python -m rrjax.models.inspect_weights ckpt.pt --key state_dict  # one sub-dict of it
    python -m rrjax.models.inspect_weights RN50.pt --model clip_rn50 # as a run would load it
    python -m rrjax.models.inspect_weights hf_dir --model clip_vit_b16

Without `--model` the file goes through `rrjax.models.torch_reader` (one line per tensor: name,
dtype, shape); with it, through the encoder's own loader (`rrjax.models.load(NAME,
weights=PATH)`, as `config.teacher.weights` does), and the variables are listed. A file the
loaders refuse (malformed, hostile, of another architecture) prints one line,
`<prog>: error: <the file and the problem>`, and exits with status 2.
"""

import argparse
import os
import sys

import numpy as np

from rrjax import errors


def _lines_of_reader(path: str, key: str | None, max_bytes: int | None) -> list[str]:
  from rrjax.models import torch_reader  # pylint: disable=import-outside-toplevel
  try:
    tensors = torch_reader.read(path, key=key, max_bytes=max_bytes)
  except KeyError as e:
    raise errors.UserError(f"{path}: {e.args[0] if e.args else e}") from None
  lines = [f"{name} {value.dtype} {tuple(value.shape)}" for name, value in tensors.items()]
  total = sum(value.size for value in tensors.values())
  return lines + [f"{len(tensors)} tensors, {total} elements"]


def _lines_of_model(path: str, name: str) -> list[str]:
  import jax  # pylint: disable=import-outside-toplevel
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  from transformers.utils import logging as hf_logging  # pylint: disable=import-outside-toplevel
  from rrjax import models  # pylint: disable=import-outside-toplevel
  hf_logging.set_verbosity_error()  # its deprecation notices would bury the one-line verdict
  _, variables = models.load(name, pretrained=True, weights=path)
  flat = traverse_util.flatten_dict(jax.device_get(variables), sep="/")
  lines = [f"{key} {np.asarray(value).dtype} {tuple(np.shape(value))}"
           for key, value in sorted(flat.items())]
  total = sum(int(np.size(value)) for value in flat.values())
  return lines + [f"{name}: {len(flat)} variables, {total} elements from {path}"]


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m rrjax.models.inspect_weights",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("path", help="a .pt/.pth/.safetensors/.npz file or an HF directory")
  parser.add_argument("--model", help="load as this encoder (rrjax.models.names())")
  parser.add_argument("--key", help="dotted path of the sub-object holding the tensors")
  parser.add_argument("--max-bytes", type=int, default=None,
                      help="what reading may allocate (default: 4x the file + 64 MiB)")
  args = parser.parse_args(argv)
  try:
    if args.model:
      if args.key:
        raise errors.UserError("--key applies to the raw reader, not with --model")
      lines = _lines_of_model(args.path, args.model)
    else:
      lines = _lines_of_reader(os.fspath(args.path), args.key, args.max_bytes)
  except errors.UserError as e:
    parser.exit(2, f"{parser.prog}: error: {errors.one_line(str(e))}\n")
  sys.stdout.write("\n".join(lines) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
