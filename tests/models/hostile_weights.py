"""Hostile weights files (issue #12): weights are data, so no file may crash the process, read
its memory, run code or exhaust the machine.

`CASES` maps a case name to a generator `make(tmp) -> (path, extra_cli_args)`. It writes one
hostile weights file (or HF directory) under the folder `tmp` and returns what to pass to
`python -m rrjax.models.inspect_weights PATH *extra_cli_args`. Every case must end in a
one-line `error: ...` (exit status 2; shorter than `MAX_ERROR_BYTES` where given), except
those in `MAY_LOAD`, which may also load; those in `KNOWN_LIMITS` are expected to fail. Cases
that try to run code try to create `tmp / MARKER`; cases that must not open a file outside
the weights make that file a FIFO whose opening the harness notices (`fifos`).

Everything is generated here, nothing binary is committed. Pickles are written either with
the stand-in torch modules of `test_torch_reader` (the GLOBAL names and storage ids torch
writes) or opcode by opcode, where the stdlib pickler cannot express the attack (BUILD on
objects the reader made, shared or deep structures, values used where an error is raised).
Zip bombs are written by hand (`_write_zip`) from one compressed stream made once per process,
so that a record can lie about its size; pickles of megabytes of repeated opcodes are deflated
(`_deflated`), so that the file stays small.
"""

import bz2
import functools
import json
import os
import pathlib
import pickle
import pickletools
import shlex
import stat
import struct
import zipfile
import zlib
from typing import Callable

import numpy as np

from tests.models import test_torch_reader as tr

Path = pathlib.Path
Case = Callable[[Path], tuple[Path, list[str]]]

# Created by the payload of the cases that try to run code.
MARKER = "MARKER"
# Cases for which loading is an acceptable outcome, as long as it is fast and small: 100k
# storages are many but legal; a record whose data runs past its declared size may be read up
# to that size, the 4 bytes the storage needs; a list holding only itself holds no tensors.
MAY_LOAD = frozenset({"many_storages", "zip_bomb_storage_lying_size", "self_list_fanout"})
# Cases that must end sooner than the harness's timeout (seconds).
MAX_SECONDS = {"many_storages": 20.0, "self_list_fanout": 20.0}
# Cases whose one-line error must also match this (regular expression).
MESSAGE_PATTERNS = {
    "hf_index_parent_escape": r"index|outside\.msgpack",
    "hf_index_absolute_path": r"index|/etc/passwd",
    "hf_index_escape_fifo": r"index|outside\.fifo",
}

# Cases whose error line must be shorter than the harness's default (bytes): files whose names,
# shapes or offsets would make a message of megabytes. The harness runs them without
# inspect_weights' own cut of the message to 300 characters, to see the message made.
MAX_ERROR_BYTES = {case: 1000 for case in (
    "huge_shape_message", "huge_offset_message", "effnet_long_tensor_name",
    "clip_rn50_long_tensor_name", "effnet_kilobyte_tensor_name", "clip_rn50_kilobyte_tensor_name",
    "hf_long_msgpack_key", "npz_long_key", "long_names_fanout", "long_names_fanout_short_key",
    "long_names_deep", "long_names_deep_short_key")}
# Cases that fail for a known reason, not fixed yet: the harness expects them to fail (strict
# xfail), so a fix shows up as an unexpected pass.
# (None at present: hf_msgpack_many_empty_arrays was one until rrjax counted msgpack arrays.)
KNOWN_LIMITS: dict[str, str] = {}

CASES: dict[str, Case] = {}

# Decompressed size of the zip bombs: a quarter of the harness's address-space limit.
BOMB_BYTES = 1 << 30


def _case(fn: Case) -> Case:
  """Registers `fn` under its name, without the leading underscore."""
  CASES[fn.__name__.lstrip("_")] = fn
  return fn


def marker(tmp: Path) -> Path:
  """The file a case's payload would create if it ran."""
  return tmp / MARKER


def fifos(tmp: Path) -> list[Path]:
  """The FIFOs a case placed under `tmp`: opening one means reading outside the weights."""
  found = []
  for root, _, files in os.walk(tmp):
    found += [Path(root, f) for f in files if stat.S_ISFIFO(os.lstat(Path(root, f)).st_mode)]
  return found


def _touch(tmp: Path) -> str:
  return f"touch {shlex.quote(str(marker(tmp)))}"


# --- pickle opcodes -----------------------------------------------------------------------------

def _lit(value) -> bytes:
  """Opcodes pushing a plain value (None, bool, int, str, and tuples, lists, dicts of them)."""
  # optimize drops the unused memo PUTs, so the opcodes can be spliced anywhere.
  return pickletools.optimize(pickle.dumps(value, protocol=2))[2:-1]


def _global(module: str, name: str) -> bytes:
  return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _put(index: int) -> bytes:
  """Stores the top of the stack in memo slot `index` (and leaves it there)."""
  return pickle.LONG_BINPUT + struct.pack("<I", index)


def _get(index: int) -> bytes:
  """Pushes memo slot `index`: the same object again, for two bytes more."""
  return pickle.LONG_BINGET + struct.pack("<I", index)


def _str8(text: str) -> bytes:
  """Pushes `text` (BINUNICODE8: any length)."""
  raw = text.encode()
  return pickle.BINUNICODE8 + struct.pack("<Q", len(raw)) + raw


def _pickle(*ops: bytes) -> bytes:
  """A protocol-2 pickle of the opcodes `ops`."""
  return pickle.PROTO + b"\x02" + b"".join(ops) + pickle.STOP


def _storage_id(key: str, numel: int, type_ops: bytes | None = None) -> bytes:
  """Pushes what `persistent_load(("storage", torch.FloatStorage, key, "cpu", numel))` gives;
  `type_ops` replace the pushing of `torch.FloatStorage`."""
  type_ops = _global("torch", "FloatStorage") if type_ops is None else type_ops
  return (pickle.MARK + _lit("storage") + type_ops + _lit(key) + _lit("cpu") + _lit(numel)
          + pickle.TUPLE + pickle.BINPERSID)


def _rebuilt_tensor(storage_ops: bytes, offset: int, shape, stride) -> bytes:
  """Pushes `_rebuild_tensor_v2(<storage>, offset, shape, stride, False, OrderedDict())`."""
  hooks = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
  return (_global("torch._utils", "_rebuild_tensor_v2") + pickle.MARK + storage_ops
          + _lit(offset) + _lit(tuple(shape)) + _lit(tuple(stride)) + pickle.NEWFALSE + hooks
          + pickle.TUPLE + pickle.REDUCE)


def _set_attrs(attrs: dict) -> bytes:
  """BUILD with state `(None, attrs)`: without a `__setstate__`, the unpickler does
  `setattr(top, name, value)` for each item (which reaches functions and classes too)."""
  return _lit((None, attrs)) + pickle.BUILD


def _dict_pickle(items: dict[str, bytes]) -> bytes:
  """A pickle of a dict from names to the objects the opcodes `items` push."""
  body = b"".join(_lit(name) + ops for name, ops in items.items())
  return _pickle(pickle.EMPTY_DICT, pickle.MARK, body, pickle.SETITEMS)


