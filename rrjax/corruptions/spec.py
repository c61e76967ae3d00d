"""Corruption specs: the grammar, the registry of operator names, and `build`.

    A = build("mask(0.5,0.95)|noise(0.1)")   # str(A) == "mask(0.5,0.95)|noise(0.1)"

Grammar: operators joined by `|`, applied left to right; whitespace is ignored. Each is one of

    mask(p)        mask(lo,hi)        zero a fraction p of the pixel positions
    noise(sigma)   noise(lo,hi)       add Gaussian noise of std sigma
    blur(n,sigma)  blur(n,lo,hi)      Gaussian blur, kernel size n, std sigma
    identity       identity()         no corruption

`str(A)` is the canonical spec (`mask(0.9)`, `noise(0.1,0.3)`, `blur(21,5)`,
`mask(0.5)|noise(0.1)`) and `build(str(A))` gives the same outputs for the same key. A new
operator subclasses `operators.Operator` and is added to `OPERATORS`.
"""

import math
import re

from rrjax import errors
from rrjax.corruptions.operators import Blur, Compose, Identity, Mask, Noise, Operator


class SpecError(errors.UserError):
  """A corruption spec that does not parse, or whose numbers an operator refuses."""


OPERATORS: dict[str, type[Operator]] = {op.name: op for op in (Mask, Noise, Blur, Identity)}

_ALLOWED = " | ".join(form for op in OPERATORS.values() for form in op.forms)
# A name, optionally followed by a parenthesised argument list without nested parentheses.
_PART = re.compile(r"\s*([A-Za-z_]\w*)\s*(?:\(([^()]*)\))?\s*")


def build(spec: str) -> Operator:
  """Parses `spec` (see the module docstring) into an operator.

  Raises:
    SpecError: naming the malformed part and listing the allowed forms.
  """
  if not isinstance(spec, str):
    raise SpecError(f"corruption spec must be a str, got {type(spec).__name__} {spec!r}")
  if not spec.strip():
    raise SpecError(f"bad corruption spec {spec!r}: empty spec; allowed forms: {_ALLOWED}")
  ops = tuple(_parse_part(part, spec) for part in spec.split("|"))
  return ops[0] if len(ops) == 1 else Compose(ops)


def _parse_part(part: str, spec: str) -> Operator:
  """Parses one `name(args)` of `spec`."""
  def bad(reason: str) -> SpecError:
    where = "" if part.strip() == spec.strip() else f" in {spec!r}"
    return SpecError(f"bad corruption spec part {part.strip()!r}{where}: {reason}; "
                     f"allowed forms: {_ALLOWED}")

  if not part.strip():
    raise bad("empty part")
  match = _PART.fullmatch(part)
  if match is None:
    raise bad("expected name or name(args) with balanced parentheses")
  name, args = match.groups()
  if name not in OPERATORS:
    raise bad(f"unknown operator {name!r}; known: {', '.join(OPERATORS)}")
  try:
    numbers = tuple(_number(arg) for arg in args.split(",")) if args and args.strip() else ()
    return OPERATORS[name].from_args(numbers)
  except ValueError as e:
    raise bad(str(e)) from None


def _number(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise ValueError(f"argument {text.strip()!r} is not a number") from None
  if not math.isfinite(value):
    raise ValueError(f"argument {text.strip()!r} is not a finite number")
  return value
