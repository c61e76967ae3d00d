"""rrjax.outputs.corruption_grid: the ImageNet-C summary against a hand computation."""

import ml_collections
import pytest

from rrjax import run
from rrjax.outputs import corruption_grid, report
from rrjax.outputs import rows as rows_lib


def _row(method, spec, top1, fraction=0.1):
  return rows_lib.make_row(experiment="u", loss="st", method=method, dataset="d",
                           train_corruption="mask(0.9)", eval_corruption=spec,
                           label_fraction=fraction, draws=[top1])


ROWS = [
    _row("teacher_corrupted", "fog(1)", 60.0), _row("teacher_corrupted", "fog(2)", 40.0),
    _row("teacher_corrupted", "snow(1)", 80.0),
    _row("ours", "fog(1)", 70.0), _row("ours", "fog(2)", 50.0), _row("ours", "snow(1)", 90.0),
    _row("ours", "mask(0.9)", 55.0),  # Not ImageNet-C: left out of the summary.
]


def test_summary_means_and_mce_by_hand():
  got = corruption_grid.summary(ROWS)[0.1]
  assert list(got) == ["teacher_corrupted", "ours"]  # Table order (rows.METHOD_ORDER).
  ours = got["ours"]
  assert ours["per_corruption"] == {"fog": 60.0, "snow": 90.0}
  assert ours["mean"] == pytest.approx((70 + 50 + 90) / 3) and ours["cells"] == 3
  # CE_fog = (30 + 50) / (40 + 60), CE_snow = 10 / 20; mCE = their mean, in percent.
  assert ours["mce"] == pytest.approx(100 * (0.8 + 0.5) / 2)
  assert got["teacher_corrupted"]["mce"] == pytest.approx(100.0)


def test_mce_needs_the_reference_and_table_renders():
  without = [r for r in ROWS if r["method"] != "teacher_corrupted"]
  assert corruption_grid.summary(without)[0.1]["ours"]["mce"] is None
  lines = corruption_grid.table(ROWS)
  text = "\n".join(lines)
  assert "| fog | 50.00 | 60.00 |" in text and "| snow | 80.00 | 90.00 |" in text
  assert "65.0%" in text and "100.0%" in text
  assert corruption_grid.table([r for r in ROWS if r["eval_corruption"] == "mask(0.9)"]) == []
  assert "ImageNet-C corruptions, 10% labels" in report.render_report({}, ROWS, {})


def test_expand_grids_replaces_tokens_in_the_config_and_its_experiments():
  c = ml_collections.ConfigDict({"eval": {"corruptions": ("mask(0.9)",)}})
  c.experiments = ml_collections.ConfigDict(sort_keys=False)
  c.experiments.z = {"train": {"steps": 1}}
  c.experiments.a = {"eval": {"corruptions": ("imagenet_c(3)",)}}
  expanded = run.expand_grids(c)
  assert expanded is not c
  assert list(expanded.experiments) == ["z", "a"]  # The run order is kept.
  assert len(expanded.experiments.a.eval.corruptions) == 15
  assert expanded.eval.corruptions == ("mask(0.9)",)
  assert c.experiments.a.eval.corruptions == ("imagenet_c(3)",)  # The caller's is untouched.
  plain = ml_collections.ConfigDict({"eval": {"corruptions": ("mask(0.9)",)}})
  assert run.expand_grids(plain) is plain


def test_across_experiments_puts_each_student_side_by_side():
  def row(experiment, method, spec, top1):
    return rows_lib.make_row(experiment=experiment, loss="st", method=method, dataset="d",
                             train_corruption="x", eval_corruption=spec, label_fraction=0.1,
                             draws=[top1])
  rows = [row("universal", "ours", "mask(0.9)", 60.0), row("universal", "ours", "fog(3)", 50.0),
          row("mask", "ours", "mask(0.9)", 62.0), row("universal", "baseline", "fog(3)", 40.0)]
  lines = report.across_experiments_table(rows)
  assert lines[0] == ("| eval corruption | labels | ours (universal) | ours (mask) | "
                      "baseline (universal) |")
  assert lines[2] == "| `mask(0.9)` | 10% | 60.00 | **62.00** | – |"
  assert lines[3] == "| `fog(3)` | 10% | 50.00 | – | 40.00 |"
  assert report.across_experiments_table(rows[:2]) == []  # One experiment: no table.
  assert "## d: ours across experiments" in report.render_report({}, rows, {})
