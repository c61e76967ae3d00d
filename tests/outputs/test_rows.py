"""rrjax.outputs.rows: the results row's one constructor and its schema."""

import numpy as np
import pytest

from rrjax.outputs import rows

CELL = dict(experiment="mask90", loss="st", method="ours", dataset="imagenet100",
            train_corruption="mask(0.9)", eval_corruption="mask(0.9)")


def test_make_row_statistics_against_numpy():
  draws = [80.0, 82.5, 84.0, 79.1]
  row = rows.make_row(**CELL, label_fraction=0.1, draws=draws)
  assert row["top1_mean"] == np.mean(draws)
  assert row["top1_std"] == np.std(draws, ddof=1)
  assert row["top1_stderr"] == np.std(draws, ddof=1) / 2
  assert row["draws"] == draws
  assert set(row) == set(rows.REQUIRED_FIELDS)
  single = rows.make_row(**dict(CELL, eval_corruption="blur(21,5)"), label_fraction=1,
                         draws=[83.24])
  assert single["top1_std"] == single["top1_stderr"] == 0.0
  assert single["label_fraction"] == 1.0 and isinstance(single["label_fraction"], float)


def test_make_row_optional_fields():
  row = rows.make_row(**CELL, label_fraction=0.1, draws=[1.0],
                      probe={"lr": 1e-3, "epochs": 10, "weight_decay": 0.0},
                      backbone_label_fraction=1)
  assert row["probe"] == {"lr": 1e-3, "epochs": 10, "weight_decay": 0.0}
  assert row["backbone_label_fraction"] == 1.0
  assert "probe" not in rows.make_row(**CELL, label_fraction=0.1, draws=[1.0])
  with pytest.raises(ValueError, match="at least one draw"):
    rows.make_row(**CELL, label_fraction=0.1, draws=[])
  with pytest.raises(ValueError, match="label_fraction"):
    rows.make_row(**CELL, label_fraction=0, draws=[1.0])


def test_validate_row_errors():
  row = rows.make_row(**CELL, label_fraction=0.1, draws=[82.96, 83.0])
  rows.validate_row(row)
  with pytest.raises(ValueError, match="missing field.*top1_stderr"):
    rows.validate_row({k: v for k, v in row.items() if k != "top1_stderr"})
  with pytest.raises(ValueError, match="missing field.*experiment"):
    rows.validate_row({k: v for k, v in row.items() if k != "experiment"})
  with pytest.raises(ValueError, match="unknown field.*accuracy"):
    rows.validate_row(dict(row, accuracy=1.0))
  with pytest.raises(ValueError, match="label_fraction"):
    rows.validate_row(dict(row, label_fraction=10))
  with pytest.raises(ValueError, match="draws"):
    rows.validate_row(dict(row, draws=[]))
  with pytest.raises(ValueError, match="top1_mean"):
    rows.validate_row(dict(row, top1_mean="82.96"))
  with pytest.raises(ValueError, match="two results rows"):
    rows.check_rows([row, dict(row)])
  rows.check_rows([row, dict(row, experiment="other")])


def test_methods_in_table_order_and_fractions_formatted():
  made = [dict(CELL, method=m) for m in ("ours", "ablation_x", "teacher_clean", "baseline")]
  assert rows.methods(made) == ["teacher_clean", "ours", "baseline", "ablation_x"]
  assert [rows.format_fraction(f) for f in (0.001, 0.01, 0.05, 0.1, 1.0)] == [
      "0.1%", "1%", "5%", "10%", "100%"]


def _cell(method, draws, **kw):
  fields = dict(experiment="mask90", loss="st", method=method, dataset="d",
                train_corruption="mask(0.9)", eval_corruption="mask(0.9)", label_fraction=0.1)
  fields.update(kw)
  return rows.make_row(draws=draws, **fields)


def test_aggregate_seeds_is_the_mean_and_standard_error_over_seed_means():
  per_seed = {0: [_cell("ours", [60.0, 62.0], probe={"lr": 1e-3}), _cell("baseline", [50.0])],
              3: [_cell("ours", [70.0, 74.0], probe={"lr": 1e-2}), _cell("baseline", [55.0])],
              5: [_cell("ours", [65.0, 65.0]), _cell("baseline", [51.0])]}
  ours, base = rows.aggregate_seeds(per_seed)
  means = np.array([61.0, 72.0, 65.0])
  assert ours["top1_mean"] == pytest.approx(means.mean())
  assert ours["top1_std"] == pytest.approx(np.std(means, ddof=1))
  assert ours["top1_stderr"] == pytest.approx(np.std(means, ddof=1) / np.sqrt(3))
  assert ours["seeds"] == {"0": 61.0, "3": 72.0, "5": 65.0}
  # The draws' own spread: the mean over seeds of each seed's standard error over its draws.
  assert ours["draw_stderr"] == pytest.approx(np.mean([1.0, 2.0, 0.0]))
  assert ours["draws"] == [60.0, 62.0, 70.0, 74.0, 65.0, 65.0]
  assert "probe" not in ours  # Chosen per seed: each seed's results.json keeps it.
  # Paired over seeds: ours - baseline per seed is 11, 17, 14.
  diff, stderr = rows.paired_difference(ours, base)
  assert diff == pytest.approx(14.0)
  assert stderr == pytest.approx(np.std([11.0, 17.0, 14.0], ddof=1) / np.sqrt(3))
  rows.check_rows([ours, base])


def test_aggregate_seeds_refuses_one_seed_and_a_missing_cell():
  with pytest.raises(ValueError, match="at least 2"):
    rows.aggregate_seeds({0: [_cell("ours", [1.0])]})
  with pytest.raises(ValueError, match=r"missing from seed\(s\) \[1\]"):
    rows.aggregate_seeds({0: [_cell("ours", [1.0]), _cell("baseline", [1.0])],
                          1: [_cell("ours", [2.0])]})
