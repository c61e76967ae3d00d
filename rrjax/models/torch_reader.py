"""Reads the tensors of PyTorch checkpoint files as numpy arrays, without torch.

Third-party weight files are data, never code. A `.pt`/`.pth` file is a pickle, and a
pickle can call any importable function while it loads; `torch.load` and `pickle.load`
therefore run whatever the file asks for. This reader unpickles with an explicit allowlist
of the handful of names real checkpoints use to rebuild tensors, and refuses everything
else with `UnsafeWeightsError` before anything is called:

    weights = torch_reader.read("efficientnet-lite0.pth")   # {"_conv_stem.weight": array, ...}
    weights = torch_reader.read("ckpt.pt", key="state_dict")  # just that sub-dict

Formats:
  * legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): consecutive pickles
    (magic number, protocol version, system info, the object, the storage keys), then each
    storage's bytes prefixed by its little-endian int64 element count;
  * zip (torch >= 1.6): `<archive>/data.pkl` plus one `<archive>/data/<key>` record per
    storage, in the byte order named by `<archive>/byteorder` (little when absent);
  * TorchScript zip archives (`torch.jit.save`, e.g. OpenAI's CLIP `.pt` files): the same
    layout, but `data.pkl` holds the scripted module as a graph of `__torch__.*` objects.
    Those become inert `ScriptObject`s that keep their pickled attributes; walking them
    names tensors by attribute path (`visual.conv1.weight`). The walk yields every tensor
    attribute, so non-parameter tensors a scripted module keeps (e.g. CLIP's `attn_mask`)
    come out too, next to the parameters and buffers `state_dict()` would give.

Lower-level pieces: `load` returns the unpickled object tree with tensors as `Tensor`
records (shape and dtype known, data copied out on `.numpy()`), `flatten` names the tensors
of a tree.
"""

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Union

import ml_dtypes
import numpy as np

from rrjax import errors

Source = Union[str, os.PathLike, BinaryIO]

# First pickle of a legacy file, and the format version the second one must hold.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# `torch.<Name>Storage` -> element type of its data.
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    # Raw bytes; torch writes it for storages saved on their own, not for tensors.
    "UntypedStorage": np.dtype(np.uint8),
}


class CheckpointError(errors.UserError):
  """The file is not a PyTorch checkpoint this reader can turn into tensors."""


class UnsafeWeightsError(CheckpointError):
  """The file asks to call or build something other than tensors."""


@dataclasses.dataclass(frozen=True, slots=True)
class StorageType:
  """What `torch.FloatStorage` and friends unpickle to: just the element type."""
  name: str
  dtype: np.dtype


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Storage:
  """A flat run of `numel` elements: the whole storage `key`, or (legacy views) a slice of
  it starting at element `start`. Its bytes arrive after unpickling, into `pool`."""
  key: str
  dtype: np.dtype
  numel: int
  location: str
  pool: dict = dataclasses.field(repr=False)
  start: int = 0

  def array(self) -> np.ndarray:
    """The storage's elements, 1-D, native byte order (a view, not a copy)."""
    if self.key not in self.pool:
      raise CheckpointError(f"the data of storage {self.key!r} is missing from the file")
    root = self.pool[self.key]
    if self.start + self.numel > root.size:
      raise CheckpointError(
          f"storage {self.key!r} holds {root.size} elements, but the file uses "
          f"elements [{self.start}, {self.start + self.numel})")
    return root[self.start:self.start + self.numel]


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Tensor:
  """A tensor of the checkpoint: a strided view into a `Storage`."""
  storage: Storage
  offset: int
  shape: tuple
  stride: tuple

  @property
  def dtype(self) -> np.dtype:
    return self.storage.dtype

  def numpy(self) -> np.ndarray:
    """A fresh C-contiguous copy of the tensor's elements."""
    flat = self.storage.array()
    if 0 in self.shape:
      return np.zeros(self.shape, self.dtype)
    # as_strided reads raw memory, so the farthest element must lie inside the storage.
    last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
    if last >= flat.size:
      raise CheckpointError(
          f"tensor of shape {self.shape}, stride {self.stride} at offset {self.offset} "
          f"reaches past the end of its {flat.size}-element storage {self.storage.key!r}")
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], shape=self.shape,
        strides=tuple(s * flat.itemsize for s in self.stride), writeable=False)
    return np.array(view, order="C")


