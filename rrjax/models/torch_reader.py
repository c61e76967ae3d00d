"""Reads the tensors of PyTorch checkpoint files as numpy arrays, without torch.

Third-party weight files are data, never code. A `.pt`/`.pth` file is a pickle, and a pickle can
call any importable function while it loads; `torch.load` and `pickle.load` therefore run
whatever the file asks for. This reader does not use `pickle.Unpickler`: it runs its own pickle
machine (`_Machine`), which knows the opcodes checkpoints use and builds nothing but plain data
(dicts, lists, tuples, strings, numbers), `Tensor` records from validated values, and inert
`ScriptObject`s for TorchScript. A name outside the handful that rebuild tensors is refused with
`UnsafeWeightsError` before anything is called:

    weights = torch_reader.read("efficientnet-lite0.pth")   # {"_conv_stem.weight": array, ...}
    weights = torch_reader.read("ckpt.pt", key="state_dict")  # just that sub-dict

What the reader guarantees for any file, however crafted (tests/models/test_hostile_weights.py):
  * no code runs: globals resolve to a fixed table of tensor builders, which the file can call
    (REDUCE) but never reach as objects; BUILD (`__setstate__`) applies only to TorchScript
    objects and, dropped, to the `_metadata` of an OrderedDict;
  * no memory outside an array is read: offsets, sizes and strides are checked (non-negative,
    inside the storage) where each array is made;
  * bounded resources, decided before allocating: a byte budget per file (`max_bytes`) covers
    the pickle, the storages, what the tensor builders make, the tensors' names and the arrays
    returned; compressed zip records are read only up to their declared size, which the budget
    bounds (bzip2/lzma records are refused), and a zip of more than `MAX_ZIP_ENTRIES` records
    is refused before its directory is parsed; the pickle machine stops after `max_nodes`
    objects, memo entries and marks; dict keys are flat (no deep tuple to hash) and short; the
    tensor walk visits at most `max_nodes` paths (a shared subtree is walked once per path);
    every number is below 2^62; error messages show at most about a hundred characters of the
    file's data; a path that is not a regular file (a FIFO, a device) is refused unopened.
    `read` enforces all of this; `load` and `Tensor.numpy` (lower level) check layouts but
    leave the size of the arrays to the caller;
  * every malformed or hostile file raises `CheckpointError` (a `rrjax.errors.UserError`): one
    line naming the file and the problem.

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
import math
import mmap
import os
import pickle
import stat
import struct
import zipfile
import zlib
from typing import Any, BinaryIO, Union

import ml_dtypes
import numpy as np

from rrjax import errors

Source = Union[str, os.PathLike, BinaryIO]

# First pickle of a legacy file, and the format version the second one must hold.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Default budgets. Bytes: this multiple of the file's size plus the slack; a legitimate file
# needs about twice its size (its storages, then the arrays copied out of them).
BYTES_PER_FILE_BYTE = 4
BYTES_SLACK = 64 << 20
MAX_BYTES_ENV = "RRJAX_WEIGHTS_MAX_BYTES"  # raises (or lowers) the byte budget, in bytes
MAX_NODES = 2_000_000  # objects the pickle machine builds; tensor-walk visits
MAX_DIMS = 32  # numpy allows 64; no checkpoint comes near
MAX_ZIP_ENTRIES = 200_000  # records of a zip checkpoint (one per storage, a few more)
_MAX_ZIP_DIRECTORY = MAX_ZIP_ENTRIES * 128  # bytes of its central directory (~100 per record)
_MAX_LINE = 4096  # text arguments of GLOBAL and friends
_MAX_DEPTH = 1000  # nesting of the object tree, for the walk
_MAX_KEY = 1024  # characters of a dict key (tensor names are far shorter)
_MAX_NAME = 4096  # characters of a tensor's dotted path
_MAX_INDEX = 2 ** 62  # offsets, sizes, strides and element counts stay below it

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


def _short(value: Any, limit: int = 60) -> str:
  """A one-line description of file data for messages: never more than about `limit` chars.

  Containers are described by type and length, never formatted (their repr could be any size).
  """
  if isinstance(value, (str, bytes)):
    text = repr(value[:limit])
    return text + ("..." if len(value) > limit else "")
  if isinstance(value, bool) or value is None or isinstance(value, float):
    return repr(value)
  if isinstance(value, int):
    return str(value) if value.bit_length() <= 128 else f"a {value.bit_length()}-bit integer"
  if isinstance(value, (tuple, list, dict)):
    return f"a {type(value).__name__} of {len(value)}"
  if isinstance(value, _Global):
    return f"the global {value.name[:120]}"
  return f"a {type(value).__name__}"


class _Budget:
  """Bytes a read may allocate, charged before each allocation."""

  def __init__(self, limit: int):
    self.limit, self.used = limit, 0

  def charge(self, nbytes: int, what: str) -> None:
    if nbytes < 0 or self.used + nbytes > self.limit:
      raise CheckpointError(
          f"{what}: {nbytes} more bytes would pass the budget of {self.limit} bytes for this "
          f"file ({self.used} used); a larger budget: max_bytes= or {MAX_BYTES_ENV}")
    self.used += nbytes


@dataclasses.dataclass(frozen=True)
class StorageType:
  """What `torch.FloatStorage` and friends unpickle to: just the element type."""
  name: str
  dtype: np.dtype


@dataclasses.dataclass(frozen=True, eq=False)
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
    if not (_is_index(self.start) and _is_index(self.numel)):
      raise CheckpointError(f"storage {_short(self.key)} has a bad extent")
    root = self.pool.get(self.key)
    if root is None:
      raise CheckpointError(f"the data of storage {_short(self.key)} is missing from the file")
    if self.start + self.numel > root.size:
      raise CheckpointError(
          f"storage {_short(self.key)} holds {root.size} elements, but the file uses "
          f"elements [{self.start}, {self.start + self.numel})")
    return root[self.start:self.start + self.numel]


@dataclasses.dataclass(frozen=True, eq=False)
class Tensor:
  """A tensor of the checkpoint: a strided view into a `Storage`."""
  storage: Storage
  offset: int
  shape: tuple
  stride: tuple

  @property
  def dtype(self) -> np.dtype:
    return self.storage.dtype

  @property
  def nbytes(self) -> int:
    """Bytes of the array `numpy` returns (after `check`)."""
    return math.prod(self.shape) * self.dtype.itemsize

  def check(self) -> None:
    """Raises CheckpointError unless every element lies inside the storage."""
    _check_layout(self.offset, self.shape, self.stride)
    size = self.storage.numel
    if 0 in self.shape:
      return
    last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
    if last >= size:
      raise CheckpointError(
          f"tensor of shape {_dims(self.shape)}, stride {_dims(self.stride)} at offset "
          f"{self.offset} "
          f"reaches past the end of its {size}-element storage {_short(self.storage.key)}")

  def numpy(self) -> np.ndarray:
    """A fresh C-contiguous copy of the tensor's elements."""
    # Checked here, where the array is made: as_strided reads raw memory.
    self.check()
    flat = self.storage.array()
    if 0 in self.shape:
      return np.zeros(self.shape, self.dtype)
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], shape=self.shape,
        strides=tuple(s * flat.itemsize for s in self.stride), writeable=False)
    return np.array(view, order="C")


