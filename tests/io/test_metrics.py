"""rrjax.io.metrics: the metrics.jsonl log, resumable; its TensorBoard events; a run's logs
merged per experiment."""

import json
import os

import numpy as np
import pytest
# TensorBoard's own reader, not the writer's code: what `tensorboard --logdir` would show.
from tensorboard.backend.event_processing import event_accumulator

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


def _tensorboard_scalars(directory) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} as TensorBoard reads the event files of `directory`."""
  events = event_accumulator.EventAccumulator(str(directory))
  events.Reload()
  scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)]
             for tag in events.Tags()["scalars"]}
  return {tag: points for tag, points in scalars.items() if points}  # Purged tags are empty.


def test_metrics_log_writes_tensorboard_scalars_beside_the_jsonl(tmp_path):
  with metrics.MetricsLog(tmp_path / "metrics.jsonl") as log:
    log.write(step=10, run="student[mask(0.9)]", loss=np.float32(2.5), lr=0.25,
              images_per_s=np.int64(100))
    # On disk as soon as it is written: an interrupted run loses nothing.
    assert _tensorboard_scalars(tmp_path)["student[mask(0.9)]/loss"] == [(10, 2.5)]
    # Only numbers: not a string, a bool, a list or a non-finite float.
    log.write(step=20, run="student[mask(0.9)]", val_top1=37.5, loss=float("nan"),
              note="text", best=True, shape=[1, 2])
    log.write(step=30, loss=1.0)  # No run field: the bare field name.
    log.write(step=40, run="student[mask(0.9)]", note="nothing numeric")
  assert _tensorboard_scalars(tmp_path) == {
      "student[mask(0.9)]/loss": [(10, 2.5)],
      "student[mask(0.9)]/lr": [(10, 0.25)],
      "student[mask(0.9)]/images_per_s": [(10, 100.0)],
      "student[mask(0.9)]/val_top1": [(20, 37.5)],
      "loss": [(30, 1.0)],
  }
  # One event file, beside metrics.jsonl, named so that `tensorboard --logdir` finds it.
  assert sorted(n.split(".")[:3] for n in os.listdir(tmp_path)) == [
      ["events", "out", "tfevents"], ["metrics", "jsonl"]]


def test_tensorboard_shows_the_resumed_steps_as_metrics_jsonl_does(tmp_path):
  path = tmp_path / "metrics.jsonl"
  with metrics.MetricsLog(path) as log:
    for step in range(10, 60, 10):
      log.write(step=step, run="student", loss=float(step))
  # Resumed from the checkpoint at 30 (within the same second: the second file must not
  # replace the first): 40 and 50 are rerun, and TensorBoard shows only the rerun 40.
  with metrics.MetricsLog(path, resume_step=30) as log:
    log.write(step=40, run="student", loss=0.5)
  curve = [(m["step"], m["loss"]) for m in metrics.read_metrics(path)]
  assert curve == [(10, 10.0), (20, 20.0), (30, 30.0), (40, 0.5)]
  assert _tensorboard_scalars(tmp_path) == {"student/loss": curve}

  metrics.MetricsLog(path).close()  # A fresh run: an empty log, an empty TensorBoard run.
  assert _tensorboard_scalars(tmp_path) == {}


def test_a_bucket_log_writes_no_event_file(tmp_path, monkeypatch):
  monkeypatch.setattr(metrics.files, "is_local", lambda path: False)
  with metrics.MetricsLog(tmp_path / "metrics.jsonl") as log:  # Rewritten whole, as a bucket.
    log.write(step=1, loss=1.0)
  assert os.listdir(tmp_path) == ["metrics.jsonl"]
  assert metrics.read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 1.0}]


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


def test_the_runs_accuracies_are_tensorboard_scalars_by_label_fraction(tmp_path):
  row = lambda method, fraction, top1, dataset="fmnist": {
      "experiment": "mask90", "eval_corruption": "mask(0.9)", "method": method,
      "dataset": dataset, "label_fraction": fraction, "top1_mean": top1}
  rows = [row("ours", 0.01, 49.5), row("ours", 1.0, 67.25), row("baseline", 0.1, 61.0),
          row("ours", 1.0, 30.0, dataset="digits"), row("baseline", 1.0, float("nan"))]
  directory = metrics.write_accuracy_events(tmp_path, rows)
  assert directory == str(tmp_path / "accuracy")
  # A rewrite (a resumed run's new results) replaces the earlier points.
  metrics.write_accuracy_events(tmp_path, rows)
  assert _tensorboard_scalars(tmp_path / "accuracy") == {
      "mask90/mask(0.9)/ours": [(1, 49.5), (100, 67.25)],
      "mask90/mask(0.9)/baseline": [(10, 61.0)],
      "mask90/mask(0.9)/ours on digits": [(100, 30.0)]}
