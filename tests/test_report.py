"""Tests for rrjax.report: atomic files, metrics log, results.json, report.md and plots."""

import json
import os

import numpy as np
import pytest

from rrjax import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(method, mean, stderr=0.08, *, train="mask(0.9)", ev="mask(0.9)", fraction=0.1,
         draws=10, dataset="imagenet100"):
  return {"method": method, "dataset": dataset, "train_corruption": train,
          "eval_corruption": ev, "label_fraction": fraction, "top1_mean": mean,
          "top1_std": stderr * np.sqrt(draws), "top1_stderr": stderr, "draws": [mean] * draws}


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


def _metrics(path):
  with report.MetricsLog(path, run="student[mask(0.9)]") as log:
    for step in range(1, 6):
      log.write(step=step, loss=5.0 / step, lr=3e-4, images_per_s=100.0)
  with report.MetricsLog(path, run="baseline[mask(0.9)]") as log:
    for step in range(1, 6):
      log.write(step=step, loss=2.0 / step, lr=1e-3, images_per_s=50.0)


def _assert_png(path):
  with open(path, "rb") as f:
    data = f.read()
  assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


# ----------------------------------------------------------------------------- files


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
  path = tmp_path / "out.txt"
  report.atomic_write(path, "old")
  report.atomic_write(path, b"new \xe2\x9c\x93")
  assert path.read_text(encoding="utf-8") == "new ✓"
  assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_crash_keeps_old_file(tmp_path, monkeypatch):
  path = tmp_path / "results.json"
  report.atomic_write(path, "old")

  def crash(src, dst):
    raise OSError("simulated crash before the rename")

  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(OSError, match="simulated"):
    report.atomic_write(path, "new")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["results.json"]


def test_write_json_converts_numpy_and_is_deterministic(tmp_path):
  obj = {"b": np.float32(0.5), "a": np.arange(3), "c": (np.int64(2), np.bool_(True)),
         "nan": float("nan")}
  report.write_json(tmp_path / "x.json", obj)
  text = (tmp_path / "x.json").read_text()
  assert json.loads(text) == {"a": [0, 1, 2], "b": 0.5, "c": [2, True], "nan": None}
  assert text.index('"a"') < text.index('"b"')  # sorted keys
  with pytest.raises(TypeError, match="object"):
    report.write_json(tmp_path / "y.json", {"x": object()})


# ----------------------------------------------------------------------------- metrics


def test_metrics_log_appends_and_resume_drops_later_steps(tmp_path):
  path = tmp_path / "metrics.jsonl"
  with report.MetricsLog(path) as log:
    for step in range(10, 60, 10):
      log.write(step=step, loss=np.float32(1.0 / step), lr=3e-4, images_per_s=12.5)
  assert [m["step"] for m in report.read_metrics(path)] == [10, 20, 30, 40, 50]
  assert list(report.read_metrics(path)[0]) == ["step", "loss", "lr", "images_per_s"]

  with report.MetricsLog(path, resume_step=30) as log:  # checkpoint at 30: 40.. rerun
    log.write(step=40, loss=0.5)
  assert [m["step"] for m in report.read_metrics(path)] == [10, 20, 30, 40]
  assert report.read_metrics(path)[-1]["loss"] == 0.5

  report.MetricsLog(path).close()  # a fresh run starts an empty log
  assert report.read_metrics(path) == []
  assert report.read_metrics(tmp_path / "missing.jsonl") == []


def test_metrics_log_runs_share_a_file_and_torn_line_is_dropped(tmp_path):
  path = tmp_path / "metrics.jsonl"
  _metrics(path)
  with open(path, "a") as f:
    f.write('{"step": 6, "lo')  # a crash in the middle of a write
  assert len(report.read_metrics(path)) == 10
  with report.MetricsLog(path, resume_step=2, run="student[mask(0.9)]") as log:
    log.write(step=3, loss=1.0)
  rows = report.read_metrics(path)
  student = [m["step"] for m in rows if m["run"] == "student[mask(0.9)]"]
  baseline = [m["step"] for m in rows if m["run"] == "baseline[mask(0.9)]"]
  assert student == [1, 2, 3] and baseline == [1, 2, 3, 4, 5]


