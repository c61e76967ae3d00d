"""rrjax.data.splits: split strings, parsed and sliced."""

import numpy as np
import pytest

from rrjax.data import splits


def test_split_parse():
  assert splits.parse("train") == splits.Split("train")
  assert splits.parse("train[:90%]") == splits.Split("train", None, 90, percent=True)
  assert splits.parse("test[-500:]") == splits.Split("test", -500, None)
  assert str(splits.parse("train[90%:]")) == "train[90%:]"
  np.testing.assert_array_equal(splits.parse("x[2:5]").indices(10), [2, 3, 4])
  np.testing.assert_array_equal(splits.parse("x[-3:]").indices(10), [7, 8, 9])
  np.testing.assert_array_equal(splits.parse("x[33%:67%]").indices(10), [3, 4, 5, 6])
  for bad in ("train[", "train[1]", "train[a:b]", "train[1%:5]", "train[1.5:]", "tr ain!"):
    with pytest.raises(ValueError, match="malformed|mixes percent"):
      splits.parse(bad)
  with pytest.raises(ValueError, match="out of range"):
    splits.parse("x[:11]").indices(10)
  with pytest.raises(ValueError, match="selects no examples"):
    splits.parse("x[5:5]").indices(10)


@pytest.mark.parametrize("n", [7, 10, 999])
def test_split_percent_slices_partition(n):
  head = splits.parse("train[:90%]").indices(n)
  tail = splits.parse("train[90%:]").indices(n)
  np.testing.assert_array_equal(np.concatenate([head, tail]), np.arange(n))
