"""rrjax.outputs.metrics: the metrics.jsonl log, resumable, shared by runs; merged per run."""

import json

import numpy as np

from rrjax.outputs import metrics
from tests import helpers


def test_metrics_log_appends_and_resume_drops_later_steps(tmp_path):
  path = tmp_path / "metrics.jsonl"
  with metrics.MetricsLog(path) as log:
    for step in range(10, 60, 10):
      log.write(step=step, loss=np.float32(1.0 / step), lr=3e-4, images_per_s=12.5)
  assert [m["step"] for m in metrics.readhelpers.write_metrics(path)] == [10, 20, 30, 40, 50]
  assert list(metrics.readhelpers.write_metrics(path)[0]) == ["step", "loss", "lr", "images_per_s"]

  with metrics.MetricsLog(path, resume_step=30) as log:  # checkpoint at 30: 40.. rerun
    log.write(step=40, loss=0.5)
  assert [m["step"] for m in metrics.readhelpers.write_metrics(path)] == [10, 20, 30, 40]
  assert metrics.readhelpers.write_metrics(path)[-1]["loss"] == 0.5

  metrics.MetricsLog(path).close()  # a fresh run starts an empty log
  assert metrics.readhelpers.write_metrics(path) == []
  assert metrics.readhelpers.write_metrics(tmp_path / "missing.jsonl") == []


def test_metrics_log_runs_share_a_file_and_torn_line_is_dropped(tmp_path):
  path = tmp_path / "metrics.jsonl"
  helpers.write_metrics(path)
  with open(path, "a") as f:
    f.write('{"step": 6, "lo')  # a crash in the middle of a write
  assert len(metrics.readhelpers.write_metrics(path)) == 10
  with metrics.MetricsLog(path, resume_step=2, run="student[mask(0.9)]") as log:
    log.write(step=3, loss=1.0)
  rows = metrics.readhelpers.write_metrics(path)
  student = [m["step"] for m in rows if m["run"] == "student[mask(0.9)]"]
  baseline = [m["step"] for m in rows if m["run"] == "baseline[mask(0.9)]"]
  assert student == [1, 2, 3] and baseline == [1, 2, 3, 4, 5]


def test_merge_runs_tags_every_line_with_its_experiment(tmp_path):
  helpers.write_metrics(tmp_path / "a" / "metrics.jsonl")
  helpers.write_metrics(tmp_path / "a" / "baseline_0.1" / "metrics.jsonl")
  helpers.write_metrics(tmp_path / "b" / "metrics.jsonl")
  assert metrics.merge_runs(tmp_path, ["a", "b"]) == 30
  merged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [m["experiment"] for m in merged] == ["a"] * 20 + ["b"] * 10
  assert merged[0] == {"experiment": "a", "images_per_s": 100.0, "loss": 5.0, "lr": 3e-4,
                       "run": "student[mask(0.9)]", "step": 1}