def _check_layout(offset, shape, stride) -> None:
  if not _is_index(offset):
    raise CheckpointError(f"bad tensor storage offset {_short(offset)}")
  if (type(shape) is not tuple or type(stride) is not tuple or len(shape) != len(stride)
      or len(shape) > MAX_DIMS or not all(map(_is_index, shape + stride))):
    raise CheckpointError(f"bad tensor size {_short(shape)} / stride {_short(stride)}: "
                          f"at most {MAX_DIMS} integers in [0, 2^62) each, as many strides "
                          "as sizes")
  if math.prod(shape) >= _MAX_INDEX:
    raise CheckpointError(f"tensor of shape {_dims(shape)} is too large")


class ScriptObject:
  """Inert stand-in for a `__torch__.*` TorchScript object: its class name and pickled state.

  Nothing of the original class runs; the pickle machine only records what the file holds.
  """

  def __init__(self, qualified_name: str, state=None):
    self.qualified_name = qualified_name
    self.state = state

  def __repr__(self):
    return f"ScriptObject({self.qualified_name})"


def _is_index(x) -> bool:
  """A non-negative int below `_MAX_INDEX`: what offsets, sizes, strides and counts are."""
  return type(x) is int and 0 <= x < _MAX_INDEX


def _dims(values: tuple) -> str:
  """A shape or stride for messages: at most about 80 characters."""
  text = str(values)
  return text if len(text) <= 80 else text[:80] + "...)"


# --- what the file's globals resolve to -------------------------------------------------------
# The machine keeps these as `_Global` records: a file can call one (REDUCE) with arguments it
# built, but never holds the function itself, so nothing of the process can be changed.

def _rebuild_tensor_v2(storage, storage_offset=None, size=None, stride=None, *unused):
  """Stands in for `torch._utils._rebuild_tensor_v2`; only gradient bookkeeping is dropped."""
  if not isinstance(storage, Storage):
    raise CheckpointError(f"tensor rebuilt from {_short(storage)}, not a storage")
  if len(unused) > 3:
    raise CheckpointError("_rebuild_tensor_v2 called with too many arguments")
  _check_layout(storage_offset, size, stride)
  return Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
  """Stands in for `torch._utils._rebuild_parameter`: a Parameter is its tensor."""
  if not isinstance(data, Tensor) or len(unused) > 2:
    raise CheckpointError(f"parameter rebuilt from {_short(data)}, not a tensor")
  return data


def _latin1_encode(text, encoding="latin1", *unused):
  """Stands in for `_codecs.encode`, which protocol-2 pickles use to write `bytes`."""
  if type(text) is not str or encoding not in ("latin1", "latin-1") or unused:
    raise CheckpointError(f"unexpected _codecs.encode({_short(text)}, {_short(encoding)})")
  try:
    return text.encode("latin1")
  except UnicodeEncodeError as e:
    raise CheckpointError("_codecs.encode of a non-latin-1 string") from e


def _device(kind, index=None, *unused):
  """Stands in for `torch.device` (TorchScript attributes): the device's name."""
  if (type(kind) is not str or len(kind) > 64 or unused
      or not (index is None or (type(index) is int and 0 <= index < 2 ** 16))):
    raise CheckpointError(f"bad torch.device({_short(kind)}, {_short(index)})")
  return kind[:64] if index is None else f"{kind[:64]}:{index}"


def _passthrough(value=None, *unused_type):
  """Stands in for `torch.jit._pickle`'s list builders and type tags: the value itself."""
  return value


def _ordered_dict(items=None):
  """Stands in for `collections.OrderedDict` (state dicts): an empty one, or from pairs."""
  if items is None:
    return collections.OrderedDict()
  if type(items) is not list or not all(type(p) is tuple and len(p) == 2 for p in items):
    raise CheckpointError(f"OrderedDict built from {_short(items)}")
  out = collections.OrderedDict()
  for key, value in items:
    out[_key(key)] = value
  return out


