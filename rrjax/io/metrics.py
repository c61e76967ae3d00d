"""The metrics log: one JSON line per logged training step, resumable.

    with MetricsLog(f"{workdir}/metrics.jsonl", resume_step=start) as log:
      log.write(step=step, run="student[mask(0.9)]", loss=loss, lr=lr, images_per_s=speed)
    rows = read_metrics(f"{workdir}/metrics.jsonl")
"""

import json
import math
import os

from etils import epath

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
  """

  def __init__(self, path: str | os.PathLike, resume_step: int = 0):
    self.path = os.fspath(path)
    self._file = self._lines = None
    if not multiprocess.is_leader():
      return
    kept = [line + "\n" for line, row in _metrics_lines(self.path)
            if row.get("step", math.inf) <= resume_step]
    files.atomic_write(self.path, "".join(kept))
    if files.is_local(self.path):
      self._file = open(self.path, "a", encoding="utf-8")
    else:
      self._lines = kept

  def write(self, step: int, **fields) -> None:
    """Appends `{"step": step, **fields}` and flushes it to the OS."""
    row = {"step": step, **fields}
    line = json.dumps(files.to_python(row), allow_nan=False) + "\n"
    if self._file is not None:
      self._file.write(line)
      self._file.flush()
    elif self._lines is not None:
      self._lines.append(line)
      files.atomic_write(self.path, "".join(self._lines))

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
