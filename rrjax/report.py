"""The run's outputs: metrics.jsonl, results.json, a paper-style report.md and PNG plots.

    log = report.MetricsLog(f"{workdir}/metrics.jsonl", resume_step=start, run="student")
    log.write(step=step, loss=loss, lr=lr, images_per_s=speed)
    ...
    rows = [report.make_row("ours", "imagenet100", "mask(0.9)", "mask(0.9)", 0.1, draws), ...]
    report.write_results(workdir, config.to_dict(), rows, timing={"train": 812.4, "probe": 95.1})

A results row is one (method, dataset, train corruption, eval corruption, label fraction) cell:
top-1 accuracy in percent over independent corruption draws (`REQUIRED_FIELDS`). Methods:
`teacher_clean` (the ceiling), `teacher_corrupted`, `ours`, `baseline`, `zeroshot`, or any other
name (e.g. a loss ablation), which is reported after those.

Every file is written atomically (temp file in the same directory, fsync, rename; on a bucket
such as `gs://`, one upload, which appears whole or not at all), so neither a concurrent reader
nor a crash, `kill -9` included, sees a half-written output. Outputs depend only on the
arguments: no timestamps, JSON keys sorted, rows and tables in the caller's order.

In a multi-process run only JAX process 0 writes (`rrjax.distributed.is_leader`): on the others
every function here that writes returns without writing, after the same checks, so callers need
no test of their own. Paths are local paths or URLs that `etils.epath` opens (`gs://...`).
"""

import collections
import io
import json
import math
import numbers
import os
import re
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from rrjax import distributed

CEILING = "teacher_clean"
METHOD_ORDER = ("teacher_clean", "teacher_corrupted", "restored", "ours", "baseline",
                "teacher_zeroshot", "zeroshot")
REQUIRED_FIELDS = ("method", "dataset", "train_corruption", "eval_corruption", "label_fraction",
                   "top1_mean", "top1_std", "top1_stderr", "draws")
# `experiment` (optional) tells apart sub-runs that share the others, e.g. a loss ablation.
_KEY_FIELDS = ("experiment", "method", "dataset", "train_corruption", "eval_corruption",
               "label_fraction")