_CALLABLE = {
    ("collections", "OrderedDict"): _ordered_dict,
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


@dataclasses.dataclass(frozen=True)
class _Global:
  """A resolved global: a tensor builder to call, a storage type, or a TorchScript class."""
  name: str
  call: Any = None  # one of _CALLABLE's values
  storage: StorageType | None = None
  script: bool = False


def _resolve(module: str, name: str) -> _Global:
  qualified = f"{module}.{name}"
  if (module, name) in _CALLABLE:
    return _Global(qualified, call=_CALLABLE[(module, name)])
  if module == "torch" and name in _STORAGE_DTYPES:
    return _Global(qualified, storage=StorageType(name, _STORAGE_DTYPES[name]))
  if module == "__torch__" or module.startswith("__torch__."):
    return _Global(qualified, script=True)
  raise UnsafeWeightsError(
      f"refusing to load weights: the file asks to call {_short(qualified, 120)}; only tensors "
      "are allowed")


_KEY_SCALARS = (str, int, float, bool, bytes, type(None))


def _key(key):
  """`key` if it may key a dict: a scalar or a flat tuple of scalars (hashing is then cheap)."""
  parts = key if type(key) is tuple else (key,)
  if any(type(k) in (str, bytes) and len(k) > _MAX_KEY for k in parts):
    raise CheckpointError(f"a dict key of over {_MAX_KEY} characters; checkpoints key by names")
  if type(key) in _KEY_SCALARS or (
      type(key) is tuple and len(key) <= 16 and all(type(k) in _KEY_SCALARS for k in key)):
    return key
  raise CheckpointError(f"a dict keyed by {_short(key)}; checkpoints key by names")


# --- the pickle machine ---------------------------------------------------------------------

class _Mark:
  """The MARK opcode's stack marker."""


_MARK = _Mark()
_OPS = {name: getattr(pickle, name) for name in (
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "NONE", "NEWTRUE", "NEWFALSE",
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "BINFLOAT",
    "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINSTRING", "SHORT_BINSTRING",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2",
    "TUPLE3", "EMPTY_LIST", "APPEND", "APPENDS", "LIST", "EMPTY_DICT", "DICT", "SETITEM",
    "SETITEMS", "GLOBAL", "STACK_GLOBAL", "REDUCE", "NEWOBJ", "BUILD", "BINPERSID",
    "BINPUT", "LONG_BINPUT", "MEMOIZE", "PUT", "BINGET", "LONG_BINGET", "GET")}
_NAMES = {code: name for name, code in _OPS.items()}


class _Machine:
  """Runs one pickle of `data` from `pos`, building only plain data, tensors and inert objects.

  Storages come as persistent ids (`("storage", <type>, key, location, numel[, view])`); they
  are recorded by key with their dtype and size in `storages`, and their bytes are filled into
  `pool` by the format reader afterwards.
  """

  def __init__(self, data, pos: int, pool: dict, legacy: bool, max_nodes: int,
               budget: _Budget):
    self.data, self.pos, self.pool, self.legacy = data, pos, pool, legacy
    self.nodes, self.max_nodes, self.budget = 0, max_nodes, budget
    self.stack: list = []
    self.marks: list = []
    self.memo: dict = {}
    self.storages: dict[str, tuple[np.dtype, int]] = {}
    self._storage_objects: dict[tuple, Storage] = {}

  # Reading.
  def _take(self, n: int):
    end = self.pos + n
    if n < 0 or end > len(self.data):
      raise CheckpointError("the pickle ends early (truncated file?)")
    chunk = self.data[self.pos:end]
    self.pos = end
    return bytes(chunk)

  def _line(self) -> bytes:
    end = self.data.find(b"\n", self.pos, self.pos + _MAX_LINE)
    if end < 0:
      raise CheckpointError("the pickle has an unterminated or overlong text argument")
    line = bytes(self.data[self.pos:end])
    self.pos = end + 1
    return line

  def _unpack(self, fmt: str):
    return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]

  # Stack.
  def _count(self, n: int = 1):
    """Counts `n` more objects (or memo entries, or marks) against the node budget."""
    self.nodes += n
    if self.nodes > self.max_nodes:
      raise CheckpointError(f"the pickle builds more than {self.max_nodes} objects")

  def _push(self, value):
    self._count()  # references (DUP, GET) too: they grow the stack and the containers
    self.stack.append(value)

  def _pop(self):
    if not self.stack or (self.marks and len(self.stack) <= self.marks[-1]):
      raise CheckpointError("the pickle pops an empty stack")
    return self.stack.pop()

  def _top(self):
    if not self.stack or (self.marks and len(self.stack) <= self.marks[-1]):
      raise CheckpointError("the pickle reads an empty stack")
    return self.stack[-1]

  def _pop_mark(self) -> list:
    if not self.marks:
      raise CheckpointError("the pickle closes a MARK it never opened")
    start = self.marks.pop()
    items = self.stack[start:]
    del self.stack[start:]
    return items

  def _text(self, raw: bytes) -> str:
    try:
      return raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise CheckpointError("the pickle holds a string that is not UTF-8") from e

  def run(self):
    """The pickled object; `self.pos` is then just past the STOP opcode."""
    ops = _OPS
    while True:
      code = self._take(1)
      if code == ops["STOP"]:
        if len(self.stack) != 1 or self.marks:
          raise CheckpointError("the pickle stops with a malformed stack")
        return self.stack.pop()
      handler = _HANDLERS.get(code)
      if handler is None:
        raise CheckpointError(f"unsupported pickle opcode {code!r} at byte {self.pos - 1}; "
                              "checkpoints use a small set of them")
      handler(self)

  # Opcode groups (bound in _HANDLERS below).
  def op_proto(self):
    if self._take(1)[0] > 5:
      raise CheckpointError("unknown pickle protocol")

  def op_frame(self):
    self._unpack("<Q")  # the frame's length: advisory, the data is read as it comes

  def op_mark(self):
    self._count()
    self.marks.append(len(self.stack))

  def op_pop(self):
    if self.stack and self.marks and len(self.stack) == self.marks[-1]:
      self.marks.pop()  # POP of a MARK, as pickle allows
    else:
      self._pop()

  def op_pop_mark(self):
    self._pop_mark()

  def op_dup(self):
    self._push(self._top())

  def op_const(self, value):
    self._push(value)

  def op_int_text(self):
    line = self._line()
    if line in (b"00", b"01"):
      self._push(line == b"01")
    else:
      self._push(self._number(line, int))

  def op_long_text(self):
    self._push(self._number(self._line().rstrip(b"L"), int))

  def _number(self, line: bytes, kind):
    if len(line) > 64:
      raise CheckpointError("the pickle holds an overlong number")
    try:
      return kind(line.decode("ascii"))
    except (ValueError, UnicodeDecodeError) as e:
      raise CheckpointError("the pickle holds a malformed number") from e

  def op_fixed(self, fmt):
    self._push(self._unpack(fmt))

  def op_long(self, fmt):
    n = self._unpack(fmt)
    if n > 16:  # the legacy format's magic number takes 10 bytes; nothing more than 16
      raise CheckpointError(f"the pickle holds a {n}-byte integer")
    self._push(int.from_bytes(self._take(n), "little", signed=True))

  def op_unicode(self, fmt):
    # Python 2 `str` (BINSTRING) too: read as text, as torch.load(encoding="utf-8") does.
    self._push(self._text(self._take(self._unpack(fmt))))

  def op_bytes(self, fmt):
    self._push(self._take(self._unpack(fmt)))

  def op_tuple_n(self, n):
    if n == 0:
      self._push(())
      return
    items = [self._pop() for _ in range(n)][::-1]
    self._push(tuple(items))

  def op_tuple(self):
    self._push(tuple(self._pop_mark()))

  def op_empty(self, kind):
    self._push(kind())

  def op_list(self):
    self._push(self._pop_mark())

  def op_dict(self):
    items = self._pop_mark()
    if len(items) % 2:
      raise CheckpointError("the pickle builds a dict from an odd number of items")
    self._push({_key(items[i]): items[i + 1] for i in range(0, len(items), 2)})

  def _container(self, kind):
    target = self._top()
    if type(target) is not kind and not (kind is dict and type(target) is collections.OrderedDict):
      raise UnsafeWeightsError(f"the pickle adds items to {_short(target)}; only lists and "
                               "dicts take items")
    return target

  def op_append(self):
    value = self._pop()
    self._container(list).append(value)

  def op_appends(self):
    items = self._pop_mark()
    self._container(list).extend(items)

  def op_setitem(self):
    value, key = self._pop(), self._pop()
    self._container(dict)[_key(key)] = value

  def op_setitems(self):
    items = self._pop_mark()
    if len(items) % 2:
      raise CheckpointError("the pickle sets items from an odd number of values")
    target = self._container(dict)
    for i in range(0, len(items), 2):
      target[_key(items[i])] = items[i + 1]

  def op_global(self):
    module, name = self._text(self._line()), self._text(self._line())
    self._push(_resolve(module, name))

  def op_stack_global(self):
    name, module = self._pop(), self._pop()
    if type(module) is not str or type(name) is not str:
      raise CheckpointError("STACK_GLOBAL of non-strings")
    self._push(_resolve(module, name))

  def op_reduce(self):
    args, func = self._pop(), self._pop()
    if type(args) is not tuple:
      raise CheckpointError(f"a call with arguments {_short(args)}, not a tuple")
    if not isinstance(func, _Global):
      raise UnsafeWeightsError(f"the pickle calls {_short(func)}; only tensor builders may be "
                               "called")
    if func.call is not None:
      result = func.call(*args)
      # What a builder makes from shared arguments can outgrow the pickle: counted too.
      if isinstance(result, (bytes, str)):
        self.budget.charge(len(result), f"{func.name}'s result")
      elif isinstance(result, (dict, list, tuple)):
        self._count(len(result))
      self._push(result)
    elif func.script:  # TorchScript enums and named tuples carry their values this way
      self._push(ScriptObject(func.name, args))
    else:
      raise UnsafeWeightsError(f"the pickle calls {func.name}; only tensor builders may be "
                               "called")

  def op_newobj(self):
    args, cls = self._pop(), self._pop()
    if not isinstance(cls, _Global) or not cls.script or type(args) is not tuple:
      raise UnsafeWeightsError(f"the pickle instantiates {_short(getattr(cls, 'name', cls))}; "
                               "only TorchScript objects may be")
    self._push(ScriptObject(cls.name, args or None))

  def op_build(self):
    state = self._pop()
    target = self._top()
    if isinstance(target, ScriptObject):
      target.state = state
    elif type(target) is collections.OrderedDict and type(state) is dict:
      pass  # a state dict's `_metadata` (module versions): not weights
    else:
      raise UnsafeWeightsError(f"the pickle sets the state of {_short(target)}; only "
                               "TorchScript objects take state")

  def op_binpersid(self):
    self._push(self._persistent(self._pop()))

  def op_put(self, fmt):
    index = self._unpack(fmt)
    self._count()
    self.memo[index] = self._top()

  def op_put_text(self):
    index = self._number(self._line(), int)
    self._count()
    self.memo[index] = self._top()

  def op_memoize(self):
    self._count()
    self.memo[len(self.memo)] = self._top()

  def op_get(self, fmt):
    self._get(self._unpack(fmt))

  def op_get_text(self):
    self._get(self._number(self._line(), int))

  def _get(self, index):
    if index not in self.memo:
      raise CheckpointError(f"the pickle refers to memo entry {_short(index)}, never stored")
    self._push(self.memo[index])

  def _persistent(self, pid) -> Storage:
    if type(pid) is not tuple or not pid or pid[0] != "storage":
      raise CheckpointError(f"unknown persistent id {_short(pid)}")
    if len(pid) == 5:
      _, storage_type, key, location, numel = pid
      view = None
    elif len(pid) == 6 and self.legacy:
      _, storage_type, key, location, numel, view = pid
    else:
      raise CheckpointError(f"malformed storage id of {len(pid)} fields")
    if not isinstance(storage_type, _Global) or storage_type.storage is None:
      raise CheckpointError(f"storage {_short(key)} has no torch storage type")
    dtype = storage_type.storage.dtype
    if type(key) is not str or type(location) is not str or not _is_index(numel):
      raise CheckpointError(f"malformed storage id for storage {_short(key)}")
    known = self.storages.setdefault(key, (dtype, numel))
    if known != (dtype, numel):
      raise CheckpointError(f"storage {_short(key)} is declared twice, differently")
    start, length = 0, numel
    if view is not None:
      # Pre-1.0 files could pickle a slice of a storage: (view key, start, length).
      if (type(view) is not tuple or len(view) != 3 or not _is_index(view[1])
          or not _is_index(view[2])):
        raise CheckpointError(f"malformed view of storage {_short(key)}")
      start, length = view[1], view[2]
    ident = (key, start, length)
    if ident not in self._storage_objects:
      self._storage_objects[ident] = Storage(key, dtype, length, location[:64], self.pool,
                                             start=start)
    return self._storage_objects[ident]


