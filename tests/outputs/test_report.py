"""rrjax.outputs.report: results.json, report.md and the plots of a run's rows."""

import json
import os

import numpy as np
import pytest

from rrjax.outputs import report
from rrjax.outputs import rows as rows_lib
from tests import helpers

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(method, mean, stderr=0.08, *, train="mask(0.9)", ev="mask(0.9)", fraction=0.1,
         draws=10, dataset="imagenet100"):
  return {"experiment": "mask90", "loss": "st", "method": method, "dataset": dataset,
          "train_corruption": train, "eval_corruption": ev, "label_fraction": fraction,
          "top1_mean": mean, "top1_std": stderr * np.sqrt(draws), "top1_stderr": stderr,
          "draws": [mean] * draws}


def _synthetic_rows():
  """A small mask(0.9) study: four methods x three label fractions x three eval severities."""
  rows = []
  for ev, drop in (("mask(0.5)", 0.0), ("mask(0.9)", 3.0), ("mask(0.95)", 8.0)):
    for fraction, gain in ((0.01, -12.0), (0.1, -3.0), (1.0, 0.0)):
      rows += [_row("ours", 85.9 - drop + gain, ev=ev, fraction=fraction),
               _row("baseline", 77.5 - drop + gain, ev=ev, fraction=fraction),
               _row("teacher_corrupted", 12.3 - drop / 3 + gain / 10, ev=ev, fraction=fraction)]
    rows.append(_row("teacher_clean", 90.1, ev=ev, fraction=1.0, draws=1))
  return rows


def _assert_png(path):
  with open(path, "rb") as f:
    data = f.read()
  assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_write_results_round_trip_report_and_plots(tmp_path):
  rows = _synthetic_rows()
  rows.append(_row("ours", 82.96, ev="mask(0.9)|noise(0.1)", fraction=0.1))
  rows.append(_row("baseline", 74.12, 0.10, ev="mask(0.9)|noise(0.1)", fraction=0.1))
  rows.append(_row("zeroshot", 62.34, ev="mask(0.9)|noise(0.1)", fraction=0.1, draws=1))
  config = {"train": {"corruption": "mask(0.9)", "lr": 3e-4}, "seed": np.int64(0)}
  timing = {"teacher_features": 10.0, "train": 100.25, "probe": 5.0}
  helpers.write_metrics(tmp_path / "metrics.jsonl")

  written = report.write_results(tmp_path, config, rows, timing)
  names = sorted(os.path.basename(p) for p in written)
  assert names == ["label_fraction.png", "loss.png", "report.md", "results.json",
                   "severity.png"]
  for name in ("label_fraction.png", "loss.png", "severity.png"):
    _assert_png(tmp_path / name)
  assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]

  results = json.loads((tmp_path / "results.json").read_text())
  assert set(results) == {"config", "rows", "timing"}
  assert results["config"]["seed"] == 0 and results["timing"] == timing
  assert len(results["rows"]) == len(rows)
  assert all(set(rows_lib.REQUIRED_FIELDS) <= set(r) for r in results["rows"])
  for row in results["rows"]:
    rows_lib.validate_row(row)

  md = (tmp_path / "report.md").read_text()
  assert ("| eval corruption | labels | teacher (clean, ceiling) | teacher (corrupted) | ours "
          "| baseline | zero-shot |") in md
  # Composite spec escaped; ours best (bold), baseline plain, one-draw cells without ±.
  assert ("| `mask(0.9)\\|noise(0.1)` | 10% | – | – | **82.96 ± 0.08** | 74.12 ± 0.10 "
          "| 62.34 |") in md
  # The ceiling is never bold even when it is the highest.
  assert "| `mask(0.5)` | 100% | 90.10 | 12.30 ± 0.08 | **85.90 ± 0.08** | 77.50 ± 0.08 |" in md
  assert "| `mask(0.95)` | 1% |" in md
  assert "## imagenet100, mask90, trained on `mask(0.9)`, loss `st`" in md
  assert "Evaluation draws per cell: 1 to 10." in md
  assert "| train | 100.2 |" in md and "| **total** | **115.2** |" in md
  assert "probe fitted on corrupted images (a stronger naive" in md

  # Same inputs, same bytes.
  before = {n: (tmp_path / n).read_bytes() for n in ("results.json", "report.md")}
  report.write_results(tmp_path, config, rows, timing)
  assert before == {n: (tmp_path / n).read_bytes() for n in before}


def test_plots_skipped_without_data(tmp_path):
  (tmp_path / "loss.png").write_bytes(b"stale")
  rows = [_row("ours", 82.96), _row("baseline", 74.12)]  # one fraction, one eval corruption
  written = report.write_results(tmp_path, {}, rows, {})
  assert sorted(os.listdir(tmp_path)) == ["report.md", "results.json"]
  assert len(written) == 2
  assert "No timing recorded." in (tmp_path / "report.md").read_text()
  report.write_results(tmp_path / "empty", {}, [], {})
  assert "no results" in (tmp_path / "empty" / "report.md").read_text()


def test_two_rows_of_one_cell_are_refused_before_anything_is_written(tmp_path):
  row = _row("ours", 82.96)
  with pytest.raises(ValueError, match="two results rows"):
    report.write_results(tmp_path / "never", {}, [row, row], {})
  assert not (tmp_path / "never").exists()
