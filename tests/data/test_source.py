"""rrjax.data.source: the Source contract."""

import pytest

from tests.data.data_util import ArraySource


def test_source_get_checks_indices():
  source = ArraySource(5)
  with pytest.raises(IndexError, match="index 5 out of range"):
    source.get([0, 5])