# --- zip archives -------------------------------------------------------------------------------

@functools.cache
def _zeros_stream(method: int, size: int) -> tuple[bytes, int]:
  """`size` zero bytes compressed by zip `method` (deflate or bzip2), and their CRC-32."""
  compressor = (zlib.compressobj(9, zlib.DEFLATED, -15) if method == zipfile.ZIP_DEFLATED
                else bz2.BZ2Compressor(9))
  chunk, parts, crc = bytes(1 << 24), [], 0
  for _ in range(size // len(chunk)):
    parts.append(compressor.compress(chunk))
    crc = zlib.crc32(chunk, crc)
  parts.append(compressor.flush())
  return b"".join(parts), crc


class _Entry:
  """A zip record: its stored bytes, and the method, CRC and size its headers declare."""

  def __init__(self, raw: bytes, method=zipfile.ZIP_STORED, crc=None, size=None):
    self.raw, self.method = raw, method
    self.crc = zlib.crc32(raw) if crc is None else crc
    self.size = len(raw) if size is None else size


def _bomb(size: int = BOMB_BYTES, method=zipfile.ZIP_DEFLATED, declared=None) -> _Entry:
  """A record inflating to `size` zeros; its headers claim `declared` bytes (default: true)."""
  raw, crc = _zeros_stream(method, size)
  if declared is not None:
    crc = zlib.crc32(bytes(declared))  # what zipfile checks after cutting the output short
  return _Entry(raw, method, crc, size if declared is None else declared)


def _deflated(data: bytes) -> _Entry:
  """A deflated record of `data`: megabytes of repeated opcodes take kilobytes."""
  compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
  return _Entry(compressor.compress(data) + compressor.flush(), zipfile.ZIP_DEFLATED,
                zlib.crc32(data), len(data))


def _deflated_zeros(prefix: bytes, size: int) -> _Entry:
  """An honest deflated record of `prefix` and `size` zero bytes (`size` a multiple of 16 MiB),
  made fast: one compressed chunk of zeros, repeated; each copy ends in a full flush, which
  resets the compressor, so the copies chain."""
  chunk = bytes(1 << 24)
  compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
  head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
  body = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
  crc = zlib.crc32(prefix)
  for _ in range(size // len(chunk)):
    crc = zlib.crc32(chunk, crc)
  return _Entry(head + body * (size // len(chunk)) + compressor.flush(), zipfile.ZIP_DEFLATED,
                crc, len(prefix) + size)


def _write_zip(path: Path, entries: dict[str, _Entry | bytes]) -> Path:
  """A zip archive whose headers say whatever the entries declare (zip64 only for the count)."""
  local, central = bytearray(), bytearray()
  for name, entry in entries.items():
    entry = entry if isinstance(entry, _Entry) else _Entry(entry)
    version = 46 if entry.method == zipfile.ZIP_BZIP2 else 20
    fields = (version, 0, entry.method, 0, 0x21, entry.crc, len(entry.raw), entry.size,
              len(name.encode()))
    central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", version, *fields, 0, 0, 0, 0, 0,
                           len(local)) + name.encode()
    local += struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields, 0) + name.encode() + entry.raw
  end = b""
  count = len(entries)
  if count > 0xFFFF:  # only the record count needs zip64's end records
    end = (struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count,
                       len(central), len(local))
           + struct.pack("<4sLQL", b"PK\x06\x07", 0, len(local) + len(central), 1))
    count = 0xFFFF
  end += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), len(local), 0)
  path.write_bytes(bytes(local + central + end))
  return path


def _checkpoint(path: Path, data_pkl: bytes | _Entry, records=None, byteorder=b"little") -> Path:
  """A torch.save-style zip: `archive/data.pkl`, `archive/byteorder`, `archive/data/<key>`."""
  entries = {"archive/data.pkl": data_pkl, "archive/byteorder": byteorder,
             "archive/version": b"3\n"}
  entries.update({f"archive/data/{key}": raw for key, raw in (records or {}).items()})
  return _write_zip(path, entries)


def _one_tensor(path: Path, tensor_ops: bytes, numel: int) -> Path:
  """A zip whose `{"x": <tensor_ops>}` may use float32 storage "0" of `numel` elements."""
  return _checkpoint(path, _dict_pickle({"x": tensor_ops}),
                     {"0": np.arange(numel, dtype=np.float32).tobytes()})


def _f32(shape, key="0") -> object:
  """A contiguous float32 tensor of zeros, as `test_torch_reader` writes them."""
  n = int(np.prod(shape))
  return tr._tensor(tr._Storage(key, np.zeros(max(n, 1), np.float32)), 0, shape,
                    tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape))))


# --- files that try to run code -----------------------------------------------------------------

@_case
def _os_system_legacy(tmp):
  path = tmp / "evil_legacy.pth"
  tr.write_legacy(path, {"weight": _f32((3,)), "payload": tr._Evil(_touch(tmp))})
  return path, []


@_case
def _os_system_zip(tmp):
  path = tmp / "evil_zip.pt"
  tr.write_zip(path, {"weight": _f32((3,)), "payload": tr._Evil(_touch(tmp))})
  return path, []


@_case
def _os_system_bare_pickle(tmp):
  path = tmp / "evil.pkl"
  call = (_global("os", "system") + pickle.MARK + _lit(_touch(tmp)) + pickle.TUPLE
          + pickle.REDUCE)
  path.write_bytes(_pickle(call))
  return path, []


# --- damaged files ------------------------------------------------------------------------------

@_case
def _garbage(tmp):
  path = tmp / "garbage.pth"
  path.write_bytes(np.random.default_rng(12).bytes(4096))
  return path, []


