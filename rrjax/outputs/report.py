"""The run's report: results.json, report.md with a table per training run, and the plots.

    report.write_results(workdir, config.to_dict(), rows, timing={"train": 812.4})

`report.md` has a legend, the timing and one table per (dataset, training run): rows eval
corruption x label fraction, columns the methods, the best non-ceiling method in bold; where
ImageNet-C corruptions were evaluated, their summary after it (`corruption_grid`); with several
experiments, their students side by side on every eval corruption (`across_experiments_table`).
Outputs depend only on the arguments: no timestamps, JSON keys sorted, rows and tables in the
caller's order.
"""

import json
import math
import os
from collections.abc import Mapping, Sequence

from etils import epath

from rrjax.io import files, metrics
from rrjax.outputs import corruption_grid, plots
from rrjax.outputs import rows as rows_lib
from rrjax.parallel import multiprocess


def write_results(workdir: str | os.PathLike, config: Mapping, rows: Sequence[Mapping],
                  timing: Mapping) -> list[str]:
  """Writes results.json, report.md and the plots into `workdir`; returns the paths written.

  `<workdir>/results.json` is `{"config", "rows", "timing"}`. Plots without data are not
  written (and a stale one from an earlier call is removed): loss.png and validation.png (the
  baselines' validation curves) from `<workdir>/metrics.jsonl`, label_fraction.png,
  severity.png, loss_ablation.png (`ours` per training loss).

  Raises:
    ValueError: for an invalid row or two rows for the same cell (before anything is written;
      in every process). Processes other than the leader write nothing and return [].
  """
  rows_lib.check_rows(rows)
  if not multiprocess.is_leader():
    return []
  workdir = epath.Path(workdir)
  paths = [workdir / name for name in ("results.json", "report.md")]
  files.write_json(paths[0], {"config": config, "rows": rows, "timing": timing})
  files.atomic_write(paths[1], render_report(config, rows, timing))
  logged = metrics.read_metrics(workdir / "metrics.jsonl")
  figures = ((plots.plot_loss, logged, "loss.png"),
             (plots.plot_validation, logged, "validation.png"),
             (plots.plot_label_fraction, rows, "label_fraction.png"),
             (plots.plot_severity, rows, "severity.png"),
             (plots.plot_per_loss, rows, "loss_ablation.png"))
  for plot, data, name in figures:
    path = workdir / name
    if plot(data, path):
      paths.append(path)
  return [os.fspath(p) for p in paths]


def _cell(row: Mapping) -> str:
  if len(row["draws"]) == 1 and "seeds" not in row:
    return f"{row['top1_mean']:.2f}"
  return f"{row['top1_mean']:.2f} ± {row['top1_stderr']:.2f}"


def _md(text: str) -> str:
  """Escapes a table cell's pipes (corruption specs compose with `|`)."""
  return text.replace("|", "\\|")


