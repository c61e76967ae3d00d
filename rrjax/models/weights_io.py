"""Flax variables to and from `.npz` files, with a structural check on load.

A file holds one array per leaf, keyed by the leaf's path joined with '/', e.g.
`params/layer1_0/conv1/kernel` or `batch_stats/bn1/mean`. Loading checks the file against the
variables the module expects, so weights of another architecture fail loudly instead of being
silently broadcast or half-used.
"""

import os
import zipfile

import jax
import numpy as np
from flax import traverse_util

from rrjax import errors

_SEP = "/"


def flatten(variables) -> dict[str, object]:
  """`{"params": {"a": {"b": x}}}` -> `{"params/a/b": x}`."""
  return traverse_util.flatten_dict(variables, sep=_SEP)


def unflatten(flat: dict[str, object]) -> dict:
  """Inverse of `flatten`."""
  return traverse_util.unflatten_dict(flat, sep=_SEP)


def save_npz(path: str | os.PathLike, variables) -> None:
  """Writes every leaf of `variables` (arrays, any nesting of dicts) to an uncompressed `.npz`."""
  flat = {key: np.asarray(jax.device_get(value)) for key, value in flatten(variables).items()}
  np.savez(path, **flat)


def load_npz(path: str | os.PathLike, reference_variables) -> dict:
  """Reads `.npz` variables and checks them against the module's expected ones.

  Args:
    path: a file written by `save_npz`.
    reference_variables: variables of the target module, e.g. from `module.init` or
      `jax.eval_shape(module.init, ...)`; only each leaf's `shape` and `dtype` are used.

  Returns:
    Nested dict of numpy arrays with the structure of `reference_variables`, each leaf cast to
    the reference dtype.

  Raises:
    ValueError: naming the first key (in sorted order) that is missing from the file, not expected
      by the module, or of the wrong shape.
  """
  reference = flatten(reference_variables)
  try:
    with np.load(path, allow_pickle=False) as npz:
      stored = {key: npz[key] for key in npz.files}
  except OSError as e:
    raise errors.UserError(f"{os.fspath(path)}: cannot read the weights file "
                           f"({e.strerror or e})") from None
  except (ValueError, EOFError, zipfile.BadZipFile) as e:
    raise errors.UserError(f"{os.fspath(path)}: not an .npz file of arrays ({e})") from None
  for key in sorted(set(reference) | set(stored)):
    if key not in stored:
      raise errors.UserError(f"{os.fspath(path)}: missing variable {key!r} (shape "
                             f"{tuple(reference[key].shape)}); wrong architecture?")
    if key not in reference:
      raise errors.UserError(f"{os.fspath(path)}: unexpected variable {key!r} (shape "
                             f"{stored[key].shape}) not in the module; wrong architecture?")
    if stored[key].shape != tuple(reference[key].shape):
      raise errors.UserError(f"{os.fspath(path)}: variable {key!r} has shape {stored[key].shape}, "
                             f"the module expects {tuple(reference[key].shape)}; wrong "
                             "architecture?")
  return unflatten({key: stored[key].astype(reference[key].dtype) for key in reference})


def match_state_dict(state: dict, shapes: dict, torch_key, to_flax, *, source: str, arch: str,
                     prefix: str = "", adapt=None) -> dict:
  """Maps PyTorch tensors onto Flax variables by name, with a completeness and shape check.

  Args:
    state: `{torch_name: array}` without `prefix`.
    shapes: `{flax_path: shape}` of every variable the module expects.
    torch_key: `flax_path -> torch_name`.
    to_flax: `(array, leaf_name) -> array` in Flax layout (e.g. OIHW -> HWIO).
    source, arch: name the file and the architecture in errors.
    prefix: prepended to tensor names in errors (e.g. "visual.").
    adapt: optional `(torch_name, value, expected_shape) -> value`, applied before the shape
      check (e.g. resizing a positional embedding to another resolution).

  Returns:
    The nested Flax variables.

  Raises:
    ValueError: naming the first tensor (in sorted order) that is missing, not part of `arch`,
      or of the wrong shape: the sign of weights of another architecture.
  """
  expected = {torch_key(path): path for path in shapes}
  flat = {}
  for key in sorted(set(expected) | set(state)):
    name = prefix + key
    if key not in state:
      path = expected[key]
      raise errors.UserError(f"{source}: missing tensor {name!r} for Flax variable "
                             f"{'/'.join(path)} {tuple(shapes[path])}; weights of another "
                             "architecture?")
    if key not in expected:
      raise errors.UserError(f"{source}: unexpected tensor {name!r} {tuple(state[key].shape)}, "
                             f"not part of {arch}; weights of another architecture?")
    path = expected[key]
    value = to_flax(state[key], path[-1])
    if adapt is not None:
      value = adapt(key, value, tuple(shapes[path]))
    if value.shape != tuple(shapes[path]):
      raise errors.UserError(f"{source}: tensor {name!r} has shape {tuple(state[key].shape)}, "
                             f"{value.shape} in Flax layout, but {'/'.join(path)} expects "
                             f"{tuple(shapes[path])}; weights of another architecture?")
    flat[path] = value
  return traverse_util.unflatten_dict(flat)


def select_tensors(state: dict, keep, *, source: str) -> dict:
  """Tensors of a CLIP-style state dict whose unwrapped names pass `keep(name) -> str | None`.

  Unwraps open_clip's training checkpoints (`{"state_dict": ...}`, read flat as
  `state_dict.<name>`) and DistributedDataParallel's `module.` prefix, then keeps each tensor
  under the name `keep` returns for it (None drops it).

  Raises:
    ValueError: naming `source` when a name appears both with and without `module.`.
  """
  nested = "state_dict."
  if any(key.startswith(nested) for key in state):
    state = {key[len(nested):]: value for key, value in state.items() if key.startswith(nested)}
  out = {}
  for key, value in state.items():
    name = key[len("module."):] if key.startswith("module.") else key
    kept = keep(name)
    if kept is None:
      continue
    if kept in out:
      raise errors.UserError(f"{source}: tensor {name!r} appears twice (with and without "
                             "'module.')")
    out[kept] = value
  return out
