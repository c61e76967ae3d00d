"""rrjax.io.metrics: the metrics.jsonl log, resumable; a run's logs merged per experiment."""

import json

import numpy as np
import pytest

from rrjax import errors
from rrjax.io import metrics
from tests import helpers


def test_metrics_log_appends_and_resume_drops_later_steps(tmp_path):
  path = tmp_path / "metrics.jsonl"
  with metrics.MetricsLog(path) as log:
    for step in range(10, 60, 10):
      log.write(step=step, loss=np.float32(1.0 / step), lr=3e-4, images_per_s=12.5)
  assert [m["step"] for m in metrics.read_metrics(path)] == [10, 20, 30, 40, 50]
  assert list(metrics.read_metrics(path)[0]) == ["step", "loss", "lr", "images_per_s"]

  with metrics.MetricsLog(path, resume_step=30) as log:  # checkpoint at 30: 40.. rerun
    log.write(step=40, loss=0.5)
  assert [m["step"] for m in metrics.read_metrics(path)] == [10, 20, 30, 40]
  assert metrics.read_metrics(path)[-1]["loss"] == 0.5

  metrics.MetricsLog(path).close()  # a fresh run starts an empty log
  assert metrics.read_metrics(path) == []
  assert metrics.read_metrics(tmp_path / "missing.jsonl") == []


def test_metrics_log_torn_line_is_dropped_and_a_bad_line_named(tmp_path):
  path = tmp_path / "metrics.jsonl"
  with metrics.MetricsLog(path) as log:
    for step in (1, 2, 3):
      log.write(step=step, loss=1.0)
  with open(path, "a") as f:
    f.write('{"step": 4, "lo')  # a crash in the middle of a write
  assert [m["step"] for m in metrics.read_metrics(path)] == [1, 2, 3]
  with metrics.MetricsLog(path, resume_step=2) as log:  # The torn line goes too.
    log.write(step=3, loss=0.5)
  assert [(m["step"], m["loss"]) for m in metrics.read_metrics(path)] == [
      (1, 1.0), (2, 1.0), (3, 0.5)]
  path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(errors.UserError, match=r"metrics.jsonl:2: not a JSON line: 'not json'"):
    metrics.read_metrics(path)


def test_merge_runs_tags_every_line_with_its_experiment(tmp_path):
  helpers.write_metrics(tmp_path / "a" / "metrics.jsonl")
  helpers.write_metrics(tmp_path / "a" / "baseline_0.1" / "metrics.jsonl")
  # A baseline per learning rate (`baseline.select`): one level deeper.
  helpers.write_metrics(tmp_path / "b" / "baseline_1" / "lr_0.0003" / "metrics.jsonl")
  helpers.write_metrics(tmp_path / "b" / "metrics.jsonl")
  assert metrics.merge_runs(tmp_path, ["a", "b"]) == 40
  merged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [m["experiment"] for m in merged] == ["a"] * 20 + ["b"] * 20
  assert merged[0] == {"experiment": "a", "images_per_s": 100.0, "loss": 5.0, "lr": 3e-4,
                       "run": "student[mask(0.9)]", "step": 1}