_COLUMN_NAMES = {
    "teacher_clean": "teacher (clean, ceiling)",
    "teacher_corrupted": "teacher (corrupted)",
    "ours": "ours",
    "baseline": "baseline",
    "restored": "restored + teacher",
    "teacher_zeroshot": "teacher zero-shot",
    "zeroshot": "zero-shot",
}
_LEGEND = {
    "teacher_clean": "frozen teacher + probe on clean images (ceiling).",
    "teacher_corrupted": "frozen teacher + probe fitted on corrupted images (naive).",
    "ours": "robust student + probe on corrupted images.",
    "baseline": "encoder + linear head fine-tuned end to end on corrupted images.",
    "restored": "classical restoration of the corrupted image (inpainting, Wiener filter), then "
                "the frozen teacher + probe (the pixel-space route).",
    "teacher_zeroshot": "frozen teacher's embeddings of corrupted images against the text "
                        "prompts, no probe, no labels.",
    "zeroshot": "zero-shot classifier from text prompts (\"A photo of a {class}\"), no probe.",
}
# The operator name and the first number of a single-operator spec: "mask(0.95)" -> mask, 0.95.
_SEVERITY = re.compile(r"\s*([A-Za-z_]\w*)\s*\(\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


# ----------------------------------------------------------------------------- files


def is_local(path: str | os.PathLike) -> bool:
  """Whether `path` is on a local (or mounted) file system, not a URL such as `gs://b/x`."""
  return "://" not in os.fspath(path)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
  """Replaces `path` with `data` (str as UTF-8) so that readers see the old or the new file.

  Locally the data goes to a temp file in the same directory (same file system, so the rename
  is atomic), is fsynced, then renamed over `path`; on any error the temp file is removed and
  the old file is left as it was. A bucket has no atomic rename, but an object is replaced only
  once its upload completes, so it is written in place. Parent directories are created. Only
  the leader process writes (module docstring).
  """
  if not distributed.is_leader():
    return
  if isinstance(data, str):
    data = data.encode("utf-8")
  if not is_local(path):
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      # mkstemp creates the file 0600; outputs are meant to be read by others.
      os.fchmod(f.fileno(), 0o644)
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  # Persist the rename itself, or a power loss could bring back the old directory entry.
  dir_fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(dir_fd)
  finally:
    os.close(dir_fd)


def to_python(obj: Any) -> Any:
  """`obj` with numpy/JAX scalars and arrays as Python values, tuples as lists, paths as str.

  Non-finite floats become None, so the JSON is strict (readable by any parser).

  Raises:
    TypeError: for a value JSON cannot represent.
  """
  if isinstance(obj, Mapping):
    return {to_python(k): to_python(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_python(v) for v in obj]
  if obj is None or isinstance(obj, (str, bool, int)):
    return obj
  if isinstance(obj, float):  # np.float64 included
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  if isinstance(obj, np.generic) or hasattr(obj, "__array__"):
    return to_python(np.asarray(obj).tolist())
  raise TypeError(f"cannot write a {type(obj).__name__} as JSON: {obj!r}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` atomically as indented JSON with sorted keys (see `to_python`)."""
  text = json.dumps(to_python(obj), indent=2, sort_keys=True, allow_nan=False)
  atomic_write(path, text + "\n")


# ----------------------------------------------------------------------------- metrics


class MetricsLog:
  """Appends one JSON line per `write(step=..., **fields)` to a metrics.jsonl file.

  Opening it truncates the log to the lines with `step <= resume_step` (none for a fresh run,
  `resume_step=0`): a run resumed from a checkpoint at step k has done steps 1..k, keeps their
  lines and rewrites steps > k instead of duplicating them. With `run` set, only that run's
  lines (field `run`) are truncated and every line gets `run`, so several runs can share one
  file. A local file is appended to, and a line cut short by a crash is dropped when read; a
  bucket object cannot be appended to, so it is rewritten whole at each line. On processes
  other than the leader it reads and writes nothing.
  """

  def __init__(self, path: str | os.PathLike, resume_step: int = 0, run: str | None = None):
    self.path = os.fspath(path)
    self.run = run
    self._file = self._lines = None
    if not distributed.is_leader():
      return
    kept = []
    for line, row in _metrics_lines(self.path):
      mine = run is None or row.get("run") == run
      if not mine or row.get("step", math.inf) <= resume_step:
        kept.append(line + "\n")
    atomic_write(self.path, "".join(kept))
    if is_local(self.path):
      self._file = open(self.path, "a", encoding="utf-8")
    else:
      self._lines = kept

  def write(self, step: int, **fields) -> None:
    """Appends `{"step": step, **fields}` (plus `run`) and flushes it to the OS."""
    row = {"step": step, **fields}
    if self.run is not None:
      row.setdefault("run", self.run)
    line = json.dumps(to_python(row), allow_nan=False) + "\n"
    if self._file is not None:
      self._file.write(line)
      self._file.flush()
    elif self._lines is not None:
      self._lines.append(line)
      atomic_write(self.path, "".join(self._lines))

  def close(self) -> None:
    if self._file is not None:
      self._file.close()

  def __enter__(self) -> "MetricsLog":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _metrics_lines(path: str) -> list[tuple[str, dict]]:
  """(line, parsed row) for each line of a metrics file; [] when there is none.

  A last line without its newline that does not parse is a write cut short by a crash and is
  skipped; a bad line anywhere else is corruption and raises ValueError.
  """
  if not epath.Path(path).exists():
    return []
  lines = epath.Path(path).read_text(encoding="utf-8").split("\n")
  out = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      out.append((line, json.loads(line)))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:  # no newline after it
        continue
      raise ValueError(f"{path}:{i + 1}: not a JSON line: {line[:80]!r}") from e
  return out


def read_metrics(path: str | os.PathLike) -> list[dict]:
  """The rows of a metrics.jsonl file in file order; [] when the file does not exist."""
  return [row for _, row in _metrics_lines(os.fspath(path))]


# ----------------------------------------------------------------------------- rows


def make_row(method: str, dataset: str, train_corruption: str, eval_corruption: str,
             label_fraction: float, draws: Sequence[float], **extra) -> dict:
  """A results row from per-draw top-1 accuracies in percent: mean, std (ddof=1), stderr.

  One draw (a deterministic operator such as blur) has std and stderr 0. `extra` fields (e.g.
  `loss`, `num_eval`) are kept in the row.
  """
  draws = [float(d) for d in draws]
  if not draws:
    raise ValueError("a results row needs at least one draw")
  std = statistics.stdev(draws) if len(draws) > 1 else 0.0
  row = {"method": method, "dataset": dataset, "train_corruption": train_corruption,
         "eval_corruption": eval_corruption, "label_fraction": float(label_fraction),
         "top1_mean": statistics.fmean(draws), "top1_std": std,
         "top1_stderr": std / math.sqrt(len(draws)), "draws": draws, **extra}
  validate_row(row)
  return row


def _is_number(x: Any) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def validate_row(row: Mapping) -> None:
  """Raises ValueError naming the first problem of a results row (missing or ill-typed field)."""
  if not isinstance(row, Mapping):
    raise ValueError(f"a results row must be a dict, got {type(row).__name__}")
  missing = [f for f in REQUIRED_FIELDS if f not in row]
  if missing:
    raise ValueError(f"results row is missing field(s) {', '.join(missing)}: {dict(row)!r}")
  for field in ("method", "dataset", "train_corruption", "eval_corruption"):
    if not isinstance(row[field], str):
      raise ValueError(f"results row field {field} must be a string, got {row[field]!r}")
  for field in ("top1_mean", "top1_std", "top1_stderr"):
    if not _is_number(row[field]):
      raise ValueError(f"results row field {field} must be a number, got {row[field]!r}")
  fraction = row["label_fraction"]
  if not _is_number(fraction) or not 0 < fraction <= 1:
    raise ValueError(f"results row field label_fraction must be in (0, 1], got {fraction!r}")
  draws = row["draws"]
  if (isinstance(draws, (str, bytes)) or not isinstance(draws, Sequence | np.ndarray)
      or len(draws) == 0 or not all(_is_number(d) for d in draws)):
    raise ValueError(f"results row field draws must be a non-empty list of accuracies in "
                     f"percent, got {draws!r}")


def _check_rows(rows: Sequence[Mapping]) -> None:
  seen = set()
  for row in rows:
    validate_row(row)
    key = tuple(row.get(f) for f in _KEY_FIELDS)
    if key in seen:
      raise ValueError(f"two results rows for {dict(zip(_KEY_FIELDS, key))}")
    seen.add(key)


# ----------------------------------------------------------------------------- report.md


def write_results(workdir: str | os.PathLike, config: Mapping, rows: Sequence[Mapping],
                  timing: Mapping, metrics_path: str | os.PathLike | None = None) -> list[str]:
  """Writes results.json, report.md and the plots into `workdir`; returns the paths written.

  `<workdir>/results.json` is `{"config", "rows", "timing"}`. Plots without data are not
  written (and a stale one from an earlier call is removed): loss.png from the metrics file
  (default `<workdir>/metrics.jsonl`), label_fraction.png, severity.png, loss_ablation.png
  (`ours` per training loss).

  Raises:
    ValueError: for an invalid row or two rows for the same cell (before anything is written;
      in every process). Processes other than the leader write nothing and return [].
  """
  _check_rows(rows)
  if not distributed.is_leader():
    return []
  workdir = epath.Path(workdir)
  paths = [workdir / name for name in ("results.json", "report.md")]
  write_json(paths[0], {"config": config, "rows": rows, "timing": timing})
  atomic_write(paths[1], render_report(config, rows, timing))
  if metrics_path is None:
    metrics_path = workdir / "metrics.jsonl"
  plots = ((plot_loss, read_metrics(metrics_path), "loss.png"),
           (plot_label_fraction, rows, "label_fraction.png"),
           (plot_severity, rows, "severity.png"),
           (plot_per_loss, rows, "loss_ablation.png"))
  for plot, data, name in plots:
    path = workdir / name
    if plot(data, path):
      paths.append(path)
  return [os.fspath(p) for p in paths]


def _run(row: Mapping) -> tuple[str, str]:
  """What tells a row's training run apart: its experiment (if named) and train corruption."""
  return row.get("experiment") or "", row["train_corruption"]


def _methods(rows: Iterable[Mapping]) -> list[str]:
  """The methods of `rows` in table order: METHOD_ORDER, then others as they first appear."""
  present = list(dict.fromkeys(r["method"] for r in rows))
  return ([m for m in METHOD_ORDER if m in present]
          + [m for m in present if m not in METHOD_ORDER])


def _group(rows: Iterable[Mapping], key) -> dict[Any, list[Mapping]]:
  groups = collections.defaultdict(list)
  for row in rows:
    groups[key(row)].append(row)
  return dict(groups)


def format_fraction(fraction: float) -> str:
  """0.001 -> "0.1%", 0.1 -> "10%", 1.0 -> "100%"."""
  return f"{fraction * 100:g}%"


def _cell(row: Mapping) -> str:
  if len(row["draws"]) == 1:
    return f"{row['top1_mean']:.2f}"
  return f"{row['top1_mean']:.2f} ± {row['top1_stderr']:.2f}"


def _md(text: str) -> str:
  """Escapes a table cell's pipes (corruption specs compose with `|`)."""
  return text.replace("|", "\\|")


def _draws_text(rows: Sequence[Mapping]) -> str:
  counts = sorted({len(r["draws"]) for r in rows})
  span = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
  return f"Evaluation draws per cell: {span}."


def _results_table(rows: Sequence[Mapping]) -> list[str]:
  """One markdown table: rows eval corruption x label fraction, columns the methods."""
  methods = _methods(rows)
  cells = {(r["eval_corruption"], r["label_fraction"], r["method"]): r for r in rows}
  evals = list(dict.fromkeys(r["eval_corruption"] for r in rows))
  fractions = sorted({r["label_fraction"] for r in rows})
  header = ["eval corruption", "labels"] + [_COLUMN_NAMES.get(m, m) for m in methods]
  lines = ["| " + " | ".join(_md(h) for h in header) + " |",
           "|---|---:|" + "---:|" * len(methods)]
  for ev in evals:
    for fraction in fractions:
      present = {m: cells[ev, fraction, m] for m in methods if (ev, fraction, m) in cells}
      if not present:
        continue
      # Best of the non-ceiling methods, compared as displayed so that visible ties all bold;
      # a lone candidate is not "best" of anything.
      candidates = {m: round(r["top1_mean"], 2) for m, r in present.items()
                    if m != CEILING and math.isfinite(r["top1_mean"])}
      best = max(candidates.values()) if len(candidates) > 1 else None
      row_cells = [f"`{_md(ev)}`", format_fraction(fraction)]
      for m in methods:
        if m not in present:
          row_cells.append("–")
        elif candidates.get(m) == best:
          row_cells.append(f"**{_cell(present[m])}**")
        else:
          row_cells.append(_cell(present[m]))
      lines.append("| " + " | ".join(row_cells) + " |")
  return lines


def _timing_table(timing: Mapping) -> list[str]:
  if not timing:
    return ["No timing recorded."]
  lines = ["| stage | seconds |", "|---|---:|"]

  def fmt(value):  # the caller may record non-numbers, e.g. a start date
    return f"{value:.1f}" if _is_number(value) else _md(str(value))

  for stage, seconds in timing.items():
    if stage != "total":
      lines.append(f"| {_md(str(stage))} | {fmt(seconds)} |")
  total = timing.get("total", sum(v for v in timing.values() if _is_number(v)))
  lines.append(f"| **total** | **{fmt(total)}** |")
  return lines


def render_report(config: Mapping, rows: Sequence[Mapping], timing: Mapping) -> str:
  """The report.md text: legend, timing, one results table per (dataset, train corruption)."""
  datasets = list(dict.fromkeys(r["dataset"] for r in rows))
  lines = [f"# Results: {', '.join(datasets) if datasets else 'no results'}", ""]
  if rows:
    lines += ["Top-1 accuracy (%), mean ± standard error over independent draws of the "
              "evaluation corruption (no ± for a single draw). Labels: the fraction of the "
              "labelled training set the probe (or head) saw. Bold: the best method other than "
              "the clean-teacher ceiling.", "", "Methods:", ""]
    for m in _methods(rows):
      lines.append(f"- **{_COLUMN_NAMES.get(m, m)}** (`{m}`)"
                   + (f": {_LEGEND[m]}" if m in _LEGEND else ""))
    lines.append("")
  lines += ["## Timing", ""] + _timing_table(timing) + [""]
  tables = _group(rows, lambda r: (r["dataset"], _run(r)))
  for (dataset, _), table_rows in tables.items():
    first = table_rows[0]
    run = f"{first['experiment']}, " if first.get("experiment") else ""
    loss = f", loss `{first['loss']}`" if first.get("loss") else ""
    lines += [f"## {dataset}, {run}trained on `{first['train_corruption']}`{loss}", "",
              _draws_text(table_rows), ""]
    lines += _results_table(table_rows) + [""]
  lines += ["## Config", "", "```json",
            json.dumps(to_python(config), indent=2, sort_keys=True, allow_nan=False), "```", ""]
  return "\n".join(lines)


# ----------------------------------------------------------------------------- plots


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
  atomic_write(path, buffer.getvalue())


def _skip(path: str) -> bool:
  """No data for this plot: removes a stale file from an earlier call and returns False."""
  if distributed.is_leader() and epath.Path(path).exists():
    epath.Path(path).unlink()
  return False


def _float(x: Any) -> float:
  """A plottable float; null (how a non-finite value is logged) becomes a gap."""
  return float(x) if _is_number(x) else math.nan


def plot_loss(metrics: Sequence[Mapping], path: str | os.PathLike) -> bool:
  """Training loss vs step, one line per `run`; returns whether a plot was written."""
  path = os.fspath(path)
  metrics = [m for m in metrics if _is_number(m.get("step")) and "loss" in m]
  if not metrics:
    return _skip(path)
  fig, (ax,) = _panels(1, width=6.4, height=4.0)
  runs = _group(metrics, lambda m: m.get("run"))
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


def _errorbar(ax, method: str, xs: list[float], points: Sequence[Mapping], color: str,
              label: str) -> None:
  # The ceiling is a reference, not a competitor: dashed, and a horizontal line if it is one
  # point (e.g. the clean teacher evaluated with all labels only).
  ys = [p["top1_mean"] for p in points]
  if method == CEILING and len(points) == 1:
    ax.axhline(ys[0], linestyle="--", color=color, label=label)
    return
  ax.errorbar(xs, ys, yerr=[p["top1_stderr"] for p in points], color=color, label=label,
              marker="o", markersize=4, capsize=3, linestyle="--" if method == CEILING else "-")


def plot_label_fraction(rows: Sequence[Mapping], path: str | os.PathLike) -> bool:
  """Top-1 vs label fraction (log x), a panel per (train, eval) corruption pair.

  Only pairs with at least two label fractions get a panel; returns whether a plot was written.
  """
  path = os.fspath(path)
  panels = _group(rows, lambda r: (r["dataset"], _run(r), r["eval_corruption"]))
  panels = {k: v for k, v in panels.items() if len({r["label_fraction"] for r in v}) > 1}
  if not panels:
    return _skip(path)
  several_datasets = len({dataset for dataset, _, _ in panels}) > 1
  colors = _colors(_methods(rows))
  fig, axes = _panels(len(panels))
  for ax, ((dataset, (_, train), ev), panel_rows) in zip(axes, panels.items()):
    for method in _methods(panel_rows):
      points = sorted((r for r in panel_rows if r["method"] == method),
                      key=lambda r: r["label_fraction"])
      _errorbar(ax, method, [p["label_fraction"] for p in points], points, colors[method],
                _COLUMN_NAMES.get(method, method))
    fractions = sorted({r["label_fraction"] for r in panel_rows})
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(fractions))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_fraction(v)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("label fraction")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{dataset}: " * several_datasets + f"train {train}, eval {ev}",
                 fontsize="medium")
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
  panels = _group([(r, s) for r, s in parsed if s is not None],
                  lambda rs: (rs[0]["dataset"], _run(rs[0]), rs[1][0],
                              rs[0]["label_fraction"]))
  panels = {k: v for k, v in panels.items() if len({s for _, (_, s) in v}) > 1}
  if not panels:
    return _skip(path)
  several_datasets = len({k[0] for k in panels}) > 1
  colors = _colors(_methods(rows))
  fig, axes = _panels(len(panels))
  for ax, ((dataset, (name, train), op, fraction), entries) in zip(axes, panels.items()):
    for method in _methods(r for r, _ in entries):
      points = sorted(((s, r) for r, (_, s) in entries if r["method"] == method),
                      key=lambda sr: sr[0])
      _errorbar(ax, method, [s for s, _ in points], [r for _, r in points], colors[method],
                _COLUMN_NAMES.get(method, method))
    ax.set_xlabel(f"{op} severity (first parameter)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{dataset}: " * several_datasets
                 + f"{name + ': ' if name else ''}train {train}, eval {op}(·), "
                 + f"{format_fraction(fraction)} labels",
                 fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  _save(fig, path)
  return True


def plot_per_loss(rows: Sequence[Mapping], path: str | os.PathLike) -> bool:
  """Figure 6: top-1 of `ours` per training loss, bars grouped by eval corruption.

  A panel per (dataset, train corruption, label fraction) whose `ours` rows come from at least
  two losses (rows carry `loss`); returns whether a plot was written.
  """
  path = os.fspath(path)
  ours = [r for r in rows if r["method"] == "ours" and r.get("loss")]
  panels = _group(ours, lambda r: (r["dataset"], r["train_corruption"], r["label_fraction"]))
  panels = {k: v for k, v in panels.items() if len({r["loss"] for r in v}) > 1}
  if not panels:
    return _skip(path)
  fig, axes = _panels(len(panels), width=6.0)
  for ax, ((dataset, train, fraction), panel_rows) in zip(axes, panels.items()):
    losses = list(dict.fromkeys(r["loss"] for r in panel_rows))
    evals = list(dict.fromkeys(r["eval_corruption"] for r in panel_rows))
    cells = {(r["loss"], r["eval_corruption"]): r for r in panel_rows}
    width = 0.8 / len(losses)
    for i, loss in enumerate(losses):
      xs = [j + (i - (len(losses) - 1) / 2) * width for j, ev in enumerate(evals)
            if (loss, ev) in cells]
      found = [cells[loss, ev] for ev in evals if (loss, ev) in cells]
      ax.bar(xs, [_float(r["top1_mean"]) for r in found], width,
             yerr=[_float(r["top1_stderr"]) for r in found], capsize=2, label=loss,
             color=f"C{i % 10}")
    ax.set_xticks(range(len(evals)), evals, fontsize="small")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{dataset}: train {train}, {format_fraction(fraction)} labels, per loss",
                 fontsize="medium")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small", ncols=min(len(losses), 5))
  _save(fig, path)
  return True