# ----------------------------------------------------------------------------- rows


def test_make_row_statistics():
  row = report.make_row("ours", "imagenet100", "mask(0.9)", "mask(0.9)", 0.1, [80.0, 82.0, 84.0])
  assert row["top1_mean"] == pytest.approx(82.0)
  assert row["top1_std"] == pytest.approx(2.0)  # ddof=1
  assert row["top1_stderr"] == pytest.approx(2.0 / np.sqrt(3))
  single = report.make_row("ours", "imagenet100", "blur(21,5)", "blur(21,5)", 1.0, [83.24])
  assert single["top1_std"] == single["top1_stderr"] == 0.0


def test_validate_row_errors():
  row = _row("ours", 82.96)
  report.validate_row(row)
  with pytest.raises(ValueError, match="missing field.*top1_stderr"):
    report.validate_row({k: v for k, v in row.items() if k != "top1_stderr"})
  with pytest.raises(ValueError, match="label_fraction"):
    report.validate_row(dict(row, label_fraction=10))
  with pytest.raises(ValueError, match="draws"):
    report.validate_row(dict(row, draws=[]))
  with pytest.raises(ValueError, match="top1_mean"):
    report.validate_row(dict(row, top1_mean="82.96"))
  with pytest.raises(ValueError, match="two results rows"):
    report.write_results("/nonexistent/never/written", {}, [row, row], {})


# ----------------------------------------------------------------------------- outputs


def test_write_results_round_trip_report_and_plots(tmp_path):
  rows = _synthetic_rows()
  rows.append(_row("ours", 82.96, ev="mask(0.9)|noise(0.1)", fraction=0.1))
  rows.append(_row("baseline", 74.12, 0.10, ev="mask(0.9)|noise(0.1)", fraction=0.1))
  rows.append(_row("zeroshot", 62.34, ev="mask(0.9)|noise(0.1)", fraction=0.1, draws=1))
  config = {"train": {"corruption": "mask(0.9)", "lr": 3e-4}, "seed": np.int64(0)}
  timing = {"teacher_features": 10.0, "train": 100.25, "probe": 5.0}
  _metrics(tmp_path / "metrics.jsonl")

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
  assert all(set(report.REQUIRED_FIELDS) <= set(r) for r in results["rows"])
  for row in results["rows"]:
    report.validate_row(row)

  md = (tmp_path / "report.md").read_text()
  assert ("| eval corruption | labels | teacher (clean, ceiling) | teacher (corrupted) | ours "
          "| baseline | zero-shot |") in md
  # Composite spec escaped; ours best (bold), baseline plain, one-draw cells without ±.
  assert ("| `mask(0.9)\\|noise(0.1)` | 10% | – | – | **82.96 ± 0.08** | 74.12 ± 0.10 "
          "| 62.34 |") in md
  # The ceiling is never bold even when it is the highest.
  assert "| `mask(0.5)` | 100% | 90.10 | 12.30 ± 0.08 | **85.90 ± 0.08** | 77.50 ± 0.08 |" in md
  assert "| `mask(0.95)` | 1% |" in md
  assert "## imagenet100, trained on `mask(0.9)`" in md
  assert "Evaluation draws per cell: 1 to 10." in md
  assert "| train | 100.2 |" in md and "| **total** | **115.2** |" in md
  assert "probe fitted on corrupted images (naive)" in md

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


def test_parse_severity_and_format_fraction():
  assert report.parse_severity("mask(0.95)") == ("mask", 0.95)
  assert report.parse_severity("blur(21,5)") == ("blur", 21.0)
  assert report.parse_severity("noise(1e-1, 0.3)") == ("noise", 0.1)
  assert report.parse_severity("identity") is None
  assert report.parse_severity("mask(0.5)|noise(0.1)") is None
  assert [report.format_fraction(f) for f in (0.001, 0.01, 0.05, 0.1, 1.0)] == [
      "0.1%", "1%", "5%", "10%", "100%"]