def _handlers() -> dict:
  m, ops = _Machine, _OPS
  table = {
      "PROTO": m.op_proto, "FRAME": m.op_frame, "MARK": m.op_mark, "POP": m.op_pop,
      "POP_MARK": m.op_pop_mark, "DUP": m.op_dup,
      "NONE": lambda s: s.op_const(None), "NEWTRUE": lambda s: s.op_const(True),
      "NEWFALSE": lambda s: s.op_const(False),
      "INT": m.op_int_text, "LONG": m.op_long_text,
      "BININT": lambda s: s.op_fixed("<i"), "BININT1": lambda s: s.op_fixed("<B"),
      "BININT2": lambda s: s.op_fixed("<H"), "BINFLOAT": lambda s: s.op_fixed(">d"),
      "LONG1": lambda s: s.op_long("<B"), "LONG4": lambda s: s.op_long("<i"),
      "BINUNICODE": lambda s: s.op_unicode("<I"), "SHORT_BINUNICODE": lambda s: s.op_unicode("<B"),
      "BINUNICODE8": lambda s: s.op_unicode("<Q"),
      "BINSTRING": lambda s: s.op_unicode("<i"), "SHORT_BINSTRING": lambda s: s.op_unicode("<B"),
      "BINBYTES": lambda s: s.op_bytes("<I"), "SHORT_BINBYTES": lambda s: s.op_bytes("<B"),
      "BINBYTES8": lambda s: s.op_bytes("<Q"),
      "EMPTY_TUPLE": lambda s: s.op_tuple_n(0), "TUPLE1": lambda s: s.op_tuple_n(1),
      "TUPLE2": lambda s: s.op_tuple_n(2), "TUPLE3": lambda s: s.op_tuple_n(3),
      "TUPLE": m.op_tuple,
      "EMPTY_LIST": lambda s: s.op_empty(list), "EMPTY_DICT": lambda s: s.op_empty(dict),
      "LIST": m.op_list, "DICT": m.op_dict, "APPEND": m.op_append, "APPENDS": m.op_appends,
      "SETITEM": m.op_setitem, "SETITEMS": m.op_setitems,
      "GLOBAL": m.op_global, "STACK_GLOBAL": m.op_stack_global, "REDUCE": m.op_reduce,
      "NEWOBJ": m.op_newobj, "BUILD": m.op_build, "BINPERSID": m.op_binpersid,
      "BINPUT": lambda s: s.op_put("<B"), "LONG_BINPUT": lambda s: s.op_put("<I"),
      "PUT": m.op_put_text, "MEMOIZE": m.op_memoize,
      "BINGET": lambda s: s.op_get("<B"), "LONG_BINGET": lambda s: s.op_get("<I"),
      "GET": m.op_get_text,
  }
  return {ops[name]: handler for name, handler in table.items()}


