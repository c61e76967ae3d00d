"""The metrics log: one JSON line per logged training step, resumable, and its TensorBoard view.

    with MetricsLog(f"{workdir}/metrics.jsonl", resume_step=start) as log:
      log.write(step=step, run="student[mask(0.9)]", loss=loss, lr=lr, images_per_s=speed)
    rows = read_metrics(f"{workdir}/metrics.jsonl")

Beside a local metrics.jsonl the same log writes a TensorBoard event file
(`events.out.tfevents.*`, tensorboardX's writer: no TensorFlow), so `tensorboard --logdir runs/`
shows each training as a run named by its directory (`demo/mask90`,
`demo/mask90/baseline_0.1`) and each numeric field as the tag `<run field>/<field>`
(`student[mask(0.9)]/loss`).
"""

import json
import math
import os
import time

from absl import logging
from etils import epath
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary

from rrjax import errors
from rrjax.io import files
from rrjax.parallel import multiprocess


class MetricsLog:
  """Appends one JSON line per `write(step=..., **fields)` to a metrics.jsonl file.

  Opening it truncates the log to the lines with `step <= resume_step` (none for a fresh run,
  `resume_step=0`): a run resumed from a checkpoint at step k has done steps 1..k, keeps their
  lines and rewrites steps > k instead of duplicating them. One file is one training's log
  (`merge_runs` gathers a run's). A local file is appended to, and a line cut short by a crash
  is dropped when read; a bucket object cannot be appended to, so it is rewritten whole at each
  line. On processes other than the leader it reads and writes nothing.

  A local log also writes each line's numeric fields to a TensorBoard event file in the same
  directory (`_EventFile`), where the resumed steps replace the old ones in the same way. A
  bucket gets no event file: metrics.jsonl there holds every value.
  """

  def __init__(self, path: str | os.PathLike, resume_step: int = 0):
    self.path = os.fspath(path)
    self._file = self._lines = self._events = None
    if not multiprocess.is_leader():
      return
    kept = [line + "\n" for line, row in _metrics_lines(self.path)
            if row.get("step", math.inf) <= resume_step]
    files.atomic_write(self.path, "".join(kept))
    if files.is_local(self.path):
      self._file = open(self.path, "a", encoding="utf-8")
      self._events = _EventFile(os.path.dirname(os.path.abspath(self.path)), resume_step)
    else:
      self._lines = kept
      logging.log_first_n(logging.INFO, "No TensorBoard events for %s: they are written only "
                          "beside a local metrics.jsonl, which holds the same values", 1,
                          self.path)

  def write(self, step: int, **fields) -> None:
    """Appends `{"step": step, **fields}` and flushes it to the OS (the event file to disk)."""
    row = files.to_python({"step": step, **fields})
    line = json.dumps(row, allow_nan=False) + "\n"
    if self._file is not None:
      self._file.write(line)
      self._file.flush()
      self._events.write(row)
    elif self._lines is not None:
      self._lines.append(line)
      files.atomic_write(self.path, "".join(self._lines))

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._events.close()

  def __enter__(self) -> "MetricsLog":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class _EventFile:
  """A TensorBoard event file of scalars: one event per metrics line, tags `<run>/<field>`.

  Every field that is a number becomes a scalar: not a bool, nor a string or a list, nor a
  non-finite float (`files.to_python` has made those None). The run field, a string, prefixes
  the tags, which become TensorBoard's tag groups; tags are written as given, without the
  TensorFlow op-name cleaning that would turn `student[mask(0.9)]` into `student_mask_0.9__`.

  Resumption: the file starts with a SessionLog START event at `resume_step + 1`, what
  tensorboardX's `SummaryWriter(purge_step=resume_step + 1)` writes, so TensorBoard drops the
  steps after `resume_step` of the earlier files in the directory and shows the rerun ones: the
  lines metrics.jsonl keeps. The events go through tensorboardX's synchronous `EventsWriter`,
  not `SummaryWriter`, whose writer thread may not have written an event yet when its `flush()`
  returns: here a line is on disk (fsynced) when `write` returns, so `kill -9` loses none.
  """

  def __init__(self, directory: str, resume_step: int):
    # EventsWriter names the file by the second it opened it (and the host); two files opened in
    # the same second would share a name, and the later would truncate the earlier. The
    # nanosecond suffix keeps them apart and sorts them by age, the order TensorBoard reads them.
    self._writer = EventsWriter(os.path.join(directory, "events"), f".{time.time_ns()}")
    self._writer.write_event(Event(step=resume_step + 1, wall_time=time.time(),
                                   session_log=SessionLog(status=SessionLog.START)))
    self._writer.flush()

  def write(self, row: dict) -> None:
    run = row.get("run")
    prefix = f"{run}/" if isinstance(run, str) else ""
    values = [Summary.Value(tag=prefix + name, simple_value=value)
              for name, value in row.items()
              if name not in ("step", "run") and isinstance(value, (int, float))
              and not isinstance(value, bool)]
    if values:
      self._writer.write_event(Event(step=row["step"], wall_time=time.time(),
                                     summary=Summary(value=values)))
      self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def _metrics_lines(path: str) -> list[tuple[str, dict]]:
  """(line, parsed row) for each line of a metrics file; [] when there is none.

  A last line without its newline that does not parse is a write cut short by a crash and is
  skipped; a bad line anywhere else is corruption and raises UserError.
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
      raise errors.UserError(f"{path}:{i + 1}: not a JSON line: {line[:80]!r}; the workdir's "
                             "metrics are damaged: use a fresh --workdir") from e
  return out


def read_metrics(path: str | os.PathLike) -> list[dict]:
  """The rows of a metrics.jsonl file in file order; [] when the file does not exist."""
  return [row for _, row in _metrics_lines(os.fspath(path))]


def merge_runs(workdir: str | os.PathLike, names: list[str]) -> int:
  """Writes `<workdir>/metrics.jsonl`: every line of each experiment's trainings, tagged with
  `experiment`; returns the number of lines.

  An experiment's lines are in `<workdir>/<name>/metrics.jsonl` (the student),
  `<workdir>/<name>/*/metrics.jsonl` (its baselines) and `<workdir>/<name>/*/*/metrics.jsonl`
  (a baseline per learning rate, `baseline.select`): three fixed levels, no recursive glob,
  which buckets do not support.
  """
  lines = []
  for name in names:
    rundir = epath.Path(workdir, name)
    found = [*rundir.glob("metrics.jsonl"), *rundir.glob("*/metrics.jsonl"),
             *rundir.glob("*/*/metrics.jsonl")]
    for path in sorted(str(p) for p in found):
      for row in read_metrics(path):
        lines.append(json.dumps(dict(row, experiment=name), sort_keys=True))
  files.atomic_write(os.path.join(workdir, "metrics.jsonl"), "".join(l + "\n" for l in lines))
  return len(lines)


def write_accuracy_events(workdir: str | os.PathLike, rows) -> str | None:
  """TensorBoard scalars of a run's results rows, in `<workdir>/accuracy/` (the run
  `<workdir>/accuracy` in `tensorboard --logdir`): per experiment, eval corruption and method,
  the top-1 (mean over draws and seeds) against the label fraction in percent as the step (1, 10,
  100: Figure 3 of the paper as a TensorBoard chart); tag `<experiment>/<eval corruption>/
  <method>[ on <dataset>]`, the dataset named when it is not the training one. Returns the
  directory, or None where nothing is written (a bucket, another process than the leader).
  Each call's file replaces the earlier ones' points (`_EventFile`'s purge from step 1)."""
  if not multiprocess.is_leader() or not files.is_local(workdir):
    return None
  directory = os.path.join(os.fspath(workdir), "accuracy")
  os.makedirs(directory, exist_ok=True)
  events = _EventFile(directory, resume_step=0)
  datasets = [r["dataset"] for r in rows]
  first = datasets[0] if datasets else None
  by_step = {}
  for r in rows:
    tag = f"{r['experiment']}/{r['eval_corruption']}/{r['method']}"
    if r["dataset"] != first:
      tag += f" on {r['dataset']}"
    step = max(1, round(100 * r["label_fraction"]))
    by_step.setdefault(step, {})[tag] = r["top1_mean"]
  for step in sorted(by_step):
    events.write(files.to_python({"step": step, **by_step[step]}))
  events.close()
  return directory
