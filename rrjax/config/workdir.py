"""The workdir guard: a workdir belongs to one config, and a rerun resumes in it.

    rrjax.config.workdir.claim_workdir(config, workdir)   # writes <workdir>/config.json

A workdir's checkpoints, metrics and results are its config's, and a rerun resumes from them.
`claim_workdir` refuses a workdir whose outputs came from a config that differs in a field
other than `RERUN_MAY_CHANGE`. A workdir is a local path or a bucket URL (`gs://...`, through
`etils.epath`).
"""

import fnmatch
import hashlib
import json
import uuid

import jax
from absl import logging
from etils import epath

from rrjax import errors
from rrjax.io import files
from rrjax.parallel import multiprocess

CONFIG_FILE = "config.json"
# Fields a rerun in the same workdir may change: none alters a number a run computes. How often
# to log and checkpoint is bookkeeping; `stages` (an experiment's own too) and `only` choose which
# stages and experiments run, and each of those computes the same whether the others run or
# not. Everything else is refused, `eval.batch_size` and `mesh.data` included: the eval
# corruption draws depend on the batch size and the device count. `*` stands for any name.
RERUN_MAY_CHANGE = ("train.log_every", "train.checkpoint_every", "baseline.log_every",
                    "baseline.checkpoint_every", "stages", "experiments.*.stages", "only")
_PROBE_PREFIX = ".rrjax-write-probe-"


def claim_workdir(config, workdir: str) -> None:
  """Makes `workdir` this config's: checks it is writable and holds no other config's run.

  Creates `workdir`, then writes `<workdir>/config.json` (the config as JSON). The config a
  workdir's outputs came from is its config.json, else (runs older than config.json) the
  config in its results.json. A workdir holding outputs of a config that differs in a field
  not in `RERUN_MAY_CHANGE` is refused, and nothing in it is changed; one holding nothing but
  config.json (an earlier start that failed before computing anything) is taken over.

  In a multi-process run every process checks (all must see the same workdir) and all raise the
  same error, the first process's to find one; only the leader writes config.json, after every
  process has checked.

  Raises:
    rrjax.errors.UserError: naming the workdir, and for another config the first differing
      field with both values.
  """
  current = files.to_python(config.to_dict())
  multiprocess.agreed(lambda: _check_workdir(epath.Path(workdir), current))
  _check_shared(epath.Path(workdir))
  files.write_json(epath.Path(workdir) / CONFIG_FILE, current)


def check_same_config(config) -> None:
  """In a multi-process run, raises the same UserError in every process unless all were given
  process 0's config (compared by a hash of its JSON), on a fresh workdir as on a used one.
  The first collective of a run (`rrjax.run.train_and_evaluate`): before it, no process may
  branch on its config."""
  if jax.process_count() == 1:
    return
  current = files.to_python(config.to_dict())
  digest = hashlib.sha256(json.dumps(current, sort_keys=True).encode()).hexdigest()
  mine = int(digest[:7], 16)  # 28 bits: `leaders` broadcasts int32s.
  problem = None
  if multiprocess.leaders(mine) != mine:
    problem = (f"process {jax.process_index()} was given another config than process 0 (config "
               f"hash {digest[:7]}): start every process with the same command and flags")
  message = multiprocess.first_error(problem)
  if message is not None:
    raise errors.UserError(message)


def _check_shared(workdir: epath.Path) -> None:
  """In a multi-process run, raises the same UserError in every process unless all see the
  leader's workdir: process 0 writes a file named by a nonce it broadcasts, and every other
  process must find it (a host-local path or a stale network view would not)."""
  if jax.process_count() == 1:
    return
  nonce = multiprocess.leaders(uuid.uuid4().int >> 97)
  marker = workdir / f"{_PROBE_PREFIX}shared-{nonce}"
  # Each step that may fail in one process only passes its failure to the next collective,
  # which every process reaches whatever happened.
  problem = None
  if multiprocess.is_leader():
    try:
      marker.write_bytes(b"")
    except Exception as e:  # pylint: disable=broad-except  # gcsfs raises more than OSError.
      problem = f"workdir {workdir}: cannot write there ({errors.one_line(str(e), 160)})"
  message = multiprocess.first_error(problem)  # Also: every process waits for the write.
  if message is None:
    try:
      seen = marker.exists()
    except Exception as e:  # pylint: disable=broad-except
      seen, problem = False, errors.one_line(f"{type(e).__name__}: {e}", 160)
    if not seen:
      problem = (f"workdir {workdir}: process {jax.process_index()} does not see what "
                 "process 0 writes there" + (f" ({problem})" if problem else "") + "; every "
                 "process must see the same --workdir (a shared file system or a bucket, "
                 "gs://...)")
    message = multiprocess.first_error(problem)
  if multiprocess.is_leader():
    try:
      marker.unlink(missing_ok=True)
    except Exception as e:  # pylint: disable=broad-except  # A leftover marker is bookkeeping.
      logging.warning("workdir %s: cannot remove %s (%s)", workdir, marker.name, e)
  if message is not None:
    raise errors.UserError(message)