_HANDLERS = _handlers()


def _unpickle(data, pos: int, pool: dict, legacy: bool, max_nodes: int, budget: _Budget):
  """Runs one pickle of `data` at `pos`: `(object, storages, end position)`."""
  machine = _Machine(data, pos, pool, legacy, max_nodes, budget)
  try:
    obj = machine.run()
  except UnsafeWeightsError:
    raise
  except CheckpointError as e:
    raise CheckpointError(f"checkpoint pickle, byte {machine.pos}: {e}") from None
  except RecursionError as e:
    raise CheckpointError("the pickle nests too deeply") from e
  except (ValueError, TypeError, OverflowError, struct.error, MemoryError) as e:
    # Wrong arguments to a tensor builder, an unhashable key and the like.
    raise CheckpointError(f"corrupt checkpoint pickle ({type(e).__name__})") from e
  return obj, machine.storages, machine.pos


# --- the two file formats -------------------------------------------------------------------

def _to_native(raw, dtype: np.dtype, big_endian: bool) -> np.ndarray:
  """Bytes of `dtype` elements in the file's byte order -> 1-D array in native order."""
  if not big_endian or dtype.itemsize == 1:
    return np.frombuffer(raw, dtype)
  # Swap per scalar (complex numbers are two floats); works for ml_dtypes' bfloat16 too.
  unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
  return np.frombuffer(raw, f">u{unit}").astype(f"=u{unit}").view(dtype)


