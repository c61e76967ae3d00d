"""Corruption specs: the grammar, the registry of operator names, and `build`.

    A = build("mask(0.5,0.95)|noise(0.1)")   # str(A) == "mask(0.5,0.95)|noise(0.1)"

Grammar: operators joined by `|`, applied left to right; whitespace is ignored. Each is one of

    mask(p)        mask(lo,hi)        zero a fraction p of the pixel positions
    noise(sigma)   noise(lo,hi)       add Gaussian noise of std sigma
    blur(n,sigma)  blur(n,lo,hi)      Gaussian blur, kernel size n, std sigma
    down(f)                           f x f block means, replicated back (super-resolution)
    box(s)         box(lo,hi)         zero one random square of a fraction s of the area
    poisson(peak)  poisson(lo,hi)     shot noise, Poisson(peak x) / peak
    motion(n)      motion(n,angle)    motion blur of length n, at a random or given angle
    jpeg(q)        jpeg(lo,hi)        JPEG compression at quality q in [1, 100] (libjpeg's)
    identity       identity()         no corruption
    oneof(A;B;...)                    per image, one of the specs A, B, ... (uniformly)
    oneof(w:A;w:B;...)                ... with probabilities proportional to the weights w > 0
    fog(s)  gaussian_noise(s) ...     an ImageNet-C corruption at severity s in 1..5 (its 15
                                      names: `host_ops`; computed on the host by NumPy)

An alternative of `oneof` is itself a spec: a composition (`oneof(mask(0.5)|noise(0.1);
blur(5,1))`: the weight, if any, is for the whole composition) or another `oneof`; a missing
weight is 1. `oneof` composes with `|` like any operator.

`str(A)` is the canonical spec (`mask(0.9)`, `noise(0.1,0.3)`, `blur(21,5)`,
`mask(0.5)|noise(0.1)`, `motion(9,30)`, `oneof(mask(0.9);noise(0.5))`,
`oneof(2:down(4);1:box(0.25))`: no spaces, a motion angle modulo 180, the weights only when
they differ, then every one) and `build(str(A))` gives the same outputs for the same key. A
new operator subclasses `operators.Operator` and is added to `OPERATORS`.
"""

import math
import re

from rrjax import errors
from rrjax.corruptions import host_ops
from rrjax.corruptions.jpeg import Jpeg
from rrjax.corruptions.operators import (Blur, Box, Compose, Down, Identity, Mask, Motion,
                                         Noise, OneOf, Operator, Poisson)


class SpecError(errors.UserError):
  """A corruption spec that does not parse, or whose numbers an operator refuses."""


OPERATORS: dict[str, type[Operator]] = {
    op.name: op for op in (Mask, Noise, Blur, Identity, Down, Box, Poisson, Motion, Jpeg, OneOf)}
OPERATORS.update(host_ops.OPERATORS)

_ALLOWED = (" | ".join(form for op in OPERATORS.values() for form in op.forms
                       if op.name not in host_ops.OPERATORS)
            + " | an ImageNet-C corruption at severity s in 1..5: "
            + ", ".join(f"{name}(s)" for name in host_ops.OPERATORS))
# A name, optionally followed by a parenthesised argument list (balance is checked apart).
_PART = re.compile(r"\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*", re.DOTALL)


def build(spec: str) -> Operator:
  """Parses `spec` (see the module docstring) into an operator.

  Raises:
    SpecError: naming the malformed part and listing the allowed forms.
  """
  if not isinstance(spec, str):
    raise SpecError(f"corruption spec must be a str, got {type(spec).__name__} {spec!r}")
  if not spec.strip():
    raise SpecError(f"bad corruption spec {spec!r}: empty spec; allowed forms: {_ALLOWED}")
  return _parse_chain(spec, spec)


def _split(text: str, separator: str) -> list[str]:
  """`text` split at the `separator`s outside parentheses (a stray `)` is left to the parts)."""
  parts, depth, start = [], 0, 0
  for i, char in enumerate(text):
    if char == "(":
      depth += 1
    elif char == ")":
      depth = max(depth - 1, 0)
    elif char == separator and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  parts.append(text[start:])
  return parts


def _balanced(text: str) -> bool:
  depth = 0
  for char in text:
    depth += {"(": 1, ")": -1}.get(char, 0)
    if depth < 0:
      return False
  return depth == 0


def _parse_chain(text: str, spec: str) -> Operator:
  """Parses `A|B|...` (a whole spec or a oneof alternative) of `spec`."""
  ops = tuple(_parse_part(part, spec) for part in _split(text, "|"))
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
  if match is None or (match.group(2) is not None and not _balanced(match.group(2))):
    if len(_split(part, ";")) > 1 or len(_split(part, ":")) > 1:
      raise bad("';' (between alternatives) and ':' (a weight) belong inside oneof(...)")
    raise bad("expected name or name(args) with balanced parentheses")
  name, args = match.groups()
  if name == host_ops.GRID:
    raise bad(f"{name} is not one operator but the grid of ImageNet-C specs that "
              "config.eval.corruptions expands (imagenet_c: 15 corruptions x severities 1..5; "
              "imagenet_c(s): the 15 at severity s)")
  if name not in OPERATORS:
    raise bad(f"unknown operator {name!r}; known: {', '.join(OPERATORS)}")
  if name == OneOf.name:
    if args is None:
      raise bad("oneof needs its alternatives in parentheses: oneof(A;B;...)")
    return _parse_oneof(args, spec, bad)
  try:
    numbers = tuple(_number(arg) for arg in args.split(",")) if args and args.strip() else ()
    return OPERATORS[name].from_args(numbers)
  except ValueError as e:
    raise bad(str(e)) from None


def _parse_oneof(args: str, spec: str, bad) -> OneOf:
  """Parses the `w:A;B;...` between oneof's parentheses; `bad` makes oneof's own errors."""
  if not args.strip():
    raise bad("oneof needs at least one alternative")
  ops, weights = [], []
  for alternative in _split(args, ";"):
    if not alternative.strip():
      raise bad("empty alternative")
    pieces = _split(alternative, ":")
    if len(pieces) > 2:
      raise bad(f"alternative {alternative.strip()!r} has more than one weight ':'")
    if len(pieces) == 2:
      text = pieces[0].strip()
      try:
        weights.append(_number(text))
      except ValueError:
        raise bad(f"weight {text!r} of alternative {alternative.strip()!r} is not a finite "
                  "number") from None
    else:
      weights.append(None)
    ops.append(_parse_chain(pieces[-1], spec))
  given = any(v is not None for v in weights)
  try:
    return OneOf(tuple(ops), tuple(1.0 if v is None else v for v in weights) if given else None)
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
