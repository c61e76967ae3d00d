"""The ImageNet-C summary of a run's rows: per corruption, the mean over severities, and mCE.

    lines = corruption_grid.table(rows)    # [] when no row is evaluated on an ImageNet-C spec
    summary = corruption_grid.summary(rows)

Rows whose eval corruption is an ImageNet-C spec (`fog(3)`, `rrjax.corruptions.host_ops`) are
summarised per (label fraction, method): each corruption's top-1 averaged over the severities
present, the mean over every (corruption, severity) cell present (ImageNet-C's mean top-1 over
its 75 cells), and the mean corruption error (Hendrycks & Dietterich 2019) relative to the
frozen teacher with a probe fitted on corrupted images (`teacher_corrupted`):

    CE_c = sum_s (100 - top1_m(c, s)) / sum_s (100 - top1_teacher(c, s)),  mCE = mean_c CE_c

in percent: under 100% the method errs less than the frozen teacher. ImageNet-C's own mCE
normalises by AlexNet's errors; the frozen teacher is the reference a robust student is measured
against here. Only the (corruption, severity) cells that both have enter a CE, and a corruption
where the reference makes no error (or a cell is not finite) is left out of that method's mCE.

The reference is the run's own: `teacher_corrupted`'s probe is fitted on the teacher's features
of training images corrupted by the experiment's training operator, so an mCE compares methods
within one experiment; across experiments trained on different operators (a specialist against
a universal student) its denominators differ, and the top-1 columns are what compare.
"""

import math
from collections.abc import Mapping, Sequence

from rrjax.corruptions import host_ops
from rrjax.outputs import rows as rows_lib

REFERENCE = "teacher_corrupted"


def _parse(spec: str) -> tuple[str, int] | None:
  """`("fog", 3)` for an ImageNet-C spec `fog(3)`, else None."""
  name, _, rest = spec.partition("(")
  if name not in host_ops.OPERATORS or not rest.endswith(")") or not rest[:-1].isdigit():
    return None
  return name, int(rest[:-1])


def summary(rows: Sequence[Mapping]) -> dict:
  """`{label fraction: {method: {"per_corruption": {name: mean top-1}, "mean": mean top-1 over
  cells, "cells": count, "mce": percent or None}}}` over the ImageNet-C rows of `rows` (one
  dataset and training run)."""
  cells: dict = {}
  for r in rows:
    parsed = _parse(r["eval_corruption"])
    if parsed is not None and math.isfinite(r["top1_mean"]):
      cells.setdefault(r["label_fraction"], {}).setdefault(r["method"], {})[parsed] = (
          r["top1_mean"])
  out = {}
  for fraction, by_method in sorted(cells.items()):
    reference = by_method.get(REFERENCE, {})
    out[fraction] = {}
    for method in rows_lib.methods({"method": m} for m in by_method):
      got = by_method[method]
      names = [n for n in host_ops.OPERATORS if any(c == n for c, _ in got)]
      per = {n: _mean([v for (c, _), v in got.items() if c == n]) for n in names}
      ces = []
      for n in names:
        both = [(got[n, s], reference[n, s]) for (c, s) in got if c == n and (n, s) in reference]
        denominator = sum(100 - ref for _, ref in both)
        if both and denominator > 0:
          ces.append(sum(100 - v for v, _ in both) / denominator)
      out[fraction][method] = {"per_corruption": per, "mean": _mean(list(got.values())),
                               "cells": len(got),
                               "mce": 100 * _mean(ces) if ces and reference else None}
  return out


def table(rows: Sequence[Mapping]) -> list[str]:
  """Markdown: per label fraction, rows the corruptions (mean over severities), then the mean
  over cells and the mCE; columns the methods. [] without ImageNet-C rows."""
  lines = []
  for fraction, by_method in summary(rows).items():
    methods = list(by_method)
    names = [n for n in host_ops.OPERATORS if any(n in v["per_corruption"]
                                                 for v in by_method.values())]
    lines += [f"ImageNet-C corruptions, {rows_lib.format_fraction(fraction)} labels: top-1 "
              "averaged over the severities evaluated; mean over every (corruption, severity) "
              f"cell; mCE relative to the frozen teacher (`{REFERENCE}`), under 100% = fewer "
              "errors than it.", "",
              "| corruption | " + " | ".join(rows_lib.COLUMN_NAMES.get(m, m) for m in methods)
              + " |", "|---|" + "---:|" * len(methods)]
    for n in names:
      lines.append(f"| {n} | " + " | ".join(
          _num(by_method[m]["per_corruption"].get(n)) for m in methods) + " |")
    lines.append("| **mean over cells** | " + " | ".join(
        f"{by_method[m]['mean']:.2f} ({by_method[m]['cells']})" for m in methods) + " |")
    lines.append("| **mCE vs frozen teacher** | " + " | ".join(
        "–" if by_method[m]["mce"] is None else f"{by_method[m]['mce']:.1f}%" for m in methods)
                 + " |")
    lines.append("")
  return lines


def _mean(values: Sequence[float]) -> float:
  return sum(values) / len(values)


def _num(value: float | None) -> str:
  return "–" if value is None else f"{value:.2f}"