def _draws_text(rows: Sequence[Mapping]) -> str:
  if all("seeds" in r for r in rows):
    counts = sorted({len(r["draws"]) // len(r["seeds"]) for r in rows})
    span = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    return f"Training seeds per cell: {len(rows[0]['seeds'])}; evaluation draws per seed: {span}."
  counts = sorted({len(r["draws"]) for r in rows})
  span = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
  return f"Evaluation draws per cell: {span}."


def results_table(rows: Sequence[Mapping]) -> list[str]:
  """One markdown table: rows eval corruption x label fraction, columns the methods."""
  methods = rows_lib.methods(rows)
  cells = {(r["eval_corruption"], r["label_fraction"], r["method"]): r for r in rows}
  evals = list(dict.fromkeys(r["eval_corruption"] for r in rows))
  fractions = sorted({r["label_fraction"] for r in rows})
  header = ["eval corruption", "labels"] + [rows_lib.COLUMN_NAMES.get(m, m) for m in methods]
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
                    if m != rows_lib.CEILING and math.isfinite(r["top1_mean"])}
      best = max(candidates.values()) if len(candidates) > 1 else None
      row_cells = [f"`{_md(ev)}`", rows_lib.format_fraction(fraction)]
      for m in methods:
        if m not in present:
          row_cells.append("–")
        elif best is not None and candidates.get(m) == best:
          row_cells.append(f"**{_cell(present[m])}**")
        else:
          row_cells.append(_cell(present[m]))
      lines.append("| " + " | ".join(row_cells) + " |")
  return lines


def across_experiments_table(rows: Sequence[Mapping]) -> list[str]:
  """One dataset's `ours` (and `baseline`) rows side by side over experiments: rows eval
  corruption x label fraction, a column per (method, experiment); [] with fewer than two
  experiments. Bold: the best `ours` of a row."""
  runs = list(dict.fromkeys(r["experiment"] for r in rows if r["method"] == "ours"))
  if len(runs) < 2:
    return []
  columns = [("ours", e) for e in runs] + [
      ("baseline", e) for e in runs
      if any(r["method"] == "baseline" and r["experiment"] == e for r in rows)]
  cells = {(r["eval_corruption"], r["label_fraction"], r["method"], r["experiment"]): r
           for r in rows if r["method"] in ("ours", "baseline")}
  lines = ["| eval corruption | labels | " + " | ".join(
      f"{rows_lib.COLUMN_NAMES.get(m, m)} ({_md(e)})" for m, e in columns) + " |",
           "|---|---:|" + "---:|" * len(columns)]
  keys = dict.fromkeys((ev, f) for ev, f, _, _ in cells)
  for ev, fraction in keys:
    present = {c: cells.get((ev, fraction) + c) for c in columns}
    ours = [round(r["top1_mean"], 2) for (m, _), r in present.items() if m == "ours" and r]
    best = max(ours) if len(ours) > 1 else None
    out = [f"`{_md(ev)}`", rows_lib.format_fraction(fraction)]
    for (m, _), r in present.items():
      text = "–" if r is None else _cell(r)
      out.append(f"**{text}**" if r and m == "ours" and round(r["top1_mean"], 2) == best
                 else text)
    lines.append("| " + " | ".join(out) + " |")
  return lines


def _timing_table(timing: Mapping) -> list[str]:
  if not timing:
    return ["No timing recorded."]
  lines = ["| stage | seconds |", "|---|---:|"]

  def fmt(value):  # the caller may record non-numbers, e.g. a start date
    return f"{value:.1f}" if rows_lib.is_number(value) else _md(str(value))

  for stage, seconds in timing.items():
    if stage != "total":
      lines.append(f"| {_md(str(stage))} | {fmt(seconds)} |")
  total = timing.get("total", sum(v for v in timing.values() if rows_lib.is_number(v)))
  lines.append(f"| **total** | **{fmt(total)}** |")
  return lines


def _comparison_table(rows: Sequence[Mapping]) -> list[str]:
  """Rows aggregated over seeds: `ours` against every other method but the ceiling, paired
  over seeds, and the share of the naive-to-ceiling gap `ours` recovers, per seed."""
  cells = {(r["eval_corruption"], r["label_fraction"], r["method"]): r for r in rows}
  ceiling = {r["label_fraction"]: r for r in rows if r["method"] == rows_lib.CEILING}
  others = [m for m in rows_lib.methods(rows) if m not in ("ours", rows_lib.CEILING)]
  if not others or not any(r["method"] == "ours" for r in rows):
    return []
  seeds = len(rows[0]["seeds"])
  t95 = _T95.get(seeds - 1)
  lines = ["Differences, ours minus each method: mean ± standard error of the per-seed "
           "differences (the seeds pair the runs); * where the mean exceeds 2 standard errors"
           + (f", ** where it exceeds {t95:.2f}, Student's t 95% two-sided with {seeds - 1} "
              "degrees of freedom (with so few seeds, 2 standard errors is a weaker test: "
              f"{_T2_COVERAGE.get(seeds - 1, '?')} two-sided)" if t95 else "")
           + ". Gap recovered: (ours - teacher corrupted) / (ceiling - teacher corrupted) per "
           "seed, mean ± standard error; – where the ceiling is not above the naive row.", "",
           "| eval corruption | labels | " + " | ".join(
               f"ours - {rows_lib.COLUMN_NAMES.get(m, m)}" for m in others)
           + " | gap recovered |", "|---|---:|" + "---:|" * (len(others) + 1)]
  for (ev, fraction, method), ours in cells.items():
    if method != "ours":
      continue
    out = [f"`{_md(ev)}`", rows_lib.format_fraction(fraction)]
    for m in others:
      other = cells.get((ev, fraction, m))
      if other is None:
        out.append("–")
        continue
      diff, stderr = rows_lib.paired_difference(ours, other)
      stars = ("**" if t95 and abs(diff) > t95 * stderr else
               "*" if abs(diff) > 2 * stderr else "")
      out.append(f"{diff:+.2f} ± {stderr:.2f}{stars}")
    naive, top = cells.get((ev, fraction, "teacher_corrupted")), ceiling.get(fraction)
    share = rows_lib.gap_recovered(ours, naive, top) if naive and top else None
    out.append("–" if share is None else f"{100 * share[0]:.0f} ± {100 * share[1]:.0f}%")
    lines.append("| " + " | ".join(out) + " |")
  return lines


# Student's t two-sided 95% quantiles by degrees of freedom, and the two-sided coverage of
# |t| < 2 (what "beyond 2 standard errors" tests) for the seed counts a sweep uses.
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
_T2_COVERAGE = {1: "70%", 2: "82%", 3: "86%", 4: "88%", 5: "90%", 6: "91%", 7: "91%", 8: "92%",
                9: "92%"}


def render_report(config: Mapping, rows: Sequence[Mapping], timing: Mapping) -> str:
  """The report.md text: legend, timing, one results table per (dataset, train corruption);
  for rows aggregated over training seeds, a table of paired differences after each."""
  datasets = list(dict.fromkeys(r["dataset"] for r in rows))
  lines = [f"# Results: {', '.join(datasets) if datasets else 'no results'}", ""]
  over_seeds = bool(rows) and all("seeds" in r for r in rows)
  if over_seeds:
    lines += [f"Top-1 accuracy (%), mean ± standard error over {len(rows[0]['seeds'])} "
              f"training seeds ({', '.join(rows[0]['seeds'])}): each seed is a whole run "
              "(data order, crops, corruption draws, label subsets, probe initialisation), "
              "its value the mean over the draws of the evaluation corruption (their own "
              "standard error, averaged over seeds, is `draw_stderr` in results.json). Labels: "
              "the fraction of the labelled training set the probe (or head) saw. Bold: the "
              "best method other than the clean-teacher ceiling.", ""]
  elif rows:
    lines += ["Top-1 accuracy (%), mean ± standard error over independent draws of the "
              "evaluation corruption (no ± for a single draw). Labels: the fraction of the "
              "labelled training set the probe (or head) saw. Bold: the best method other than "
              "the clean-teacher ceiling.", ""]
  if rows:
    lines += ["Methods:", ""]
    for m in rows_lib.methods(rows):
      lines.append(f"- **{rows_lib.COLUMN_NAMES.get(m, m)}** (`{m}`)"
                   + (f": {rows_lib.LEGEND[m]}" if m in rows_lib.LEGEND else ""))
    lines.append("")
  lines += ["## Timing", ""] + _timing_table(timing) + [""]
  tables = rows_lib.group(rows, lambda r: (r["dataset"], rows_lib.run_of(r)))
  for (dataset, _), table_rows in tables.items():
    first = table_rows[0]
    run = f"{first['experiment']}, " if first.get("experiment") else ""
    loss = f", loss `{first['loss']}`" if first.get("loss") else ""
    lines += [f"## {dataset}, {run}trained on `{first['train_corruption']}`{loss}", "",
              _draws_text(table_rows), ""]
    lines += results_table(table_rows) + [""]
    lines += corruption_grid.table(table_rows)
    if over_seeds:
      comparison = _comparison_table(table_rows)
      lines += comparison + ([""] if comparison else [])
  for dataset in datasets:
    across = across_experiments_table([r for r in rows if r["dataset"] == dataset])
    if across:
      lines += [f"## {dataset}: ours across experiments", "",
                "The student of each experiment (and each baseline) on every eval corruption "
                "any of them was scored on: a specialist against a student trained on several "
                "operators, or one operator's student on another's corruptions.", ""]
      lines += across + [""]
  lines += ["## Config", "", "```json",
            json.dumps(files.to_python(config), indent=2, sort_keys=True, allow_nan=False),
            "```", ""]
  return "\n".join(lines)
