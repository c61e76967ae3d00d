"""Flax variables to and from `.npz` files, with a structural check on load.

A file holds one array per leaf, keyed by the leaf's path joined with '/', e.g.
`params/layer1_0/conv1/kernel` or `batch_stats/bn1/mean`. Loading checks the file against the
variables the module expects, so weights of another architecture fail loudly instead of being
silently broadcast or half-used.
"""

import json
import os
import stat
import zipfile
import zlib

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
  _check_npz_sizes(path)
  try:
    with np.load(path, allow_pickle=False) as npz:
      stored = {key: npz[key] for key in npz.files}
  except OSError as e:
    raise errors.UserError(f"{os.fspath(path)}: cannot read the weights file "
                           f"({e.strerror or e})") from None
  except (ValueError, EOFError, zipfile.BadZipFile, MemoryError, OverflowError,
          zlib.error) as e:
    raise errors.UserError(f"{os.fspath(path)}: not an .npz file of arrays "
                           f"({errors.one_line(f'{type(e).__name__}: {e}', 160)})") from None
  return _matched(os.fspath(path), stored, reference)


def _matched(path: str, stored: dict, reference: dict) -> dict:
  """`stored` `{flat key: array}` as the nested variables of `reference` `{flat key: leaf}`,
  each leaf cast to the reference dtype, after checking every key, dtype kind and shape."""
  for key in sorted(set(reference) | set(stored)):
    if key in stored and (not isinstance(stored[key], np.ndarray)
                          or (stored[key].dtype.kind not in "biuf"
                              and stored[key].dtype.name != "bfloat16")):
      raise errors.UserError(f"{path}: variable {errors.quote(key)} is not an array "
                             "of numbers")
    if key not in stored:
      raise errors.UserError(f"{path}: missing variable {key!r} (shape "
                             f"{tuple(reference[key].shape)}); wrong architecture?")
    if key not in reference:
      raise errors.UserError(f"{path}: unexpected variable {errors.quote(key)} (shape "
                             f"{stored[key].shape}) not in the module; wrong architecture?")
    if stored[key].shape != tuple(reference[key].shape):
      raise errors.UserError(f"{path}: variable {key!r} has shape {stored[key].shape}, "
                             f"the module expects {tuple(reference[key].shape)}; wrong "
                             "architecture?")
  return unflatten({key: stored[key].astype(reference[key].dtype) for key in reference})


def shaped(state: dict, key: str, ndim: int, *, source: str, prefix: str = "") -> np.ndarray:
  """`state[key]`, which must have `ndim` dimensions of at least one element each.

  For the tensors whose shapes a loader reads before `match_state_dict` checks the rest (a
  classifier's width, a tower's depth): a scalar or an empty one is a user error, not an
  IndexError or a division by zero further on.
  """
  value = state[key]
  shape = tuple(np.shape(value))
  if len(shape) != ndim or 0 in shape:
    raise errors.UserError(f"{source}: tensor {prefix + key!r} has shape {shape}; expected "
                           f"{ndim} non-empty dimension(s); weights of another architecture?")
  return value


def _check_npz_sizes(path: str | os.PathLike) -> None:
  """Refuses an `.npz` whose records would decompress beyond a budget, before reading any.

  The budget is the reader's (`torch_reader.default_max_bytes` of the file's size); zipfile
  then reads each record only up to its declared size, so a deflate bomb cannot exceed it.
  """
  from rrjax.models import torch_reader  # pylint: disable=import-outside-toplevel
  try:
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or flood
      raise errors.UserError(f"{os.fspath(path)}: not a regular file")
    size = info.st_size
    with open(path, "rb") as f:
      torch_reader.check_zip_directory(f)
      with zipfile.ZipFile(f) as archive:
        infos = archive.infolist()
  except OSError:
    return  # np.load says why, below
  except (zipfile.BadZipFile, ValueError, EOFError) as e:
    raise errors.UserError(f"{os.fspath(path)}: not an .npz file of arrays "
                           f"({errors.one_line(str(e), 120)})") from None
  budget = torch_reader.default_max_bytes(size)
  declared = sum(info.file_size for info in infos)
  methods = {info.compress_type for info in infos} - {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
  if methods:
    raise errors.UserError(f"{os.fspath(path)}: records compressed with method(s) "
                           f"{sorted(methods)}; .npz files are stored or deflated")
  if declared > budget:
    raise errors.UserError(f"{os.fspath(path)}: its records hold {declared} bytes, over the "
                           f"budget of {budget} for a file of {size} bytes "
                           f"({torch_reader.MAX_BYTES_ENV} raises it)")


# numpy dtype name -> safetensors dtype tag.
_SAFETENSORS_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
                       "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
                       "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8",
                       "bool": "BOOL"}