def _read_legacy(data, budget: _Budget, max_nodes: int) -> Any:
  """Reads a legacy (pre-zip) checkpoint held in `data` (bytes or a memory map)."""
  pool: dict[str, np.ndarray] = {}
  magic, _, pos = _unpickle(data, 0, pool, True, max_nodes, budget)
  if type(magic) is not int or magic != _LEGACY_MAGIC:
    raise CheckpointError("not a PyTorch checkpoint (wrong magic number)")
  protocol, _, pos = _unpickle(data, pos, pool, True, max_nodes, budget)
  if type(protocol) is not int or protocol != _LEGACY_PROTOCOL:
    raise CheckpointError(f"unsupported legacy checkpoint protocol {_short(protocol)}")
  # System info: legacy data is always little-endian.
  _, _, pos = _unpickle(data, pos, pool, True, max_nodes, budget)
  obj, storages, pos = _unpickle(data, pos, pool, True, max_nodes, budget)
  keys, _, pos = _unpickle(data, pos, pool, True, max_nodes, budget)
  if type(keys) is not list or not all(type(k) is str for k in keys):
    raise CheckpointError("corrupt legacy checkpoint: bad storage key list")
  for key in keys:
    if key not in storages:
      raise CheckpointError(f"corrupt legacy checkpoint: data for unknown storage {_short(key)}")
    if key in pool:
      raise CheckpointError(f"corrupt legacy checkpoint: storage {_short(key)} stored twice")
    dtype, numel = storages[key]
    if pos + 8 > len(data):
      raise CheckpointError(f"truncated checkpoint: storage {_short(key)} is missing")
    (count,) = struct.unpack("<q", data[pos:pos + 8])
    if count != numel:
      raise CheckpointError(f"corrupt legacy checkpoint: storage {_short(key)} has {count} "
                            f"elements, expected {numel}")
    pos += 8
    size = count * dtype.itemsize
    if pos + size > len(data):
      raise CheckpointError(f"truncated checkpoint: storage {_short(key)} is cut short")
    budget.charge(size, f"storage {_short(key)}")
    pool[key] = _to_native(bytes(data[pos:pos + size]), dtype, big_endian=False)
    pos += size
  return obj


# Compression methods a zip checkpoint may use: torch writes stored records; deflate is read up
# to the declared size. bzip2 and lzma decompress without a bound per call, so they are refused.
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def _zip_record(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget,
                what: str, limit: int | None = None) -> bytes:
  """The bytes of one record, bounded by its declared size (charged to `budget` first)."""
  if info.compress_type not in _ZIP_METHODS:
    raise CheckpointError(f"{what} ({_short(info.filename)}) uses zip compression method "
                          f"{info.compress_type}; checkpoints are stored or deflated")
  if limit is not None and info.file_size > limit:
    raise CheckpointError(f"{what} ({_short(info.filename)}) declares {info.file_size} bytes, "
                          f"more than {limit}")
  budget.charge(info.file_size, what)
  with archive.open(info) as record:
    raw = record.read(info.file_size)
    if len(raw) != info.file_size or record.read(1):
      raise CheckpointError(f"{what} ({_short(info.filename)}) is not its declared size")
  return raw


def _read_zip(f: BinaryIO, budget: _Budget, max_nodes: int) -> Any:
  """Reads a zip checkpoint (`torch.save` >= 1.6, or a TorchScript archive)."""
  try:
    return _read_zip_records(f, budget, max_nodes)
  except CheckpointError:
    raise
  except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
          NotImplementedError, RuntimeError, struct.error, UnicodeError, zlib.error) as e:
    raise CheckpointError(f"corrupt zip checkpoint ({_describe(e)})") from None


def check_zip_directory(f: BinaryIO) -> None:
  """Refuses a zip whose central directory declares more than `MAX_ZIP_ENTRIES` records or
  more than `_MAX_ZIP_DIRECTORY` bytes, before zipfile builds an object per record.

  Reads the end record the way zipfile does (`zipfile._EndRecData`, zip64 included), since
  zipfile trusts the directory's size, not its count. `f` is left at its start.
  """
  try:
    end = zipfile._EndRecData(f)  # pylint: disable=protected-access
  finally:
    f.seek(0)
  if not end:
    return  # zipfile says why
  entries = end[zipfile._ECD_ENTRIES_TOTAL]  # pylint: disable=protected-access
  size = end[zipfile._ECD_SIZE]  # pylint: disable=protected-access
  if entries > MAX_ZIP_ENTRIES or size > _MAX_ZIP_DIRECTORY:
    raise CheckpointError(f"the zip declares {entries} records in {size} bytes of directory, "
                          f"more than {MAX_ZIP_ENTRIES} records or {_MAX_ZIP_DIRECTORY} bytes")


