"""rrjax.io.files: atomic writes and strict, deterministic JSON."""

import json
import os

import numpy as np
import pytest

from rrjax.io import files


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
  path = tmp_path / "out.txt"
  files.atomic_write(path, "old")
  files.atomic_write(path, b"new \xe2\x9c\x93")
  assert path.read_text(encoding="utf-8") == "new ✓"
  assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_crash_keeps_old_file(tmp_path, monkeypatch):
  path = tmp_path / "results.json"
  files.atomic_write(path, "old")

  def crash(src, dst):
    raise OSError("simulated crash before the rename")

  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(OSError, match="simulated"):
    files.atomic_write(path, "new")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["results.json"]


def test_write_json_converts_numpy_and_is_deterministic(tmp_path):
  obj = {"b": np.float32(0.5), "a": np.arange(3), "c": (np.int64(2), np.bool_(True)),
         "nan": float("nan")}
  files.write_json(tmp_path / "x.json", obj)
  text = (tmp_path / "x.json").read_text()
  assert json.loads(text) == {"a": [0, 1, 2], "b": 0.5, "c": [2, True], "nan": None}
  assert text.index('"a"') < text.index('"b"')  # sorted keys
  with pytest.raises(TypeError, match="object"):
    files.write_json(tmp_path / "y.json", {"x": object()})