@_case
def _truncated_zip(tmp):
  path = tmp / "truncated.pt"
  tr.write_zip(path, {"w": _f32((8, 8)), "b": _f32((8,), key="1")})
  blob = path.read_bytes()
  path.write_bytes(blob[:len(blob) // 2])
  return path, []


# --- BUILD on what the reader made --------------------------------------------------------------

def _built_tensor(tmp, name, numel, offset, shape, stride) -> tuple[Path, list[str]]:
  """A valid 1-D tensor over all of float32 storage "0", whose fields BUILD then replaces: the
  state is `(storage, offset, shape, stride)`, the pickled form of a frozen dataclass."""
  state = (pickle.MARK + _storage_id("0", numel) + _lit(offset) + _lit(tuple(shape))
           + _lit(tuple(stride)) + pickle.TUPLE)
  ops = _rebuilt_tensor(_storage_id("0", numel), 0, (numel,), (1,)) + state + pickle.BUILD
  return _one_tensor(tmp / name, ops, numel), []


@_case
def _build_tensor_negative_stride(tmp):
  # Element 1 lies 4 TiB below the storage: the bound check of the farthest element passes.
  return _built_tensor(tmp, "negative_stride.pt", 8, 0, (2,), (-(1 << 40),))


@_case
def _build_tensor_negative_offset(tmp):
  # A view starting 16 elements before the end, 64 long: 48 elements of heap after it.
  return _built_tensor(tmp, "negative_offset.pt", 64, -16, (64,), (1,))


@_case
def _build_tensor_huge_stride(tmp):
  # The strides cancel out in a sum of (n - 1) * stride, yet element (1, 0) is 4 EiB away.
  return _built_tensor(tmp, "huge_stride.pt", 8, 0, (2, 2), (1 << 60, -(1 << 60)))


@_case
def _build_storage(tmp):
  # The storage's fields (key, dtype, numel, location, element pool, start), the pool replaced
  # by the file's own dict.
  state = _lit(("0", None, 4, "cpu", {"0": "not an array"}, 0)) + pickle.BUILD
  storage = _storage_id("0", 4) + state
  return _one_tensor(tmp / "build_storage.pt", _rebuilt_tensor(storage, 0, (4,), (1,)), 4), []


@_case
def _build_storage_type(tmp):
  # torch.FloatStorage (name, dtype) with a 1 GB element type.
  storage_type = _global("torch", "FloatStorage") + _lit(("FloatStorage", "V1000000000"))
  storage = _storage_id("0", 4, type_ops=storage_type + pickle.BUILD)
  return (_one_tensor(tmp / "build_storage_type.pt", _rebuilt_tensor(storage, 0, (4,), (1,)), 4),
          [])


def build_allowlisted_function(path: Path) -> Path:
  """A zip that BUILDs on the reader's allowlisted callables: attributes on the tensor
  rebuilder and new default arguments for it and for `torch.device`, which would outlive the
  file in the reading process. Besides, a valid tensor "x"."""
  rebuild = _global("torch._utils", "_rebuild_tensor_v2") + _lit(
      ({"pwned": True}, {"__defaults__": (True, None, None)})) + pickle.BUILD
  device = _global("torch", "device") + _set_attrs({"__defaults__": ("pwned",)})
  tensor = _rebuilt_tensor(_storage_id("0", 4), 0, (4,), (1,))
  return _checkpoint(path, _dict_pickle({"x": tensor, "f": rebuild, "g": device}),
                     {"0": np.arange(4, dtype=np.float32).tobytes()})


@_case
def _build_allowlisted_function(tmp):
  return build_allowlisted_function(tmp / "build_function.pt"), []


@_case
def _build_ordereddict_class(tmp):
  ops = _global("collections", "OrderedDict") + _set_attrs({"fromkeys": None})
  return _checkpoint(tmp / "build_ordereddict.pt", _dict_pickle({"f": ops})), []


@_case
def _build_script_class(tmp):
  # After building an instance (holding a tensor), BUILD on its TorchScript class turns the
  # class's attribute lookup into an allowlisted function, which hides the instance's state.
  memo = struct.pack("<I", 1000)
  instance = (_global("__torch__.model", "CLIP") + pickle.LONG_BINPUT + memo + pickle.EMPTY_TUPLE
              + pickle.NEWOBJ + pickle.EMPTY_DICT + _lit("w")
              + _rebuilt_tensor(_storage_id("0", 4), 0, (4,), (1,)) + pickle.SETITEM
              + pickle.BUILD)
  cls = (pickle.LONG_BINGET + memo + pickle.MARK + pickle.NONE + pickle.EMPTY_DICT
         + _lit("__getattribute__") + _global("torch.jit._pickle", "restore_type_tag")
         + pickle.SETITEM + pickle.TUPLE + pickle.BUILD)
  data_pkl = _pickle(pickle.EMPTY_LIST, pickle.MARK, instance, cls, pickle.APPENDS)
  path = _checkpoint(tmp / "build_script_class.pt", data_pkl,
                     {"0": np.arange(4, dtype=np.float32).tobytes()})
  return path, []


# --- Hugging Face directories -------------------------------------------------------------------

# A tiny CLIPVisionConfig: what a directory needs to reach its weights.
_TINY_VISION = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 37,
                "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32,
                "patch_size": 16, "projection_dim": 16}
_CLIP_VIT = ["--model", "clip_vit_b16"]


def _hf_dir(folder: Path, files: dict[str, bytes | str] | None = None,
            config: dict | str | None = None) -> Path:
  """An HF model directory with `config.json` (default: a tiny CLIP vision tower) and `files`."""
  folder.mkdir(parents=True)
  config = _TINY_VISION if config is None else config
  files = {"config.json": config if isinstance(config, str) else json.dumps(config),
           **(files or {})}
  for name, content in files.items():
    if isinstance(content, str):
      (folder / name).write_text(content)
    else:
      (folder / name).write_bytes(content)
  return folder


def _evil_module(tmp) -> str:
  """Python that creates the marker when imported, and the config class it promises."""
  return (f"import pathlib\npathlib.Path({str(marker(tmp))!r}).touch()\n"
          "from transformers import PretrainedConfig\n\n\n"
          "class EvilConfig(PretrainedConfig):\n  model_type = 'evil'\n")


@_case
def _hf_auto_map_clip_type(tmp):
  config = {**_TINY_VISION, "auto_map": {"AutoConfig": "evil.EvilConfig"}}
  return _hf_dir(tmp / "clip_hf_dir", {"evil.py": _evil_module(tmp)}, config), _CLIP_VIT


@_case
def _hf_auto_map_remote_code(tmp):
  # No known model type: transformers asks on the terminal whether to run evil.py (the
  # harness answers "y" on stdin).
  config = {key: value for key, value in _TINY_VISION.items() if key != "model_type"}
  config["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
  return _hf_dir(tmp / "clip_hf_dir", {"evil.py": _evil_module(tmp)}, config), _CLIP_VIT


def _flax_msgpack() -> bytes:
  """A well-formed Flax msgpack of one array."""
  from flax import serialization  # flax is heavy; only the cases that need it import it
  return serialization.msgpack_serialize({"vision_model": {"x": np.zeros(4, np.float32)}})


_INDEX = "flax_model.msgpack.index.json"


def _index(*shards: str) -> str:
  """A Flax shard index mapping one weight to each of `shards`."""
  weight_map = {f"vision_model.w{i}": shard for i, shard in enumerate(shards)}
  return json.dumps({"metadata": {"total_size": 16}, "weight_map": weight_map})


@_case
def _hf_index_parent_escape(tmp):
  (tmp / "outside.msgpack").write_bytes(_flax_msgpack())
  folder = _hf_dir(tmp / "nest" / "clip_hf_dir", {_INDEX: _index("../../outside.msgpack")})
  return folder, _CLIP_VIT


@_case
def _hf_index_absolute_path(tmp):
  return _hf_dir(tmp / "clip_hf_dir", {_INDEX: _index("/etc/passwd")}), _CLIP_VIT


@_case
def _hf_index_escape_fifo(tmp):
  os.mkfifo(tmp / "outside.fifo")
  folder = _hf_dir(tmp / "clip_hf_dir",
                   {_INDEX: _index("model-00001-of-00002.msgpack", "../outside.fifo")})
  (folder / "model-00001-of-00002.msgpack").write_bytes(_flax_msgpack())
  return folder, _CLIP_VIT


def _safetensors(header: dict, data: bytes, header_size: int | None = None) -> bytes:
  """A safetensors file: u64 header size, JSON header, data; the size field may lie."""
  text = json.dumps(header).encode()
  return struct.pack("<Q", len(text) if header_size is None else header_size) + text + data


@_case
def _hf_safetensors_lying_header(tmp):
  blob = _safetensors({"__metadata__": {"format": "pt"}}, b"", header_size=1 << 40)
  return _hf_dir(tmp / "clip_hf_dir", {"model.safetensors": blob}), _CLIP_VIT


@_case
def _hf_bad_msgpack(tmp):
  garbage = np.random.default_rng(18).bytes(4096)
  return _hf_dir(tmp / "clip_hf_dir", {"flax_model.msgpack": garbage}), _CLIP_VIT


@_case
def _hf_bad_config_json(tmp):
  truncated = '{"model_type": "clip_vision_model", "hidden'
  return _hf_dir(tmp / "clip_hf_dir", config=truncated), _CLIP_VIT


# --- other loaders: shapes and files the model code trips on ------------------------------------

def _scalar() -> object:
  return tr._tensor(tr._Storage("s", np.ones(1, np.float32)), 0, (), ())


@_case
def _effnet_scalar_fc_bias(tmp):
  path = tmp / "lite0_scalar_bias.pth"
  tr.write_zip(path, {"_conv_stem.weight": _f32((32, 3, 3, 3)),
                      "_fc.weight": _f32((10, 1280), key="1"), "_fc.bias": _scalar()})
  return path, ["--model", "efficientnet_lite0"]


@_case
def _effnet_empty_fc_bias(tmp):
  path = tmp / "lite0_empty_bias.pth"
  empty = tr._tensor(tr._Storage("e", np.ones(1, np.float32)), 0, (0,), (1,))
  tr.write_zip(path, {"_conv_stem.weight": _f32((32, 3, 3, 3)),
                      "_fc.weight": _f32((0, 1280), key="1"), "_fc.bias": empty})
  return path, ["--model", "efficientnet_lite0"]


@_case
def _clip_rn50_scalar_positional_embedding(tmp):
  path = tmp / "rn50_scalar.pt"
  tr.write_zip(path, {"visual.layer1.0.conv1.weight": _f32((64, 64, 1, 1)),
                      "visual.attnpool.c_proj.weight": _f32((16, 32), key="1"),
                      "visual.attnpool.positional_embedding": _scalar()})
  return path, ["--model", "clip_rn50"]


@_case
def _open_clip_vit_scalar_patch_kernel(tmp):
  """Every tensor of an open_clip ViT-B-32 image tower, the patch embedding's a scalar, which a
  layout change (OIHW -> HWIO) would transpose: as `--model open_clip:ViT-B-32` loads it."""
  from rrjax.models import openai_layout  # pylint: disable=import-outside-toplevel
  names = sorted({name for name, _, _ in openai_layout._vit_rows(12).values()})
  tree = {"visual." + name: _f32((3,), key=str(i)) for i, name in enumerate(names)}
  tree["visual.class_embedding"] = _f32((768,), key="c")
  tree["visual.conv1.weight"] = _scalar()
  path = tmp / "open_clip_vit_b32.bin"
  tr.write_zip(path, tree)
  return path, ["--model", "open_clip:ViT-B-32"]


@_case
def _safetensors_lying_header_rn50(tmp):
  # The header size field points 1000 bytes past the end of the file.
  header = {"visual.conv1.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
  blob = _safetensors(header, bytes(8))
  path = tmp / "rn50_lying_header.safetensors"
  path.write_bytes(struct.pack("<Q", len(blob) + 1000) + blob[8:])
  return path, ["--model", "clip_rn50"]


@_case
def _safetensors_bad_offsets_rn50(tmp):
  # A 4 MB tensor whose data would lie far past the 16 bytes the file has.
  header = {"visual.conv1.weight": {"dtype": "F32", "shape": [1000, 1000],
                                    "data_offsets": [0, 4_000_000]}}
  path = tmp / "rn50_bad_offsets.safetensors"
  path.write_bytes(_safetensors(header, bytes(16)))
  return path, ["--model", "clip_rn50"]


# --- resource exhaustion from tiny files --------------------------------------------------------

@_case
def _shared_subtrees(tmp):
  # 2^40 paths to one tensor, through lists that hold the same list twice (memo references).
  tree = [_f32((2,))]
  for _ in range(40):
    tree = [tree, tree]
  path = tmp / "shared_subtrees.pt"
  tr.write_zip(path, {"model": tree})
  return path, []


@_case
def _huge_error_repr(tmp):
  # A storage id whose storage type is a list printing as 2^40 zeros: an error message that
  # formats it in full needs terabytes.
  memo = 1000
  nested = pickle.EMPTY_LIST + _lit(0) + pickle.APPEND
  double = (pickle.LONG_BINPUT + struct.pack("<I", memo) + pickle.POP + pickle.EMPTY_LIST
            + pickle.MARK + (pickle.LONG_BINGET + struct.pack("<I", memo)) * 2 + pickle.APPENDS)
  storage = _storage_id("0", 4, type_ops=nested + double * 40)
  tensor = _rebuilt_tensor(storage, 0, (4,), (1,))
  return _one_tensor(tmp / "huge_error_repr.pt", tensor, 4), []


@_case
def _stride0_huge(tmp):
  # 600M elements on a one-element storage: a copy would take 2.4 GB.
  path = tmp / "stride0.pt"
  one = tr._Storage("0", np.ones(1, np.float32))
  tr.write_zip(path, {"x": tr._tensor(one, 0, (600_000_000,), (0,))})
  return path, []


@_case
def _shape_2_63_stride0(tmp):
  path = tmp / "shape_2_63.pt"
  one = tr._Storage("0", np.ones(1, np.float32))
  tr.write_zip(path, {"x": tr._tensor(one, 0, (1 << 63,), (0,))})
  return path, []


@_case
def _shape_2_63_empty(tmp):
  path = tmp / "shape_2_63_empty.pt"
  one = tr._Storage("0", np.ones(1, np.float32))
  tr.write_zip(path, {"x": tr._tensor(one, 0, (0, 1 << 63), (1, 1))})
  return path, []


@_case
def _stride_overflow(tmp):
  # One element, but a stride whose size in bytes overflows int64.
  path = tmp / "stride_overflow.pt"
  one = tr._Storage("0", np.ones(1, np.float32))
  tr.write_zip(path, {"x": tr._tensor(one, 0, (1,), (1 << 62,))})
  return path, []


def _small_checkpoint() -> tuple[bytes, dict[str, bytes]]:
  """data.pkl and the storage records of a valid `{"x": float32[4]}`."""
  return (_dict_pickle({"x": _rebuilt_tensor(_storage_id("0", 4), 0, (4,), (1,))}),
          {"0": np.arange(4, dtype=np.float32).tobytes()})


@_case
def _zip_bomb_byteorder(tmp):
  data_pkl, records = _small_checkpoint()
  return _checkpoint(tmp / "bomb_byteorder.pt", data_pkl, records, byteorder=_bomb()), []


@_case
def _zip_bomb_data_pkl(tmp):
  _, records = _small_checkpoint()
  return _checkpoint(tmp / "bomb_data_pkl.pt", _bomb(), records), []


@_case
def _zip_bomb_storage(tmp):
  # An honest header: a 1 GiB storage (256M float32) deflated to 1 MB.
  numel = BOMB_BYTES // 4
  data_pkl = _dict_pickle({"x": _rebuilt_tensor(_storage_id("0", numel), 0, (1,), (1,))})
  return _checkpoint(tmp / "bomb_storage.pt", data_pkl, {"0": _bomb()}), []


@_case
def _zip_bomb_storage_lying_size(tmp):
  # The headers declare the 4 bytes of a one-element storage; the data inflates to 1 GiB.
  data_pkl = _dict_pickle({"x": _rebuilt_tensor(_storage_id("0", 1), 0, (1,), (1,))})
  return _checkpoint(tmp / "bomb_lying_size.pt", data_pkl, {"0": _bomb(declared=4)}), []


@_case
def _zip_bzip2_bomb_storage(tmp):
  numel = BOMB_BYTES // 4
  data_pkl = _dict_pickle({"x": _rebuilt_tensor(_storage_id("0", numel), 0, (1,), (1,))})
  return (_checkpoint(tmp / "bomb_bzip2.pt", data_pkl,
                      {"0": _bomb(method=zipfile.ZIP_BZIP2)}), [])


@_case
def _deep_tuple_key(tmp):
  # A dict key nested 10^6 tuples deep: hashing it recurses once per level in C.
  key = _lit(0) + pickle.TUPLE1 * 1_000_000
  data_pkl = _pickle(pickle.EMPTY_DICT, key, _lit(0), pickle.SETITEM)
  return _checkpoint(tmp / "deep_tuple_key.pt", data_pkl), []


@_case
def _many_storages(tmp):
  # 100k storages of one element each: a 7 MB zip of 100k records. Written opcode by opcode,
  # the stand-in pickler takes quadratic time to collect so many storages.
  count = 100_000

  def memo(op, index):
    return op + struct.pack("<I", index)

  names = (_global("torch._utils", "_rebuild_tensor_v2") + memo(pickle.LONG_BINPUT, 0) + pickle.POP
           + _global("torch", "FloatStorage") + memo(pickle.LONG_BINPUT, 1) + pickle.POP
           + _global("collections", "OrderedDict") + memo(pickle.LONG_BINPUT, 2) + pickle.POP)
  tail = _lit("cpu") + _lit(1) + pickle.TUPLE + pickle.BINPERSID + _lit(0) + _lit((1,)) * 2
  hooks = memo(pickle.LONG_BINGET, 2) + pickle.EMPTY_TUPLE + pickle.REDUCE
  items = b"".join(
      _lit(f"t{i}") + memo(pickle.LONG_BINGET, 0) + pickle.MARK + pickle.MARK + _lit("storage")
      + memo(pickle.LONG_BINGET, 1) + _lit(str(i)) + tail + pickle.NEWFALSE + hooks
      + pickle.TUPLE + pickle.REDUCE for i in range(count))
  data_pkl = _pickle(names, pickle.EMPTY_DICT, pickle.MARK, items, pickle.SETITEMS)
  records = {str(i): np.float32(i).tobytes() for i in range(count)}
  return _checkpoint(tmp / "many_storages.pt", data_pkl, records), []


# --- names and messages as long as the file makes them ------------------------------------------

def _beside_tensor(path: Path, value_ops: bytes, setup: bytes = b"",
                   key_ops: bytes = b"") -> Path:
  """A checkpoint of `{"x": <a valid float32[4]>, "v": <value_ops>}`, its data.pkl deflated
  (megabytes of repeated opcodes in a file of kilobytes); `setup` runs first, to fill the memo
  slots that `value_ops` reuse; `key_ops` push another key than "v". The valid tensor keeps the
  file from being refused as empty before the reader gets to the value."""
  _, records = _small_checkpoint()
  data_pkl = _pickle(setup, pickle.EMPTY_DICT, _lit("x"),
                     _rebuilt_tensor(_storage_id("0", 4), 0, (4,), (1,)), pickle.SETITEM,
                     key_ops or _lit("v"), value_ops, pickle.SETITEM)
  return _checkpoint(path, _deflated(data_pkl), records)


def _long_names_fanout_file(path: Path, key_chars: int, count: int) -> Path:
  """`{K: [None] * count}`, K one string of `key_chars` characters, the items one memo object:
  tensor names are paths of keys and indices, `count` names of `key_chars` each."""
  key = _str8("k" * key_chars) + _put(0) + pickle.POP
  fanout = (pickle.EMPTY_LIST + pickle.NONE + _put(1) + pickle.POP + pickle.MARK
            + _get(1) * count + pickle.APPENDS)
  return _beside_tensor(path, fanout, setup=key, key_ops=_get(0))


@_case
def _long_names_fanout(tmp):
  """A 2 MB key over a list of 3000 items: flattening the tree built 3000 names of 2 MB each,
  6 GB from a file of a few KB; it died of MemoryError at 3.7 GiB."""
  return _long_names_fanout_file(tmp / "long_names_fanout.pt", 2 << 20, 3000), []


@_case
def _long_names_fanout_short_key(tmp):
  """The same with a key short enough for a limit on keys (1000 characters) over 1M items:
  1 GB of names, unless making them is charged to a budget. It loaded, at 1.4 GiB."""
  return _long_names_fanout_file(tmp / "long_names_fanout_1k.pt", 1000, 1_000_000), []


def _long_names_deep_file(path: Path, key_chars: int, depth: int) -> Path:
  """`depth` dicts nested, each keyed by one memo string of `key_chars` characters, a tensor
  innermost: the names on the way add up to `depth^2 / 2` keys."""
  key = _str8("k" * key_chars) + _put(0) + pickle.POP
  chain = ((pickle.EMPTY_DICT + _get(0)) * depth
           + _rebuilt_tensor(_storage_id("0", 4), 0, (4,), (1,)) + pickle.SETITEM * depth)
  return _beside_tensor(path, chain, setup=key)


@_case
def _long_names_deep(tmp):
  """999 dicts nested, each keyed by the same 1 MB string: the name of the innermost tensor is
  1 GB, and the names on the way add up to 500 GB. It ran past the 60 s timeout."""
  return _long_names_deep_file(tmp / "long_names_deep.pt", 1 << 20, 999), []


@_case
def _long_names_deep_short_key(tmp):
  """The same with keys of 1000 characters: a 1 MB name at the bottom, 500 MB on the way. It
  loaded, a tensor named by 1 MB."""
  return _long_names_deep_file(tmp / "long_names_deep_1k.pt", 1000, 999), []


@_case
def _huge_shape_message(tmp):
  """A shape of 32 dimensions, each an 8000-bit int: the error that the tensor is too large
  quoted the shape, a message of 77 KB."""
  tensor = _rebuilt_tensor(_storage_id("0", 4), 0, (1 << 8000,) * 32, (1,) * 32)
  return _one_tensor(tmp / "huge_shape_message.pt", tensor, 4), []


@_case
def _huge_offset_message(tmp):
  """A storage offset of 8000 bits: the error that the view lies past its storage quoted the
  offset, a message of 2.6 KB."""
  tensor = _rebuilt_tensor(_storage_id("0", 4), 1 << 8000, (4,), (1,))
  return _one_tensor(tmp / "huge_offset_message.pt", tensor, 4), []


_LONG_NAME = "0" * (10 << 20)
# A name under any limit the reader puts on keys, which reaches the model's loader.
_KILOBYTE_NAME = "0" * 1000


def _effnet_named(path: Path, name: str) -> tuple[Path, list[str]]:
  """An EfficientNet-Lite0 state dict with one more tensor, named `name`."""
  tr.write_zip(path, {name: _f32((3,)), "_conv_stem.weight": _f32((32, 3, 3, 3), key="1")})
  return path, ["--model", "efficientnet_lite0"]


@_case
def _effnet_long_tensor_name(tmp):
  """A state dict with a 10 MB tensor name, as `--model efficientnet_lite0` loads it: the
  "unexpected tensor" error quoted the name in full, a message of 10 MB."""
  return _effnet_named(tmp / "lite0_long_name.pth", _LONG_NAME)


@_case
def _effnet_kilobyte_tensor_name(tmp):
  """The same with a 1000-character name, which the reader passes on to the loader: a message
  of 1.2 KB."""
  return _effnet_named(tmp / "lite0_kilobyte_name.pth", _KILOBYTE_NAME)


def _clip_rn50_named(path: Path, name: str) -> tuple[Path, list[str]]:
  """A tensor `visual.<name>` beside the tensors the CLIP ResNet loader reads its widths
  from."""
  tr.write_zip(path, {"visual." + name: _f32((3,)),
                      "visual.layer1.0.conv1.weight": _f32((64, 64, 1, 1), key="1"),
                      "visual.attnpool.c_proj.weight": _f32((1024, 2048), key="2"),
                      "visual.attnpool.positional_embedding": _f32((50, 2048), key="3")})
  return path, ["--model", "clip_rn50"]


@_case
def _clip_rn50_long_tensor_name(tmp):
  """A 10 MB tensor name, as `--model clip_rn50` loads it: the error quoted it in full."""
  return _clip_rn50_named(tmp / "rn50_long_name.pt", _LONG_NAME)


@_case
def _clip_rn50_kilobyte_tensor_name(tmp):
  """The same with a 1000-character name, which the reader passes on to the loader: a message
  of 1.2 KB."""
  return _clip_rn50_named(tmp / "rn50_kilobyte_name.pt", _KILOBYTE_NAME)


# --- amplification: small files that make the reader build far more ----------------------------

@_case
def _memoize_flood(tmp):
  """60M MEMOIZE opcodes (a 60 MB data.pkl, deflated to 60 KB): each adds a memo entry, 60M
  references in a memo that no node count saw. It died of MemoryError at 2.8 GiB, in 17 s."""
  data_pkl = _pickle(pickle.EMPTY_DICT, pickle.MEMOIZE * (60 << 20))
  return _checkpoint(tmp / "memoize_flood.pt", _deflated(data_pkl)), []


@_case
def _mark_flood(tmp):
  """60M MARK opcodes (deflated to 60 KB): each pushes a mark, 60M entries on the mark stack,
  none of them an object that a node count saw. It took 2.6 GiB and 17 s to refuse it."""
  data_pkl = _pickle(pickle.NONE * 300, pickle.MARK * (60 << 20))
  return _checkpoint(tmp / "mark_flood.pt", _deflated(data_pkl)), []


def _calls(count: int, *args: int) -> bytes:
  """A list of `count` results of calling memo slot 2 on the memo slots `args`: one object
  counted per call, however much each call builds."""
  call = _get(2) + pickle.MARK + b"".join(_get(a) for a in args) + pickle.TUPLE + pickle.REDUCE
  return pickle.EMPTY_LIST + pickle.MARK + call * count + pickle.APPENDS


@_case
def _ordereddict_shared_pairs(tmp):
  """`collections.OrderedDict(pairs)` 200k times on one list of 100k pairs (a memo object): 20G
  dict entries from a file of a few hundred KB. It died of MemoryError at 3.7 GiB."""
  pairs = b"".join(pickle.BININT + struct.pack("<i", i) + pickle.NONE + pickle.TUPLE2
                   for i in range(100_000))
  setup = (pickle.EMPTY_LIST + pickle.MARK + pairs + pickle.APPENDS + _put(1) + pickle.POP
           + _global("collections", "OrderedDict") + _put(2) + pickle.POP)
  return _beside_tensor(tmp / "ordereddict_pairs.pt", _calls(200_000, 1), setup), []


@_case
def _codecs_encode_shared_string(tmp):
  """`_codecs.encode(s, "latin1")` (how pickles write bytes) 1000 times on one 8 MB string: 8 GB
  of bytes from a file of a few KB. It died of MemoryError at 3.7 GiB."""
  setup = (_str8("k" * (8 << 20)) + _put(1) + pickle.POP + _lit("latin1") + _put(3) + pickle.POP
           + _global("_codecs", "encode") + _put(2) + pickle.POP)
  return _beside_tensor(tmp / "codecs_encode.pt", _calls(1000, 1, 3), setup), []


@_case
def _device_huge_index(tmp):
  """`torch.device("cpu", i)` 900k times, `i` one 8180-bit int: each call formatted or checked
  the 2500-digit index. It ran past the 60 s timeout."""
  setup = (_lit("cpu") + _put(1) + pickle.POP + _lit((1 << 8180) - 1) + _put(3) + pickle.POP
           + _global("torch", "device") + _put(2) + pickle.POP)
  return _beside_tensor(tmp / "device_huge_index.pt", _calls(900_000, 1, 3), setup), []


# --- values nested 10^6 deep --------------------------------------------------------------------

_DEPTH = 1_000_000


@_case
def _deep_list_value(tmp):
  """A list nested 10^6 deep as a value (`_deep_tuple_key` nests a key): a recursive walk
  (flattening, a repr, a copy) would overflow the C stack. Already refused: the walk is
  iterative and stops at a depth limit."""
  value = pickle.EMPTY_LIST * _DEPTH + pickle.APPEND * (_DEPTH - 1)
  return _beside_tensor(tmp / "deep_list.pt", value), []


@_case
def _deep_tuple_value(tmp):
  """A tuple nested 10^6 deep as a value: deallocating or walking it recurses once per level.
  Already refused at the depth limit."""
  return _beside_tensor(tmp / "deep_tuple_value.pt", pickle.NONE + pickle.TUPLE1 * _DEPTH), []


@_case
def _deep_dict_value(tmp):
  """Dicts nested 10^6 deep as values (`{None: {None: ...}}`). Already refused: more objects
  than the node limit."""
  value = ((pickle.EMPTY_DICT + pickle.NONE) * (_DEPTH - 1) + pickle.EMPTY_DICT
           + pickle.SETITEM * (_DEPTH - 1))
  return _beside_tensor(tmp / "deep_dict_value.pt", value), []


@_case
def _deep_script_objects(tmp):
  """900k TorchScript objects, each BUILT with the next as its state: objects nested 900k
  deep. Already refused at the depth limit."""
  count = 900_000
  value = ((_get(1) + pickle.EMPTY_TUPLE + pickle.NEWOBJ) * count + pickle.BUILD * (count - 1))
  setup = _global("__torch__.model", "Module") + _put(1) + pickle.POP
  return _beside_tensor(tmp / "deep_script.pt", value, setup), []


# --- .npz files (`--model tiny_cnn`) -----------------------------------------------------------

_TINY_CNN = ["--model", "tiny_cnn"]


@functools.cache
def _tiny_cnn_arrays() -> dict[str, np.ndarray]:
  """The variables `tiny_cnn` expects, flat (as `weights_io.save_npz` writes them), zeros."""
  import jax  # pylint: disable=import-outside-toplevel
  from rrjax import models  # pylint: disable=import-outside-toplevel
  from rrjax.models import weights_io  # pylint: disable=import-outside-toplevel
  _, variables = models.load("tiny_cnn", pretrained=False)
  return {key: np.zeros(value.shape, value.dtype)
          for key, value in weights_io.flatten(jax.device_get(variables)).items()}


_NPZ_TARGET = "params/embed/kernel"  # the (32, 32) variable the cases replace


def _npz(path: Path, replace: dict[str, np.ndarray] | None = None,
         records: dict[str, _Entry | bytes] | None = None) -> Path:
  """`tiny_cnn`'s variables as `np.savez` writes them, `replace` swapping arrays (None drops
  one), then zip `records` added or replacing members (`<key>.npy`) by hand."""
  arrays = {**_tiny_cnn_arrays(), **(replace or {})}
  np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
  with zipfile.ZipFile(path) as archive:
    members = {info.filename: archive.read(info) for info in archive.infolist()}
  return _write_zip(path, {**members, **(records or {})})


def _npy_header(shape, descr: str = "<f4") -> bytes:
  """The header of a version 1.0 `.npy` file of `shape` and `descr`, whatever they claim."""
  header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
  header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
  return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@_case
def _npz_raw_member(tmp):
  """A member that is no `.npy` file: `np.load` gives it as bytes, not an array. It ended in
  a traceback (AttributeError: 'bytes' object has no attribute 'shape')."""
  return _npz(tmp / "raw_member.npz", records={"zzz": b"not an npy file"}), _TINY_CNN


@_case
def _npz_raw_member_expected_key(tmp):
  """An expected variable stored as raw bytes (no `.npy` suffix, no header): the shape check
  took `bytes` for an array, and ended in a traceback (AttributeError)."""
  path = _npz(tmp / "raw_expected.npz", {_NPZ_TARGET: None}, {_NPZ_TARGET: b"not an npy file"})
  return path, _TINY_CNN


def _npz_of_dtype(tmp, name: str, value: np.ndarray):
  return _npz(tmp / name, {_NPZ_TARGET: value}), _TINY_CNN


@_case
def _npz_str_dtype(tmp):
  """A `<U1` array of the expected shape: the cast to float32 parsed the strings, and ended in
  a traceback (ValueError: could not convert string to float)."""
  return _npz_of_dtype(tmp, "str_dtype.npz", np.full((32, 32), "x", "<U1"))


@_case
def _npz_datetime_dtype(tmp):
  """A datetime64 array of the expected shape: cast to float32, it loaded as numbers."""
  return _npz_of_dtype(tmp, "datetime_dtype.npz", np.zeros((32, 32), "datetime64[s]"))


@_case
def _npz_void_dtype(tmp):
  """A structured (void) array of the expected shape: the cast to float32 ended in a traceback
  (TypeError)."""
  return _npz_of_dtype(tmp, "void_dtype.npz", np.zeros((32, 32), [("a", "<f4"), ("b", "<i8")]))


@_case
def _npz_object_array(tmp):
  """An object array (pickled in the `.npy`). Already refused: `allow_pickle=False`."""
  return _npz_of_dtype(tmp, "object_array.npz", np.empty((32, 32), object))


@_case
def _npz_huge_header_shape(tmp):
  """A member whose header declares 3 * 2^30 float32 (12 GiB) and holds 64 bytes: numpy
  allocates the array before reading into it. It ended in a traceback (a MemoryError under the
  4 GiB limit; without one, 12 GiB of address space)."""
  member = _npy_header((3 << 30,)) + bytes(64)
  path = _npz(tmp / "huge_header.npz", {_NPZ_TARGET: None}, {f"{_NPZ_TARGET}.npy": member})
  return path, _TINY_CNN


@_case
def _npz_deflate_bomb(tmp):
  """An honest member of 3 GiB deflated to 3 MB, a valid `.npy` of 768M float32. It ended in a
  traceback (a MemoryError under the 4 GiB limit; without one, 3 GiB read)."""
  member = _deflated_zeros(_npy_header(((3 << 30) // 4,)), 3 << 30)
  path = _npz(tmp / "deflate_bomb.npz", {_NPZ_TARGET: None}, {f"{_NPZ_TARGET}.npy": member})
  return path, _TINY_CNN


@_case
def _npz_long_key(tmp):
  """A member named by 60000 characters (a zip name holds at most 64 KiB): the "unexpected
  variable" error quoted it in full, a message of 60 KB."""
  member = _npy_header((1,)) + bytes(4)
  return _npz(tmp / "long_key.npz", records={"0" * 60_000 + ".npy": member}), _TINY_CNN


# --- Hugging Face directories: files that block, flood or fan out ------------------------------

@_case
def _hf_config_fifo(tmp):
  """`config.json` is a FIFO: the directory check opened it to parse it, which blocks until a
  writer comes."""
  folder = _hf_dir(tmp / "clip_hf_dir")
  (folder / "config.json").unlink()
  os.mkfifo(folder / "config.json")
  return folder, _CLIP_VIT


@_case
def _hf_msgpack_fifo(tmp):
  """`flax_model.msgpack` is a FIFO, which would block a read. Already refused: transformers
  looks for regular files only, and found no weights."""
  folder = _hf_dir(tmp / "clip_hf_dir")
  os.mkfifo(folder / "flax_model.msgpack")
  return folder, _CLIP_VIT


@_case
def _hf_config_64mb(tmp):
  """A valid `config.json` padded with whitespace to one byte under 64 MiB (the directory
  check's old limit): read whole and parsed, by the check and again by transformers, 330 MiB
  for a config of a few hundred bytes."""
  text = json.dumps(_TINY_VISION)
  config = text + " " * ((64 << 20) - 1 - len(text))
  return _hf_dir(tmp / "clip_hf_dir", config=config), _CLIP_VIT


@_case
def _hf_config_deep_arrays(tmp):
  """A `config.json` (2 MB) holding arrays nested 10^6 deep: the JSON parser recurses once per
  level. Already refused: Python's parser raises RecursionError."""
  deep = "[" * 1_000_000 + "]" * 1_000_000
  config = json.dumps(_TINY_VISION)[:-1] + f', "x": {deep}}}'
  return _hf_dir(tmp / "clip_hf_dir", config=config), _CLIP_VIT


@_case
def _hf_long_msgpack_key(tmp):
  """Flax weights whose one key is 10 MB, for an error or a warning that would quote it. The
  error names the weights the checkpoint lacks first: already a short message."""
  from flax import serialization  # pylint: disable=import-outside-toplevel
  blob = serialization.msgpack_serialize({_LONG_NAME: np.zeros(4, np.float32)})
  return _hf_dir(tmp / "clip_hf_dir", {"flax_model.msgpack": blob}), _CLIP_VIT


def _empty_tensors_header(count: int) -> dict:
  """A safetensors header of `count` empty float32 tensors, in PyTorch's format."""
  empty = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
  return {"__metadata__": {"format": "pt"}, **{f"t{i}": empty for i in range(count)}}


@_case
def _hf_safetensors_100mb_header(tmp):
  """`model.safetensors` with a 97 MB header (safetensors takes up to 100 MB) of 1.45M empty
  tensors: transformers' converter made a JAX array of each and died of SIGSEGV at 2.7 GiB."""
  blob = _safetensors(_empty_tensors_header(1_450_000), b"")
  return _hf_dir(tmp / "clip_hf_dir", {"model.safetensors": blob}), _CLIP_VIT


@_case
def _hf_safetensors_many_empty_tensors(tmp):
  """`model.safetensors` (format "pt", 13 MB) of 200k empty tensors: transformers' converter
  made a JAX array of each, 860 MiB and 7 s before the error."""
  blob = _safetensors(_empty_tensors_header(200_000), b"")
  return _hf_dir(tmp / "clip_hf_dir", {"model.safetensors": blob}), _CLIP_VIT


@_case
def _hf_bin_many_empty_tensors(tmp):
  """`pytorch_model.bin` (2 MB deflated) of 900k empty tensors on one storage, one memo tuple
  of arguments: transformers' converter made a JAX array of each and, under the 4 GiB limit,
  died of SIGSEGV."""
  count = 900_000
  hooks = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
  args = (pickle.MARK + _storage_id("0", 0) + _lit(0) + _lit((0,)) + _lit((1,)) + pickle.NEWFALSE
          + hooks + pickle.TUPLE + _put(1) + pickle.POP)
  rebuild = _global("torch._utils", "_rebuild_tensor_v2") + _put(2) + pickle.POP
  items = b"".join(_str8(f"t{i}") + _get(2) + _get(1) + pickle.REDUCE for i in range(count))
  data_pkl = _pickle(args, rebuild, pickle.EMPTY_DICT, pickle.MARK, items, pickle.SETITEMS)
  folder = _hf_dir(tmp / "clip_hf_dir")
  _checkpoint(folder / "pytorch_model.bin", _deflated(data_pkl), {"0": b""})
  return folder, _CLIP_VIT


@_case
def _hf_msgpack_many_empty_arrays(tmp):
  """`flax_model.msgpack` (24 MB) of 1M empty arrays: transformers restores them all, then
  makes a JAX array of each. It died of MemoryError at 2.7 GiB."""
  import msgpack  # pylint: disable=import-outside-toplevel
  from flax import serialization  # pylint: disable=import-outside-toplevel
  # Flax's encoding of one empty array, reused: serializing 1M arrays through Flax takes 4 s.
  empty = msgpack.unpackb(serialization.msgpack_serialize({"a": np.zeros(0, np.float32)}),
                          ext_hook=msgpack.ExtType)["a"]
  blob = msgpack.packb({f"t{i}": empty for i in range(1_000_000)})
  return _hf_dir(tmp / "clip_hf_dir", {"flax_model.msgpack": blob}), _CLIP_VIT


# --- found by the second review -----------------------------------------------------------------

@_case
def _self_list_fanout(tmp):
  """A list holding itself a million times (3 objects in the machine, 2 MB of BINGETs, a few KB
  deflated): the walk listed a million children at each of a million visits, for hours."""
  items = _get(0) * 1_000_000
  data_pkl = _pickle(pickle.EMPTY_LIST, _put(0), pickle.MARK, items, pickle.APPENDS)
  return _checkpoint(tmp / "self_list.pt", _deflated(data_pkl)), []


@_case
def _long_list_of_references(tmp):
  """A list of 32M references to one None (64 MB of BINGETs, deflated to about 64 KB):
  references were not counted, so the machine and then the walk built lists of 32M entries."""
  data_pkl = _pickle(pickle.EMPTY_LIST, pickle.NONE, pickle.BINPUT + b"\x00", pickle.POP,
                     pickle.MARK, (pickle.BINGET + b"\x00") * 32_000_000, pickle.APPENDS)
  return _checkpoint(tmp / "long_list.pt", _deflated(data_pkl)), []


@_case
def _corrupt_deflate_stream(tmp):
  """A deflated `data.pkl` whose compressed bytes are damaged: zlib.error escaped zipfile as a
  traceback."""
  entry = _deflated(_dict_pickle({"x": _rebuilt_tensor(_storage_id("0", 1), 0, (1,), (1,))}))
  raw = bytearray(entry.raw)
  raw[len(raw) // 2] ^= 0xFF
  raw[0] = 0xFF  # an invalid block type
  broken = _Entry(bytes(raw), zipfile.ZIP_DEFLATED, entry.crc, entry.size)
  return _checkpoint(tmp / "corrupt_deflate.pt", broken, {"0": b"\0\0\0\0"}), []


@_case
def _zip_directory_lies_about_count(tmp):
  """A zip whose end record says 1 record while its directory holds 300k (zipfile reads the
  directory by its size, not by the count): about 1 GB of ZipInfo objects per 100 MB file."""
  path = _write_zip(tmp / "many_records.pt", {f"archive/data/{i}": b"" for i in range(300_000)})
  blob = bytearray(path.read_bytes())
  end = blob.rfind(b"PK\x05\x06")
  blob[end + 8:end + 12] = struct.pack("<2H", 1, 1)  # records on this disk, records in all
  path.write_bytes(bytes(blob))
  return path, []


@_case
def _hf_msgpack_many_numbers(tmp):
  """`flax_model.msgpack` of 10M plain integers (10 MB): the array count saw none of them, and
  transformers makes a JAX array of each leaf."""
  import msgpack  # pylint: disable=import-outside-toplevel
  blob = msgpack.packb({"a": [0] * 10_000_000})
  return _hf_dir(tmp / "clip_hf_dir", {"flax_model.msgpack": blob}), _CLIP_VIT


@_case
def _safetensors_fifo_rn50(tmp):
  """A `.safetensors` path that is a FIFO: the header check opened it and blocked forever."""
  path = tmp / "weights.safetensors"
  os.mkfifo(path)
  return path, ["--model", "clip_rn50"]
