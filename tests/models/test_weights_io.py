"""`weights_io`'s safetensors writer and checked reader."""

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

from rrjax import errors
from rrjax.models import weights_io


def _variables(order=1):
  leaves = [("kernel", np.arange(6, dtype=np.float32).reshape(2, 3)),
            ("bias", np.array([1, -2], np.int64)), ("empty", np.zeros((0, 2), np.float32))]
  return {"params": dict(leaves[::order]),
          "batch_stats": {"mean": np.ones(3, ml_dtypes.bfloat16)}}


def test_the_safetensors_package_reads_what_rrjax_writes(tmp_path):
  path = tmp_path / "w.safetensors"
  weights_io.save_safetensors(path, _variables(), metadata={"format": "x", "n": "3"})
  read = load_file(str(path))  # The format's own reader.
  expected = weights_io.flatten(_variables())
  assert sorted(read) == sorted(expected)
  for key, value in expected.items():
    assert read[key].dtype == value.dtype and read[key].shape == value.shape
    np.testing.assert_array_equal(read[key], value)
  assert weights_io.safetensors_metadata(path) == {"format": "x", "n": "3"}


def test_the_same_variables_give_the_same_bytes(tmp_path):
  weights_io.save_safetensors(tmp_path / "a", _variables(1), metadata={"b": "1", "a": "2"})
  weights_io.save_safetensors(tmp_path / "b", _variables(-1), metadata={"a": "2", "b": "1"})
  assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_load_checks_the_variables_against_the_module(tmp_path):
  path = tmp_path / "w.safetensors"
  weights_io.save_safetensors(path, _variables())
  loaded = weights_io.load_safetensors(path, _variables())
  np.testing.assert_array_equal(loaded["params"]["kernel"], _variables()["params"]["kernel"])
  other = _variables()
  other["params"]["kernel"] = np.zeros((3, 2), np.float32)
  with pytest.raises(errors.UserError, match=r"'params/kernel' has shape \(2, 3\), the module "
                     r"expects \(3, 2\)"):
    weights_io.load_safetensors(path, other)
  del other["params"]["kernel"]
  with pytest.raises(errors.UserError, match="unexpected variable 'params/kernel'"):
    weights_io.load_safetensors(path, other)
  path.write_bytes(path.read_bytes()[:40])
  with pytest.raises(errors.UserError, match="not a readable safetensors file"):
    weights_io.load_safetensors(path, _variables())