class ScriptObject:
  """Inert stand-in for a `__torch__.*` TorchScript object: its class name and pickled state.

  Nothing of the original class runs; the unpickler only records what the file holds.
  """

  qualified_name = "__torch__"
  state = None  # until the file's BUILD sets it

  def __init__(self, *args):
    # Reached when a file calls the class (TorchScript enums carry their value this way).
    self.state = args

  def __setstate__(self, state):
    self.state = state

  def __repr__(self):
    return f"ScriptObject({self.qualified_name})"


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  """Stands in for `torch._utils._rebuild_tensor_v2`; only gradient bookkeeping is dropped."""
  del requires_grad, backward_hooks, metadata  # not part of the values
  if not isinstance(storage, Storage):
    raise CheckpointError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
  if not _is_index(storage_offset):
    raise CheckpointError(f"bad tensor storage offset {storage_offset!r}")
  if (not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride)
      or not all(map(_is_index, size + stride))):
    raise CheckpointError(f"bad tensor size {size!r} / stride {stride!r}")
  return Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  """Stands in for `torch._utils._rebuild_parameter`: a Parameter is its tensor."""
  del requires_grad, backward_hooks
  if not isinstance(data, Tensor):
    raise CheckpointError(f"parameter rebuilt from a {type(data).__name__}, not a tensor")
  return data


def _latin1_encode(text, encoding="latin1"):
  """Stands in for `_codecs.encode`, which protocol-2 pickles use to write `bytes`."""
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise CheckpointError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r})")
  return text.encode("latin1")


def _device(kind, index=None):
  """Stands in for `torch.device` (TorchScript attributes): the device's name."""
  return str(kind) if index is None else f"{kind}:{index}"


def _passthrough(value, *unused_type):
  """Stands in for `torch.jit._pickle`'s list builders and type tags: the value itself."""
  return value


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("_codecs", "encode"): _latin1_encode,
    ("torch", "device"): _device,
    ("torch.jit._pickle", "restore_type_tag"): _passthrough,
    ("torch.jit._pickle", "build_intlist"): _passthrough,
    ("torch.jit._pickle", "build_doublelist"): _passthrough,
    ("torch.jit._pickle", "build_boollist"): _passthrough,
    ("torch.jit._pickle", "build_tensorlist"): _passthrough,
}