def _check_workdir(workdir: epath.Path, current: dict) -> None:
  """Raises UserError unless `workdir` (created if missing) is writable and free for `current`."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    # Creating the directory can succeed where writing into it fails (a read-only mount, an
    # existing directory of another user), so a file is written too; a name of its own for
    # each process that checks at the same time.
    probe = workdir / f"{_PROBE_PREFIX}{uuid.uuid4().hex}"
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as e:
    raise errors.UserError(f"workdir {workdir}: cannot write there ({e.strerror or e}); pass a "
                           "writable directory as --workdir") from e
  stored, source = _stored_config(workdir)
  if stored is not None and _has_outputs(workdir):
    difference = _first_difference(stored, current, "")
    if difference:
      field, before, now = difference
      raise errors.UserError(
          f"workdir {workdir} holds a run of a different config ({source}): config.{field} "
          f"was {before}, now {now}. Use a fresh --workdir, so that the two runs' checkpoints "
          f"and results do not mix (fields a rerun may change: {', '.join(RERUN_MAY_CHANGE)})")


def finished(config, workdir: str) -> bool:
  """Whether `workdir` holds the results.json of a finished run of `config`: a seed of a sweep
  that need not run again. Its config may differ in the fields of `RERUN_MAY_CHANGE` but those
  that choose what runs (`only`, `stages`), whose results would lack rows."""
  path = epath.Path(workdir) / "results.json"
  if not path.exists():
    return False
  stored = json.loads(path.read_text(encoding="utf-8")).get("config")
  current = files.to_python(config.to_dict())
  return (isinstance(stored, dict) and _first_difference(stored, current, "") is None
          and all(stored.get(k) == current.get(k) for k in ("only", "stages", "experiments")))


def _stored_config(workdir: epath.Path) -> tuple[dict | None, str]:
  """The config of the run in `workdir` and the file it came from; `(None, "")` if none."""
  for name, key in ((CONFIG_FILE, None), ("results.json", "config")):
    path = workdir / name
    if not path.exists():
      continue
    try:
      stored = json.loads(path.read_text(encoding="utf-8"))
      return (stored if key is None else stored[key]), str(path)
    except (ValueError, KeyError, TypeError) as e:
      raise errors.UserError(f"workdir {workdir}: cannot read the config of its run from {path} "
                             f"({type(e).__name__}: {e}); use a fresh --workdir") from e
  return None, ""


def _has_outputs(workdir: epath.Path) -> bool:
  """Whether `workdir` holds any file but its own bookkeeping (checkpoints, metrics, results).

  Bookkeeping: config.json, the temp file of a config.json write cut short by a crash, and the
  write probes of other processes checking the workdir at the same moment.
  """
  def bookkeeping(name):
    return name == CONFIG_FILE or name.startswith((f".{CONFIG_FILE}.", _PROBE_PREFIX))

  for directory, _, names in workdir.walk():
    if any(directory != workdir or not bookkeeping(n) for n in names):
      return True
  return False


def _may_change(path: str) -> bool:
  return any(fnmatch.fnmatchcase(path, pattern) for pattern in RERUN_MAY_CHANGE)


def _first_difference(stored, current, path: str) -> tuple[str, str, str] | None:
  """`(field, stored value, current value)` of the first field (sorted) that differs."""
  if _may_change(path):
    return None
  if isinstance(stored, dict) and isinstance(current, dict):
    for key in sorted(set(stored) | set(current)):
      sub = f"{path}.{key}" if path else key
      if _may_change(sub):
        continue  # Set, changed or removed.
      if key not in stored or key not in current:
        return (sub, json.dumps(stored[key]) if key in stored else "absent",
                json.dumps(current[key]) if key in current else "absent")
      difference = _first_difference(stored[key], current[key], sub)
      if difference:
        return difference
    return None
  if isinstance(stored, list) and isinstance(current, list) and len(stored) == len(current):
    for i, (a, b) in enumerate(zip(stored, current)):
      difference = _first_difference(a, b, f"{path}[{i}]")
      if difference:
        return difference
    return None
  if stored != current:
    return path, json.dumps(stored), json.dumps(current)
  return None