def save_safetensors(path: str | os.PathLike, variables,
                     metadata: dict[str, str] | None = None) -> None:
  """Writes every leaf of `variables` to a `.safetensors` file, keyed as `flatten` keys them,
  atomically (`rrjax.io.files.atomic_write`: readers see the old file or the new one, never
  half of it; only the leader process writes). `metadata`: strings kept in the file's header.

  The same variables give the same bytes: the header's keys are sorted (the safetensors
  package's writer orders its metadata by a hash), so a deterministic run's files compare
  equal byte for byte. The layout is the format's: an 8-byte little-endian header length, the
  JSON header (`{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}`, padded with
  spaces to a multiple of 8), then the tensors' little-endian bytes in the header's order.
  """
  from rrjax.io import files  # pylint: disable=import-outside-toplevel
  flat = {key: np.asarray(jax.device_get(value)) for key, value in flatten(variables).items()}
  header, chunks, offset = {}, [], 0
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  for key in sorted(flat):
    array = flat[key]
    if array.dtype.name not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{key}: dtype {array.dtype} has no safetensors tag")
    data = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
    header[key] = {"dtype": _SAFETENSORS_DTYPES[array.dtype.name], "shape": list(array.shape),
                   "data_offsets": [offset, offset + len(data)]}
    chunks.append(data)
    offset += len(data)
  text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
  text += b" " * (-len(text) % 8)
  files.atomic_write(path, len(text).to_bytes(8, "little") + text + b"".join(chunks))


def read_safetensors(path: str | os.PathLike, max_header_bytes: int = 16 << 20
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """`({name: array}, header metadata)` of a `.safetensors` file, read as data.

  Raises:
    rrjax.errors.UserError: naming the file, when it is missing, not a regular file, has a
      header longer than `max_header_bytes`, or is not a readable safetensors file.
  """
  return _read_safetensors(os.fspath(path), max_header_bytes, tensors=True)


def safetensors_metadata(path: str | os.PathLike, max_header_bytes: int = 16 << 20
                         ) -> dict[str, str]:
  """The header metadata of a `.safetensors` file, its tensors left unread (errors as
  `read_safetensors`)."""
  return _read_safetensors(os.fspath(path), max_header_bytes, tensors=False)[1]


def _read_safetensors(path: str, max_header_bytes: int, tensors: bool):
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  check_safetensors_header(path, max_header_bytes)
  try:
    with safe_open(path, framework="numpy") as f:
      metadata = dict(f.metadata() or {})
      arrays = {key: f.get_tensor(key) for key in f.keys()} if tensors else {}
  except Exception as e:  # pylint: disable=broad-except  # safetensors' own errors, OSError...
    raise errors.UserError(f"{path}: not a readable safetensors file "
                           f"({errors.one_line(f'{type(e).__name__}: {e}', 160)})") from None
  return arrays, metadata


def load_safetensors(path: str | os.PathLike, reference_variables) -> dict:
  """Reads variables written by `save_safetensors` and checks them against the module's, as
  `load_npz` does (same arguments, result and errors)."""
  stored, _ = read_safetensors(path)
  return _matched(os.fspath(path), stored, flatten(reference_variables))


def check_safetensors_header(path: str, max_bytes: int) -> None:
  """Refuses a `.safetensors` file whose header (tensor names, dtypes, shapes, offsets) is
  longer than `max_bytes`, before the library parses it into a million Python objects."""
  try:
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device would block or flood
      raise errors.UserError(f"{path}: not a regular file")
    with open(path, "rb") as f:
      head = f.read(8)
  except OSError as e:
    raise errors.UserError(f"{path}: cannot read the weights file ({e.strerror or e})") from None
  if len(head) < 8:
    raise errors.UserError(f"{path}: not a safetensors file (shorter than its header)")
  size = int.from_bytes(head, "little")
  if size > max_bytes:
    raise errors.UserError(f"{path}: a safetensors header of {size} bytes, more than the "
                           f"{max_bytes} its tensors can need")


# Flax leaf name -> (PyTorch state-dict suffix, conversion from the PyTorch layout), for
# convolutional networks (torchvision's ResNets, EfficientNet-Lite0).
TORCH_LEAVES = {
    # Convs OIHW -> HWIO; a depthwise weight (C, 1, k, k) becomes (k, k, 1, C) the same way.
    # Linear (out, in) -> (in, out).
    "kernel": ("weight", lambda w: np.transpose(w, (2, 3, 1, 0) if w.ndim == 4 else (1, 0))),
    "scale": ("weight", lambda w: w),
    "bias": ("bias", lambda w: w),
    "mean": ("running_mean", lambda w: w),
    "var": ("running_var", lambda w: w),
}


# PyTorch <-> Flax layouts of one tensor, by name: `(to Flax, to PyTorch)`, each the other's
# inverse, for the converters that map both ways (`rrjax.models.openai_layout`).
LAYOUTS = {
    "copy": (lambda w: w, lambda w: w),
    "linear": (lambda w: w.T, lambda w: w.T),  # Linear (out, in) <-> Dense (in, out)
    "conv": (lambda w: np.transpose(w, (2, 3, 1, 0)),  # OIHW -> HWIO
             lambda w: np.transpose(w, (3, 2, 0, 1))),  # HWIO -> OIHW
}


def torch_to_flax(value, leaf: str) -> np.ndarray:
  """A PyTorch tensor as the Flax leaf `leaf` of `TORCH_LEAVES`, float32."""
  return TORCH_LEAVES[leaf][1](np.asarray(value, np.float32))


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
      raise errors.UserError(f"{source}: unexpected tensor {errors.quote(name)} "
                             f"{tuple(state[key].shape)}, "
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
      raise errors.UserError(f"{source}: tensor {errors.quote(name)} appears twice (with and "
                             "without 'module.')")
    out[kept] = value
  return out
