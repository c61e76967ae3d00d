"""Split strings: a base split with an optional TFDS-style slice.

    "train"          the whole train split
    "train[:90%]"    its first 90%  (e.g. training data after a validation carve-out)
    "train[90%:]"    its last 10%   (the validation carve-out)
    "test[1000:]"    absolute bounds, "test[-500:]" counted from the end

A slice selects a contiguous range of the source's fixed example order, so `x[:p%]` and `x[p%:]`
partition `x` exactly. Percent bounds round to the closest example as TFDS does
(`round(p * n / 100)`); both bounds of one slice use the same unit. Out-of-range bounds are an
error rather than being clipped, and so is an empty selection, so a typo cannot silently shrink a
split.
"""

import dataclasses
import re

import numpy as np

from rrjax import errors

_SPLIT_RE = re.compile(r"^(?P<base>[\w-]+)(?:\[(?P<start>[^:\[\]]*):(?P<stop>[^:\[\]]*)\])?$")
_BOUND_RE = re.compile(r"^(?P<value>-?\d+(?:\.\d+)?)(?P<percent>%?)$")


@dataclasses.dataclass(frozen=True)
class Split:
  """A parsed split string: `base[start:stop]`, bounds in examples or percent of the base."""
  base: str
  start: float | None = None
  stop: float | None = None
  percent: bool = False

  def indices(self, num_examples: int) -> np.ndarray:
    """Positions `[n]` (int64, increasing) of the selected examples in the base split."""
    start, stop = self._bounds(num_examples)
    if stop <= start:
      raise errors.UserError(f"split {self} selects no examples of {num_examples}")
    return np.arange(start, stop, dtype=np.int64)

  def _bounds(self, n: int) -> tuple[int, int]:
    def absolute(bound, default):
      if bound is None:
        return default
      value = round(bound * n / 100) if self.percent else int(bound)
      if abs(value) > n:
        raise errors.UserError(f"split {self}: bound {bound:g}{'%' if self.percent else ''} is "
                               f"out of range for {n} examples")
      return value + n if value < 0 else value
    return absolute(self.start, 0), absolute(self.stop, n)

  def __str__(self):
    if self.start is None and self.stop is None:
      return self.base
    unit = "%" if self.percent else ""
    fmt = lambda b: "" if b is None else f"{b:g}{unit}"
    return f"{self.base}[{fmt(self.start)}:{fmt(self.stop)}]"


def parse(split: str) -> Split:
  """Parses `"base"` or `"base[start:stop]"`; raises ValueError naming a malformed string."""
  match = _SPLIT_RE.match(split.replace(" ", "")) if isinstance(split, str) else None
  if not match:
    raise errors.UserError(f"malformed split {split!r}: expected 'name' or 'name[start:stop]', "
                           "e.g. 'train', 'train[:90%]', 'test[-500:]'")
  bounds = []
  units = set()
  for text in (match["start"], match["stop"]):
    if not text:
      bounds.append(None)
      continue
    bound = _BOUND_RE.match(text)
    if not bound or (not bound["percent"] and "." in bound["value"]):
      raise errors.UserError(f"malformed bound {text!r} in split {split!r}: expected an integer "
                             "or a percentage such as '90%'")
    units.add(bool(bound["percent"]))
    bounds.append(float(bound["value"]))
  if len(units) > 1:
    raise errors.UserError(f"split {split!r} mixes percent and absolute bounds")
  start, stop = bounds
  return Split(match["base"], start, stop, percent=units == {True})