def _read_zip_records(f: BinaryIO, budget: _Budget, max_nodes: int) -> Any:
  check_zip_directory(f)
  archive = zipfile.ZipFile(f)
  with archive:
    records = {}
    for info in archive.infolist():
      records.setdefault(info.filename, info)
    pickles = [n for n in records if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
      raise CheckpointError("zip is not a PyTorch checkpoint: expected one <archive>/data.pkl, "
                            f"found {len(pickles)}")
    prefix = pickles[0][:-len("data.pkl")]
    big_endian = False
    if prefix + "byteorder" in records:
      order = _zip_record(archive, records[prefix + "byteorder"], budget, "the byte order",
                          limit=16).decode("ascii", "replace").strip()
      if order not in ("little", "big"):
        raise CheckpointError(f"unknown byte order {_short(order)} in checkpoint")
      big_endian = order == "big"
    pool: dict[str, np.ndarray] = {}
    pkl = _zip_record(archive, records[pickles[0]], budget, "the pickle")
    obj, storages, _ = _unpickle(pkl, 0, pool, False, max_nodes, budget)
    del pkl
    for key, (dtype, numel) in storages.items():
      info = records.get(f"{prefix}data/{key}")
      if info is None:
        raise CheckpointError(f"checkpoint lacks the data of storage {_short(key)}")
      if info.file_size != numel * dtype.itemsize:
        raise CheckpointError(f"storage {_short(key)} has {info.file_size} bytes, expected "
                              f"{numel} x {dtype.itemsize}")
      raw = _zip_record(archive, info, budget, f"storage {_short(key)}")
      if big_endian and dtype.itemsize > 1:
        budget.charge(len(raw), f"storage {_short(key)} in native byte order")
      pool[key] = _to_native(raw, dtype, big_endian)
  return obj


def default_max_bytes(file_size: int) -> int:
  """The byte budget of a file of `file_size` bytes: `RRJAX_WEIGHTS_MAX_BYTES`, else
  `BYTES_PER_FILE_BYTE * file_size + BYTES_SLACK`."""
  value = os.environ.get(MAX_BYTES_ENV, "")
  if value:
    try:
      return int(value)
    except ValueError:
      raise errors.UserError(f"{MAX_BYTES_ENV}={value[:40]!r} is not a number of bytes") from None
  return BYTES_PER_FILE_BYTE * file_size + BYTES_SLACK


def _name(source: Source) -> str:
  """The file's name for messages."""
  if isinstance(source, (str, os.PathLike)):
    return os.fspath(source)
  name = getattr(source, "name", None)
  return name if isinstance(name, str) else "<weights file object>"


def _load(source: Source, budget_bytes: int | None, max_nodes: int):
  """`(object tree, budget)` of `source`; errors not yet prefixed with the file's name."""
  if isinstance(source, (str, os.PathLike)):
    try:
      if not stat.S_ISREG(os.stat(source).st_mode):  # a FIFO or a device would block or flood
        raise CheckpointError("not a regular file")
      f = open(source, "rb")
    except OSError as e:
      raise CheckpointError(f"cannot open the weights file ({e.strerror or e})") from None
    with f:
      size = os.fstat(f.fileno()).st_size
      if size == 0:
        raise CheckpointError("not a PyTorch checkpoint (empty file)")
      budget = _Budget(default_max_bytes(size) if budget_bytes is None else budget_bytes)
      head = f.read(512)
      f.seek(0)
      if head.startswith(b"PK\x03\x04"):
        return _read_zip(f, budget, max_nodes), budget
      _check_pickle_head(head)
      # Mapped, not read: only the storages are copied out.
      with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _read_legacy(data, budget, max_nodes), budget
  start = source.tell()
  data = source.read()
  source.seek(start)
  budget = _Budget(default_max_bytes(len(data)) if budget_bytes is None else budget_bytes)
  budget.charge(len(data), "the file")
  if data.startswith(b"PK\x03\x04"):
    return _read_zip(io.BytesIO(data), budget, max_nodes), budget
  _check_pickle_head(data[:512])
  return _read_legacy(data, budget, max_nodes), budget


def _check_pickle_head(head: bytes) -> None:
  if head[257:262] == b"ustar":
    raise CheckpointError("tar-based checkpoints (torch < 0.4) are not supported")
  if head[:1] != b"\x80":  # pickle PROTO opcode: the legacy format's magic-number pickle
    raise CheckpointError("not a PyTorch checkpoint (neither a zip archive nor a pickle)")


def _guarded(source: Source, work):
  """Runs `work()`; any failure on the file's data becomes one CheckpointError naming it."""
  name = _name(source)
  try:
    return work()
  except CheckpointError as e:
    raise type(e)(f"{name}: {e}") from None
  except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, TypeError,
          IndexError, OverflowError, struct.error, NotImplementedError, RuntimeError,
          UnicodeError, MemoryError, zlib.error) as e:
    # zipfile and numpy fail on damaged input in all these ways; all mean the same here.
    raise CheckpointError(f"{name}: corrupt checkpoint ({_describe(e)})") from None


def _describe(e: Exception) -> str:
  """`Type: message` of a library's exception, on one short line."""
  return errors.one_line(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, 160)


def load(source: Source, *, max_bytes: int | None = None, max_nodes: int = MAX_NODES) -> Any:
  """Unpickles a checkpoint with tensors as `Tensor` records whose data is loaded.

  Args:
    source: a path, or a seekable binary file object positioned at the file's start.
    max_bytes: what the read may allocate (default `default_max_bytes` of the file's size).
    max_nodes: objects the pickle may build.

  Returns:
    The saved object: usually a dict of tensors, or whatever dict, list and tuple nesting
    the file holds; TorchScript modules come back as `ScriptObject`s.

  Raises:
    UnsafeWeightsError: the file asks to call anything but the tensor-building allowlist.
    CheckpointError: the file is not a readable PyTorch checkpoint, or exceeds a budget.
  """
  return _guarded(source, lambda: _load(source, max_bytes, max_nodes)[0])


