"""The run's plots, written as PNG files (each returns whether it had data to plot).

    plots.plot_label_fraction(rows, f"{workdir}/label_fraction.png")   # Figure 3's shape
    plots.plot_severity(rows, f"{workdir}/severity.png")               # Figure 4's shape
    plots.plot_per_loss(rows, f"{workdir}/loss_ablation.png")          # Figure 6's shape
    plots.plot_loss(metrics_rows, f"{workdir}/loss.png")
    plots.plot_validation(metrics_rows, f"{workdir}/validation.png")  # baselines' curves

A plot without data is not written, and a stale file of that name from an earlier call is
removed.
"""

import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from etils import epath
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from rrjax.io import files
from rrjax.outputs import rows as rows_lib
from rrjax.parallel import multiprocess

# The operator name and the first number of a single-operator spec: "mask(0.95)" -> mask, 0.95.
_SEVERITY = re.compile(r"\s*([A-Za-z_]\w*)\s*\(\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")




def _colors(methods: Sequence[str]) -> dict[str, str]:
  """A fixed colour per method, the same in every panel."""
  return {m: f"C{i % 10}" for i, m in enumerate(methods)}


def _panels(n: int, width: float = 4.8, height: float = 3.6) -> tuple[Figure, list]:
  ncols = min(n, 3)
  nrows = math.ceil(n / ncols)
  fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
  axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
  for ax in axes[n:]:
    ax.set_visible(False)
  return fig, axes[:n]


def _save(fig: Figure, path: str) -> None:
  buffer = io.BytesIO()
  # No Software field, so the bytes do not depend on the matplotlib version.
  fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
  files.atomic_write(path, buffer.getvalue())


def _skip(path: str) -> bool:
  """No data for this plot: removes a stale file from an earlier call and returns False."""
  if multiprocess.is_leader() and epath.Path(path).exists():
    epath.Path(path).unlink()
  return False


def _float(x: Any) -> float:
  """A plottable float; null (how a non-finite value is logged) becomes a gap."""
  return float(x) if rows_lib.is_number(x) else math.nan


def plot_loss(metrics: Sequence[Mapping], path: str | os.PathLike) -> bool:
  """Training loss vs step, one line per `run`; returns whether a plot was written."""
  path = os.fspath(path)
  metrics = [m for m in metrics if rows_lib.is_number(m.get("step")) and "loss" in m]
  if not metrics:
    return _skip(path)
  fig, (ax,) = _panels(1, width=6.4, height=4.0)
  runs = rows_lib.group(metrics, lambda m: m.get("run"))
  for run, points in runs.items():
    points = sorted(points, key=lambda m: m["step"])
    ax.plot([m["step"] for m in points], [_float(m["loss"]) for m in points],
            label="train" if run is None else str(run))
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_xlabel("step")
  ax.set_ylabel("training loss")
  if len(runs) > 1 or None not in runs:
    ax.legend(fontsize="small")
  ax.grid(alpha=0.3)
  _save(fig, path)
  return True


def plot_validation(metrics: Sequence[Mapping], path: str | os.PathLike) -> bool:
  """Validation top-1 vs step of the trainings that log it (a baseline under
  `baseline.select`), one line per training; returns whether a plot was written."""
  path = os.fspath(path)
  metrics = [m for m in metrics if rows_lib.is_number(m.get("step")) and "val_top1" in m]
  if not metrics:
    return _skip(path)
  runs = rows_lib.group(metrics, lambda m: (m.get("experiment") or "", m.get("run") or ""))
  fig, (ax,) = _panels(1, width=7.2, height=4.4)
  for (experiment, run), points in runs.items():
    points = sorted(points, key=lambda m: m["step"])
    ax.plot([m["step"] for m in points], [_float(m["val_top1"]) for m in points], marker=".",
            label=f"{experiment}: {run}" if experiment else run)
  ax.set_xlabel("step")
  ax.set_ylabel("validation top-1 (%)")
  ax.legend(fontsize="x-small")
  ax.grid(alpha=0.3)
  _save(fig, path)
  return True


def _errorbar(ax, method: str, xs: list[float], points: Sequence[Mapping], color: str,
              label: str) -> None:
  # The ceiling is a reference, not a competitor: dashed, and a horizontal line if it is one
  # point (e.g. the clean teacher evaluated with all labels only).
  ys = [p["top1_mean"] for p in points]
  if method == rows_lib.CEILING and len(points) == 1:
    ax.axhline(ys[0], linestyle="--", color=color, label=label)
    return
  ax.errorbar(xs, ys, yerr=[p["top1_stderr"] for p in points], color=color, label=label,
              marker="o", markersize=4, capsize=3,
              linestyle="--" if method == rows_lib.CEILING else "-")


