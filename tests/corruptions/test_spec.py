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
    ("down(4.0)", "down(4)"),
    ("box(0.2, 0.2)", "box(0.2)"),
    ("poisson(1e2,2E3)", "poisson(100,2000)"),
    ("motion(9, 30.0)", "motion(9,30)"),
    ("motion(9,210)", "motion(9,30)"),      # The segment is symmetric: angles modulo 180.
    ("motion(9,-90)", "motion(9,90)"),
    ("motion(9,180)", "motion(9,0)"),
    ("oneof( mask(0.9) ; noise(0.1, 0.5) )", "oneof(mask(0.9);noise(0.1,0.5))"),
    ("oneof(1:mask(0.9);1:noise(0.5))", "oneof(mask(0.9);noise(0.5))"),  # Equal: uniform.
    ("oneof(2 : mask(0.9); noise(0.5))", "oneof(2:mask(0.9);1:noise(0.5))"),  # Missing: 1.
    ("oneof(mask(0.5) | noise(0.1); blur(5,1))", "oneof(mask(0.5)|noise(0.1);blur(5,1))"),
    ("noise(0.1) | oneof(down(2);identity()) | mask(0.2)",
     "noise(0.1)|oneof(down(2);identity)|mask(0.2)"),
    ("oneof(0.5:oneof(box(0.25);motion(5));1.5:down(2)|poisson(30))",
     "oneof(0.5:oneof(box(0.25);motion(5));1.5:down(2)|poisson(30))"),
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
    ("foo(1)", "unknown operator 'foo'; known: mask, noise, blur, identity, down, box, "
               "poisson, motion, jpeg, oneof"),
    ("mask(0.5", "balanced parentheses"),
    ("mask0.5)", "balanced parentheses"),
    ("mask(0.5)||noise(0.1)", "empty part"),
    ("mask()", "takes 1 or 2 arguments, got 0"),
    ("mask(0.1,0.2,0.3)", "takes 1 or 2 arguments, got 3"),
    ("blur(5)", "takes 2 or 3 arguments, got 1"),
    ("mask(abc)", "'abc' is not a number"),
    ("noise(nan)", "'nan' is not a finite number"),
    ("identity(1)", "takes 0 arguments, got 1"),
    ("down(2.5)", "down factor 2.5 not an integer >= 1"),
    ("down(0)", "down factor 0 not an integer >= 1"),
    ("down(2,3)", "takes 1 arguments, got 2"),
    ("box(1.5)", "box fraction 1.5 not in [0, 1]"),
    ("box(0.5,0.2)", "lo 0.5 > hi 0.2"),
    ("poisson(0)", "poisson peak 0 not in (0, 1e6]"),
    ("poisson(2e6)", "poisson peak 2000000 not in (0, 1e6]"),
    ("motion(4)", "motion length 4 not an odd integer >= 1"),
    ("motion(5,1,2)", "takes 1 or 2 arguments, got 3"),
    ("oneof", "oneof needs its alternatives in parentheses"),
    ("oneof()", "oneof needs at least one alternative"),
    ("oneof(mask(0.5);)", "empty alternative"),
    ("oneof(x:mask(0.5))", "weight 'x' of alternative 'x:mask(0.5)' is not a finite number"),
    ("oneof(0:mask(0.5))", "oneof weight 0 not a finite number > 0"),
    ("oneof(1:2:mask(0.5))", "more than one weight ':'"),
    ("oneof(mask(0.5)|noise(0.1)", "balanced parentheses"),
    ("mask(0.5);noise(0.1)", "';' (between alternatives) and ':' (a weight) belong inside oneof"),
    ("2:mask(0.5)", "belong inside oneof"),
    ("mask(noise(0.1))", "argument 'noise(0.1)' is not a number"),
    ("mask(0.5)(0.3)", "balanced parentheses"),
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


@pytest.mark.parametrize("spec, part, reason", [
    ("oneof(mask(2);noise(0.1))", "mask(2)", "mask fraction 2 not in [0, 1]"),
    ("noise(0.1)|oneof(blur(4,1);identity)", "blur(4,1)", "kernel size 4"),
    ("oneof(mask(0.5)||noise(0.1))", "", "empty part"),
    ("oneof(box(0.2);oneof(foo(1)))", "foo(1)", "unknown operator 'foo'"),
    ("oneof(1,2)", "1,2", "balanced parentheses"),
])
def test_malformed_oneof_alternative_names_the_part_and_the_spec(spec, part, reason):
  with pytest.raises(corruptions.SpecError, match=re.escape(f"part {part!r} in {spec!r}") + ".*"
                     + re.escape(reason) + ".*allowed forms"):
    corruptions.build(spec)


def test_oneof_and_compose_nest_both_ways():
  op = corruptions.build("oneof(mask(0.5)|noise(0.1);blur(5,1))|oneof(down(2);identity)")
  assert [type(o).__name__ for o in op.ops] == ["OneOf", "OneOf"]
  first = op.ops[0]
  assert [type(o).__name__ for o in first.ops] == ["Compose", "Blur"]
  assert first.probabilities == (0.5, 0.5)
  weighted = corruptions.build("oneof(3:mask(0.9);noise(0.5))")
  assert weighted.weights == (3.0, 1.0) and weighted.probabilities == (0.75, 0.25)
