"""Atomic files and strict JSON: how every output of a run reaches the disk or a bucket.

    files.write_json(f"{workdir}/results.json", {"rows": rows})
    files.atomic_write(f"{workdir}/report.md", text)

Every file is written atomically (temp file in the same directory, fsync, rename; on a bucket
such as `gs://`, one upload, which appears whole or not at all), so neither a concurrent reader
nor a crash, `kill -9` included, sees a half-written output. In a multi-process run only JAX
process 0 writes (`rrjax.parallel.multiprocess.is_leader`): on the others the writers return
without writing, so callers need no test of their own. Paths are local paths or URLs that
`etils.epath` opens (`gs://...`).
"""

import json
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath

from rrjax.parallel import multiprocess


def is_local(path: str | os.PathLike) -> bool:
  """Whether `path` is on a local (or mounted) file system, not a URL such as `gs://b/x`."""
  return "://" not in os.fspath(path)


def atomic_write(path: str | os.PathLike, data: str | bytes, *,
                 every_process: bool = False) -> None:
  """Replaces `path` with `data` (str as UTF-8) so that readers see the old or the new file.

  Locally the data goes to a temp file in the same directory (same file system, so the rename
  is atomic), is fsynced, then renamed over `path`; on any error the temp file is removed and
  the old file is left as it was. A bucket has no atomic rename, but an object is replaced only
  once its upload completes, so it is written in place. Parent directories are created. Only
  the leader process writes (module docstring), unless `every_process` (local paths only: a
  copy on each host's own disk, or the same bytes renamed into place by each process of a
  shared one).
  """
  if not (multiprocess.is_leader() or (every_process and is_local(path))):
    return
  if isinstance(data, str):
    data = data.encode("utf-8")
  if not is_local(path):
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      # mkstemp creates the file 0600; outputs are meant to be read by others.
      os.fchmod(f.fileno(), 0o644)
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  # Persist the rename itself, or a power loss could bring back the old directory entry.
  dir_fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(dir_fd)
  finally:
    os.close(dir_fd)


def to_python(obj: Any) -> Any:
  """`obj` with numpy/JAX scalars and arrays as Python values, tuples as lists, paths as str.

  Non-finite floats become None, so the JSON is strict (readable by any parser).

  Raises:
    TypeError: for a value JSON cannot represent.
  """
  if isinstance(obj, Mapping):
    return {to_python(k): to_python(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_python(v) for v in obj]
  if obj is None or isinstance(obj, (str, bool, int)):
    return obj
  if isinstance(obj, float):  # np.float64 included
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  if isinstance(obj, np.generic) or hasattr(obj, "__array__"):
    return to_python(np.asarray(obj).tolist())
  raise TypeError(f"cannot write a {type(obj).__name__} as JSON: {obj!r}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` atomically as indented JSON with sorted keys (see `to_python`)."""
  text = json.dumps(to_python(obj), indent=2, sort_keys=True, allow_nan=False)
  atomic_write(path, text + "\n")
