"""rrjax.corruptions.spec: the grammar, canonical specs, the registry, malformed specs."""

import re

import numpy as np
import pytest

from rrjax import corruptions
from tests.corruptions.test_operators import ALL_SPECS, SPECS, _images


def test_every_registered_operator_is_covered():
  assert set(corruptions.OPERATORS) <= set(SPECS)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_canonical_spec_round_trips(spec, key):
  op = corruptions.build(spec)
  assert str(op) == spec
  again = corruptions.build(str(op))
  assert again == op and hash(again) == hash(op)
  assert repr(op) == f"build({spec!r})"
  x = _images()
  np.testing.assert_array_equal(again(key, x), op(key, x))


@pytest.mark.parametrize("spec, canonical", [
    (" mask( 0.9 ) ", "mask(0.9)"),
    ("mask(0.5,0.5)", "mask(0.5)"),
    ("noise(.1, 3e-1)", "noise(0.1,0.3)"),
    ("blur(21.0,5.0)", "blur(21,5)"),
    ("blur(37, 9)", "blur(37,9)"),
    ("identity()", "identity"),
    ("mask(0.5) | noise(0.1)", "mask(0.5)|noise(0.1)"),
])
def test_canonical_form(spec, canonical):
  assert str(corruptions.build(spec)) == canonical


@pytest.mark.parametrize("spec, reason", [
    ("mask(1.3)", "not in [0, 1]"),
    ("mask(0.9,0.5)", "lo 0.9 > hi 0.5"),
    ("noise(-1)", "sigma -1"),
    ("blur(4,1)", "kernel size 4"),
    ("blur(0,1)", "kernel size 0"),
    ("blur(5,-1)", "sigma -1"),
    ("foo(1)", "unknown operator 'foo'; known: mask, noise, blur, identity"),
    ("mask(0.5", "balanced parentheses"),
    ("mask0.5)", "balanced parentheses"),
    ("mask(0.5)||noise(0.1)", "empty part"),
    ("mask()", "takes 1 or 2 arguments, got 0"),
    ("mask(0.1,0.2,0.3)", "takes 1 or 2 arguments, got 3"),
    ("blur(5)", "takes 2 or 3 arguments, got 1"),
    ("mask(abc)", "'abc' is not a number"),
    ("noise(nan)", "'nan' is not a finite number"),
    ("identity(1)", "takes 0 arguments, got 1"),
])
def test_malformed_spec_names_the_bad_part(spec, reason):
  part = "" if "||" in spec else spec
  allowed = "allowed forms: mask(p) | mask(lo,hi) | noise(sigma)"
  with pytest.raises(ValueError, match=re.escape(f"part {part!r}") + ".*" + re.escape(reason)
                     + ".*" + re.escape(allowed)):
    corruptions.build(spec)


@pytest.mark.parametrize("spec", ["", "  "])
def test_empty_spec_is_rejected(spec):
  with pytest.raises(ValueError, match="empty spec.*allowed forms"):
    corruptions.build(spec)


def test_a_bad_spec_is_a_user_error():
  from rrjax import errors  # pylint: disable=g-import-not-at-top
  for spec in ("mask(2)", 3):
    with pytest.raises(corruptions.SpecError) as info:
      corruptions.build(spec)
    assert isinstance(info.value, errors.UserError)