def flatten(tree: Any, key: str | None = None, *, max_nodes: int = MAX_NODES,
            budget: _Budget | None = None) -> dict[str, Tensor]:
  """Names every tensor of a `load`ed tree by its dotted path.

  Dict keys, list/tuple indices and TorchScript attribute names become path components;
  everything that is not a tensor (step counters, config strings, flags) is dropped. A
  container reached again on another path (a shared subtree) is walked again, so its tensors
  get each name, but the walk as a whole visits at most `max_nodes` nodes.

  Args:
    tree: what `load` returned.
    key: optional dotted path of the subtree to flatten (e.g. "state_dict" or
      "model.ema"); names are then relative to it.

    max_nodes: paths the walk may visit.
    budget: charged with the characters of every name made (`read` passes the file's).

  Raises:
    KeyError: `key` names no sub-object.
    CheckpointError: the walk is too long or too deep, a name too long, or two tensors get
      one name.
  """
  if key is not None:
    for part in key.split("."):
      node = tree.state if isinstance(tree, ScriptObject) else tree
      if isinstance(node, dict) and part in node:
        tree = node[part]
      elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
        tree = node[int(part)]
      else:
        available = (sorted(str(k)[:40] for k in node)[:20] if isinstance(node, dict)
                     else type(node).__name__)
        raise KeyError(f"checkpoint has no entry {part!r} on the path {key!r} "
                       f"(found: {available})")
  out: dict[str, Tensor] = {}
  visits = 0
  above: set[int] = set()  # ids of the containers on the current path: cycles end there
  # Iterative, depth-first in file order; `_LEAVE` entries take a container off the path.
  stack: list = [(tree, "")]
  while stack:
    node, name = stack.pop()
    if node is _LEAVE:
      above.discard(name)
      continue
    visits += 1
    if visits > max_nodes:
      raise CheckpointError(f"the checkpoint's object tree has more than {max_nodes} paths "
                            "(shared subtrees?)")
    if isinstance(node, Tensor):
      if name in out:
        raise CheckpointError(f"two tensors are both named {_short(name)}")
      out[name] = node
      continue
    if not isinstance(node, (ScriptObject, dict, list, tuple)):
      continue
    if id(node) in above:
      continue  # a cycle
    if len(above) >= _MAX_DEPTH:
      raise CheckpointError(f"the checkpoint's object tree nests deeper than {_MAX_DEPTH}")
    # Each child is a visit to come: counted before the list of them is made.
    if visits + len(stack) + (1 if isinstance(node, ScriptObject) else len(node)) > max_nodes:
      raise CheckpointError(f"the checkpoint's object tree has more than {max_nodes} paths "
                            "(shared subtrees?)")
    if isinstance(node, ScriptObject):
      children = [("", node.state)]
    elif isinstance(node, dict):
      children = [(_part(k), v) for k, v in node.items()]
    else:
      children = [(str(i), v) for i, v in enumerate(node)]
    above.add(id(node))
    stack.append((_LEAVE, id(node)))
    for part, child in reversed(children):
      path = f"{name}.{part}" if name and part else name or part
      if len(path) > _MAX_NAME:
        raise CheckpointError(f"a tensor path of over {_MAX_NAME} characters "
                              f"({_short(path, 40)})")
      if budget is not None:
        budget.charge(len(path), "the tensors' names")
      stack.append((child, path))
  return out


_LEAVE = object()


def _part(key) -> str:
  """A dict key as a name component (keys are scalars or flat tuples: `_key`)."""
  if isinstance(key, int) and not isinstance(key, bool) and key.bit_length() > 128:
    raise CheckpointError("a dict keyed by an overlong integer")
  return str(key)


def read(source: Source, key: str | None = None, *, max_bytes: int | None = None,
         max_nodes: int = MAX_NODES) -> dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint's tensors as numpy arrays, running none of its code.

  Args:
    source: a path, or a seekable binary file object positioned at the file's start.
    key: optional dotted path of the sub-object holding the weights (e.g. "state_dict");
      without it every tensor in the file is returned, named by its full dotted path
      (so `{"model": {"fc.weight": ...}}` gives "model.fc.weight").
    max_bytes: what the read may allocate in all (pickle, storages, returned arrays); default
      `default_max_bytes` of the file's size (`RRJAX_WEIGHTS_MAX_BYTES` sets it).
    max_nodes: objects the pickle may build, and paths the tensor walk may visit.

  Returns:
    Flat dict name -> C-contiguous array in native byte order, with torch's dtype
    (float16 stays float16, bfloat16 is `ml_dtypes.bfloat16`).

  Raises:
    UnsafeWeightsError: the file asks to call anything but the tensor-building allowlist.
    CheckpointError (a `rrjax.errors.UserError`): the file is not a readable PyTorch
      checkpoint, or exceeds a budget; one line naming the file.
    KeyError: `key` does not name a sub-object of the file.
  """
  def work():
    tree, budget = _load(source, max_bytes, max_nodes)
    tensors = flatten(tree, key, max_nodes=max_nodes, budget=budget)
    for name, tensor in tensors.items():
      tensor.check()
      budget.charge(tensor.nbytes, f"tensor {_short(name)} of shape {_dims(tensor.shape)}")
    return {name: tensor.numpy() for name, tensor in tensors.items()}
  return _guarded(source, work)