def plot_label_fraction(rows: Sequence[Mapping], path: str | os.PathLike) -> bool:
  """Figure 3: top-1 vs label fraction (log x), a panel per (training run, eval corruption).

  Each panel has every method scored on that corruption, and the clean ceiling of the same run
  (`teacher_clean`, scored on clean images) as a dashed line. Only panels with at least two
  label fractions are drawn; returns whether a plot was written.
  """
  path = os.fspath(path)
  runs = rows_lib.group(rows, lambda r: (r["dataset"], rows_lib.run_of(r)))
  panels = {}
  for (dataset, run), run_rows in runs.items():
    ceiling = [r for r in run_rows if r["method"] == rows_lib.CEILING]
    for ev, ev_rows in rows_lib.group(
        [r for r in run_rows if r["method"] != rows_lib.CEILING],
        lambda r: r["eval_corruption"]).items():
      if len({r["label_fraction"] for r in ev_rows}) > 1:
        panels[dataset, run, ev] = ceiling + ev_rows
  if not panels:
    return _skip(path)
  several_datasets = len({dataset for dataset, _, _ in panels}) > 1
  # Experiments on the same operator (a loss ablation) are told apart by name.
  several_runs = len({(run[1], ev) for _, run, ev in panels}) < len(panels)
  colors = _colors(rows_lib.methods(rows))
  fig, axes = _panels(len(panels), width=5.2, height=4.0)
  for ax, ((dataset, (name, train), ev), panel_rows) in zip(axes, panels.items()):
    for method in rows_lib.methods(panel_rows):
      points = sorted((r for r in panel_rows if r["method"] == method),
                      key=lambda r: r["label_fraction"])
      _errorbar(ax, method, [p["label_fraction"] for p in points], points, colors[method],
                rows_lib.COLUMN_NAMES.get(method, method))
    fractions = sorted({r["label_fraction"] for r in panel_rows})
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(fractions))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: rows_lib.format_fraction(v)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("label fraction")
    ax.set_ylabel("top-1 (%)")
    title = f"eval {ev}" if ev == train else f"train {train}, eval {ev}"
    if several_runs and name:
      title = f"{name}: {title}"
    ax.set_title(f"{dataset}\n" * several_datasets + title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  _save(fig, path)
  return True


def parse_severity(spec: str) -> tuple[str, float] | None:
  """"mask(0.95)" -> ("mask", 0.95), "blur(21,5)" -> ("blur", 21.0); None for compositions
  ("a|b") and specs without a number."""
  match = _SEVERITY.match(spec)
  if "|" in spec or match is None:
    return None
  return match.group(1), float(match.group(2))


def plot_severity(rows: Sequence[Mapping], path: str | os.PathLike) -> bool:
  """Top-1 vs severity of the eval corruption, one line per method.

  A panel per (dataset, train corruption, operator, label fraction) whose eval corruptions have
  at least two severities; returns whether a plot was written.
  """
  path = os.fspath(path)
  parsed = [(r, parse_severity(r["eval_corruption"])) for r in rows]
  panels = rows_lib.group([(r, s) for r, s in parsed if s is not None],
                  lambda rs: (rs[0]["dataset"], rows_lib.run_of(rs[0]), rs[1][0],
                              rs[0]["label_fraction"]))
  panels = {k: v for k, v in panels.items() if len({s for _, (_, s) in v}) > 1}
  if not panels:
    return _skip(path)
  several_datasets = len({k[0] for k in panels}) > 1
  colors = _colors(rows_lib.methods(rows))
  fig, axes = _panels(len(panels))
  for ax, ((dataset, (name, train), op, fraction), entries) in zip(axes, panels.items()):
    for method in rows_lib.methods(r for r, _ in entries):
      points = sorted(((s, r) for r, (_, s) in entries if r["method"] == method),
                      key=lambda sr: sr[0])
      _errorbar(ax, method, [s for s, _ in points], [r for _, r in points], colors[method],
                rows_lib.COLUMN_NAMES.get(method, method))
    ax.set_xlabel(f"{op} severity (first parameter)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{dataset}: " * several_datasets
                 + f"{name + ': ' if name else ''}train {train}, eval {op}(·), "
                 + f"{rows_lib.format_fraction(fraction)} labels",
                 fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  _save(fig, path)
  return True


def plot_per_loss(rows: Sequence[Mapping], path: str | os.PathLike) -> bool:
  """Figure 6: top-1 of `ours` against the eval corruption, one line per training loss.

  A panel per (dataset, train corruption, label fraction) whose `ours` rows come from at least
  two losses (rows carry `loss`). The x axis is the eval corruption's severity when every eval
  corruption is one operator at several severities (`parse_severity`), else the corruptions in
  order; returns whether a plot was written.
  """
  path = os.fspath(path)
  ours = [r for r in rows if r["method"] == "ours" and r.get("loss")]
  panels = rows_lib.group(
      ours, lambda r: (r["dataset"], r["train_corruption"], r["label_fraction"]))
  panels = {k: v for k, v in panels.items() if len({r["loss"] for r in v}) > 1}
  if not panels:
    return _skip(path)
  several_datasets = len({k[0] for k in panels}) > 1
  colors = _colors(list(dict.fromkeys(r["loss"] for r in ours)))  # The same in every panel.
  fig, axes = _panels(len(panels), width=5.6, height=4.0)
  for ax, ((dataset, train, fraction), panel_rows) in zip(axes, panels.items()):
    evals = list(dict.fromkeys(r["eval_corruption"] for r in panel_rows))
    severities = [parse_severity(ev) for ev in evals]
    one_operator = (None not in severities and len({op for op, _ in severities}) == 1
                    and len({v for _, v in severities}) == len(evals))
    x_of = ({ev: v for ev, (_, v) in zip(evals, severities)} if one_operator
            else {ev: i for i, ev in enumerate(evals)})
    for loss, points in rows_lib.group(panel_rows, lambda r: r["loss"]).items():
      points = sorted(points, key=lambda r: x_of[r["eval_corruption"]])
      ax.errorbar([x_of[r["eval_corruption"]] for r in points],
                  [_float(r["top1_mean"]) for r in points],
                  yerr=[_float(r["top1_stderr"]) for r in points], marker="o", markersize=4,
                  capsize=3, label=loss, color=colors[loss])
    if one_operator:
      ax.set_xlabel(f"eval {severities[0][0]} severity")
    else:
      ax.set_xticks(range(len(evals)), evals, fontsize="small", rotation=20)
      ax.set_xlabel("eval corruption")
    ax.set_ylabel("top-1 (%), ours")
    ax.set_title(f"{dataset}\n" * several_datasets
                 + f"train {train}, {rows_lib.format_fraction(fraction)} labels",
                 fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(title="loss", fontsize="small")
  _save(fig, path)
  return True