def _is_index(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles checkpoint pickles, resolving only allowlisted names.

  Storages come as persistent ids; they are recorded (by key) with their dtype and size,
  and their bytes are filled into `pool` by the format reader afterwards.
  """

  def __init__(self, file, pool: dict, legacy: bool):
    super().__init__(file, encoding="utf-8")
    self._pool = pool
    self._legacy = legacy
    self._script_classes: dict[str, type] = {}
    # key -> dtype and numel of every storage referenced, to read and check the data by.
    self.storages: dict[str, tuple[np.dtype, int]] = {}

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return StorageType(name, _STORAGE_DTYPES[name])
    if module == "__torch__" or module.startswith("__torch__."):
      return self._script_class(f"{module}.{name}")
    raise UnsafeWeightsError(
        f"refusing to load weights: the file asks to call '{module}.{name}'; "
        "only tensors are allowed")

  def _script_class(self, qualified_name: str) -> type:
    """One inert `ScriptObject` subclass per TorchScript class name, for readable reprs."""
    if qualified_name not in self._script_classes:
      self._script_classes[qualified_name] = type(
          "ScriptObject", (ScriptObject,), {"qualified_name": qualified_name})
    return self._script_classes[qualified_name]

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
      raise CheckpointError(f"unknown persistent id {pid!r:.200}")
    if len(pid) == 5:
      _, storage_type, key, location, numel = pid
      view = None
    elif len(pid) == 6 and self._legacy:
      _, storage_type, key, location, numel, view = pid
    else:
      raise CheckpointError(f"malformed storage id {pid!r:.200}")
    if not isinstance(storage_type, StorageType):
      raise CheckpointError(f"storage {key!r} has no torch storage type: {storage_type!r:.100}")
    if not isinstance(key, str) or not isinstance(location, str) or not _is_index(numel):
      raise CheckpointError(f"malformed storage id {pid!r:.200}")
    known = self.storages.setdefault(key, (storage_type.dtype, numel))
    if known != (storage_type.dtype, numel):
      raise CheckpointError(f"storage {key!r} is declared twice, differently")
    if view is None:
      return Storage(key, storage_type.dtype, numel, location, self._pool)
    # Pre-1.0 files could pickle a slice of a storage: (view key, start, length).
    if (not isinstance(view, tuple) or len(view) != 3 or not _is_index(view[1])
        or not _is_index(view[2])):
      raise CheckpointError(f"malformed storage view {view!r:.200}")
    return Storage(key, storage_type.dtype, view[2], location, self._pool, start=view[1])


def _unpickle(file: BinaryIO, pool: dict, legacy: bool) -> tuple[Any, dict]:
  """Runs one restricted unpickle; malformed input becomes a `CheckpointError`."""
  unpickler = _RestrictedUnpickler(file, pool, legacy)
  try:
    obj = unpickler.load()
  except CheckpointError:
    raise
  # A damaged pickle fails in many ways (EOFError, UnpicklingError, struct and type
  # errors from bad arguments); all mean the same to the caller.
  except Exception as e:
    raise CheckpointError(f"corrupt checkpoint pickle ({type(e).__name__}: {e})") from e
  return obj, unpickler.storages


def _to_native(raw: bytes, dtype: np.dtype, big_endian: bool) -> np.ndarray:
  """Bytes of `dtype` elements in the file's byte order -> 1-D array in native order."""
  if not big_endian or dtype.itemsize == 1:
    return np.frombuffer(raw, dtype)
  # Swap per scalar (complex numbers are two floats); works for ml_dtypes' bfloat16 too.
  unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
  return np.frombuffer(raw, f">u{unit}").astype(f"=u{unit}").view(dtype)


def _read_legacy(f: BinaryIO) -> Any:
  """Reads a legacy (pre-zip) checkpoint positioned at its first pickle."""
  pool: dict[str, np.ndarray] = {}
  magic, _ = _unpickle(f, pool, legacy=True)
  if magic != _LEGACY_MAGIC:
    raise CheckpointError("not a PyTorch checkpoint (wrong magic number)")
  protocol, _ = _unpickle(f, pool, legacy=True)
  if protocol != _LEGACY_PROTOCOL:
    raise CheckpointError(f"unsupported legacy checkpoint protocol {protocol!r}")
  _unpickle(f, pool, legacy=True)  # system info: legacy data is always little-endian
  obj, storages = _unpickle(f, pool, legacy=True)
  keys, _ = _unpickle(f, pool, legacy=True)
  if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
    raise CheckpointError("corrupt legacy checkpoint: bad storage key list")
  # Sizes come from the file; check them against what is left before allocating.
  here = f.tell()
  left = f.seek(0, io.SEEK_END) - here
  f.seek(here)
  for key in keys:
    if key not in storages:
      raise CheckpointError(f"corrupt legacy checkpoint: data for unknown storage {key!r}")
    dtype, numel = storages[key]
    header = f.read(8)
    if len(header) != 8:
      raise CheckpointError(f"truncated checkpoint: storage {key!r} is missing")
    (count,) = struct.unpack("<q", header)
    if count != numel:
      raise CheckpointError(
          f"corrupt legacy checkpoint: storage {key!r} has {count} elements, expected {numel}")
    left -= 8 + count * dtype.itemsize
    if left < 0:
      raise CheckpointError(f"truncated checkpoint: storage {key!r} is cut short")
    raw = f.read(count * dtype.itemsize)
    pool[key] = _to_native(raw, dtype, big_endian=False)
  return obj


def _read_zip(f: BinaryIO) -> Any:
  """Reads a zip checkpoint (`torch.save` >= 1.6, or a TorchScript archive)."""
  try:
    archive = zipfile.ZipFile(f)
  except (zipfile.BadZipFile, OSError) as e:
    raise CheckpointError(f"corrupt zip checkpoint ({e})") from e
  with archive:
    names = archive.namelist()
    pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
      raise CheckpointError(
          f"zip is not a PyTorch checkpoint: expected one <archive>/data.pkl, found {pickles}")
    prefix = pickles[0][:-len("data.pkl")]
    big_endian = False
    if prefix + "byteorder" in names:
      order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
      if order not in ("little", "big"):
        raise CheckpointError(f"unknown byte order {order!r} in checkpoint")
      big_endian = order == "big"
    pool: dict[str, np.ndarray] = {}
    try:
      with archive.open(pickles[0]) as pkl:
        obj, storages = _unpickle(io.BytesIO(pkl.read()), pool, legacy=False)
      for key, (dtype, numel) in storages.items():
        record = f"{prefix}data/{key}"
        if record not in names:
          raise CheckpointError(f"checkpoint lacks the data of storage {key!r} ({record})")
        size = archive.getinfo(record).file_size
        if size != numel * dtype.itemsize:
          raise CheckpointError(
              f"storage {key!r} has {size} bytes, expected {numel} x {dtype.itemsize}")
        pool[key] = _to_native(archive.read(record), dtype, big_endian)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
      raise CheckpointError(f"corrupt zip checkpoint ({e})") from e
  return obj


def load(source: Source) -> Any:
  """Unpickles a checkpoint with tensors as `Tensor` records whose data is loaded.

  Args:
    source: a path, or a seekable binary file object positioned at the file's start.

  Returns:
    The saved object: usually a dict of tensors, or whatever dict, list and tuple nesting
    the file holds; TorchScript modules come back as `ScriptObject`s.

  Raises:
    UnsafeWeightsError: the file asks to call anything but the tensor-building allowlist.
    CheckpointError: the file is not a readable PyTorch checkpoint.
  """
  if isinstance(source, (str, os.PathLike)):
    try:
      f = open(source, "rb")
    except OSError as e:
      raise CheckpointError(f"{os.fspath(source)}: cannot open the weights file "
                            f"({e.strerror or e})") from None
    with f:
      return load(f)
  start = source.tell()
  head = source.read(512)
  source.seek(start)
  if head.startswith(b"PK\x03\x04"):
    return _read_zip(source)
  if head[:1] == b"\x80":  # pickle PROTO opcode: the legacy format's magic-number pickle
    return _read_legacy(source)
  if head[257:262] == b"ustar":
    raise CheckpointError("tar-based checkpoints (torch < 0.4) are not supported")
  raise CheckpointError("not a PyTorch checkpoint (neither a zip archive nor a pickle)")


def flatten(tree: Any, key: str | None = None) -> dict[str, Tensor]:
  """Names every tensor of a `load`ed tree by its dotted path.

  Dict keys, list/tuple indices and TorchScript attribute names become path components;
  everything that is not a tensor (step counters, config strings, flags) is dropped.

  Args:
    tree: what `load` returned.
    key: optional dotted path of the subtree to flatten (e.g. "state_dict" or
      "model.ema"); names are then relative to it.
  """
  if key is not None:
    for part in key.split("."):
      node = tree.state if isinstance(tree, ScriptObject) else tree
      if isinstance(node, dict) and part in node:
        tree = node[part]
      elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
        tree = node[int(part)]
      else:
        available = sorted(map(str, node)) if isinstance(node, dict) else type(node).__name__
        raise KeyError(f"checkpoint has no entry {part!r} on the path {key!r} "
                       f"(found: {available})")
  out: dict[str, Tensor] = {}
  try:
    _collect(tree, "", out, set())
  except RecursionError as e:
    raise CheckpointError("checkpoint object tree is nested too deeply") from e
  return out


def _collect(node: Any, name: str, out: dict, path_ids: set) -> None:
  """Adds the tensors under `node` to `out`; `path_ids` guards against cyclic graphs."""
  if isinstance(node, Tensor):
    if name in out:
      raise CheckpointError(f"two tensors are both named {name!r}")
    out[name] = node
    return
  if isinstance(node, ScriptObject):
    children = [("", node.state)]
  elif isinstance(node, dict):
    children = [(str(k), v) for k, v in node.items()]
  elif isinstance(node, (list, tuple)):
    children = [(str(i), v) for i, v in enumerate(node)]
  else:
    return
  if id(node) in path_ids:
    return
  path_ids.add(id(node))
  for part, child in children:
    _collect(child, ".".join(p for p in (name, part) if p), out, path_ids)
  path_ids.remove(id(node))


def read(source: Source, key: str | None = None) -> dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint's tensors as numpy arrays, running none of its code.

  Args:
    source: a path, or a seekable binary file object positioned at the file's start.
    key: optional dotted path of the sub-object holding the weights (e.g. "state_dict");
      without it every tensor in the file is returned, named by its full dotted path
      (so `{"model": {"fc.weight": ...}}` gives "model.fc.weight").

  Returns:
    Flat dict name -> C-contiguous array in native byte order, with torch's dtype
    (float16 stays float16, bfloat16 is `ml_dtypes.bfloat16`).

  Raises:
    UnsafeWeightsError: the file asks to call anything but the tensor-building allowlist.
    CheckpointError (a ValueError): the file is not a readable PyTorch checkpoint.
    KeyError: `key` does not name a sub-object of the file.
  """
  return {name: t.numpy() for name, t in flatten(load(source), key).items()}
