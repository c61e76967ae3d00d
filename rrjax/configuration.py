"""Checks a run's config and its workdir before any compute; every error names the field.

    rrjax.configuration.validate(config)   # ValueError("config.train.lr: must be > 0, got -1")
    rrjax.configuration.claim_workdir(config, workdir)   # writes <workdir>/config.json

A workdir belongs to one config: its checkpoints, metrics and results are that config's, and a
rerun resumes from them. `claim_workdir` refuses a workdir whose outputs came from a config that
differs in a field other than `RERUN_MAY_CHANGE`. A workdir is a local path or a bucket URL
(`gs://...`, through `etils.epath`).
"""

import json
import numbers
import re
import uuid

import jax
from etils import epath

from rrjax import corruptions, distributed, errors, losses, models, report

STAGES = ("train", "probe", "baseline", "evaluate")
CONFIG_FILE = "config.json"
# Fields a rerun in the same workdir may change: none alters a number a run computes. How often
# to log and checkpoint is bookkeeping; `stages` and `only` choose which stages and experiments
# run, and each of those computes the same whether the others run or not. Everything else is
# refused, `eval.batch_size` and `mesh.data` included: the eval corruption draws depend on the
# batch size and the device count.
RERUN_MAY_CHANGE = ("train.log_every", "train.checkpoint_every", "baseline.log_every", "stages",
                    "only")
_PROBE_PREFIX = ".rrjax-write-probe-"


def validate(config) -> None:
  """Raises ValueError naming the first invalid field of `config` (and of each experiment)."""
  from rrjax import experiment  # Sub-runs are validated with their overrides applied.
  for _, sub in experiment.expand(config):
    _validate_one(sub)


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
  current = report.to_python(config.to_dict())
  try:
    _check_workdir(epath.Path(workdir), current)
    error = None
  except errors.UserError as e:
    error = e
  agreed = distributed.first_error(None if error is None else str(error))
  if agreed is not None:
    raise error if error is not None and str(error) == agreed else errors.UserError(agreed)
  report.write_json(epath.Path(workdir) / CONFIG_FILE, current)


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

  for directory, _, files in workdir.walk():
    if any(directory != workdir or not bookkeeping(f) for f in files):
      return True
  return False


def _first_difference(stored, current, path: str) -> tuple[str, str, str] | None:
  """`(field, stored value, current value)` of the first field (sorted) that differs."""
  if path in RERUN_MAY_CHANGE:
    return None
  if isinstance(stored, dict) and isinstance(current, dict):
    for key in sorted(set(stored) | set(current)):
      sub = f"{path}.{key}" if path else key
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


def _validate_one(c) -> None:
  _name(c, "teacher.name", models.names())
  if c.student.name:
    _name(c, "student.name", models.names())
  _int(c, "data.image_size", 0)
  _str(c, "data.name")
  for split in ("train_split", "val_split", "test_split"):
    _str(c, f"data.{split}")
  _spec(c, "train.corruption", c.train.corruption)
  _name(c, "train.loss", losses.names())
  _positive(c, "train.temperature")
  _positive(c, "train.lr")
  _name(c, "train.optimizer", ("adam", "sgd"))
  _name(c, "train.schedule", ("constant", "cosine"))
  _name(c, "train.teacher", ("step", "cache"))
  if "compute_dtype" in c.train:
    _name(c, "train.compute_dtype", models.COMPUTE_DTYPES)
  _int(c, "train.batch_size", 1)
  _int(c, "train.steps", 0)
  _int(c, "train.log_every", 1)
  _int(c, "train.checkpoint_every", 0)
  specs = c.eval.corruptions
  if isinstance(specs, str) or not list(specs):
    raise ValueError(f"config.eval.corruptions: must be a non-empty list of specs, got {specs!r}")
  for i, spec in enumerate(specs):
    _spec(c, f"eval.corruptions[{i}]", spec)
  _int(c, "eval.draws", 1)
  _int(c, "eval.batch_size", 1)
  # Optional sections (configs/common.py documents them); a config without them skips them.
  for flag in ("restored", "zeroshot"):
    if flag in c.eval and not isinstance(c.eval[flag], bool):
      raise ValueError(f"config.eval.{flag}: must be True or False, got {c.eval[flag]!r}")
  if c.eval.get("data") and c.eval.data.name:
    _str(c, "eval.data.split")
  for name in (c.get("transfer") or {}):
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
      raise ValueError(f"config.transfer.{name}: name rows by letters, digits, '_' and '-'")
    for field in ("name", "train_split", "val_split", "test_split"):
      _str(c, f"transfer.{name}.{field}")
    if not isinstance(c.transfer[name].get("data_dir"), str):
      raise ValueError(f"config.transfer.{name}.data_dir: must be a string ('' for TFDS's "
                       "default)")
    _int(c, f"transfer.{name}.image_size", 0)
  fractions = list(c.probe.label_fractions)
  if not fractions:
    raise ValueError("config.probe.label_fractions: must not be empty")
  for f in fractions:
    if not isinstance(f, numbers.Real) or not 0 < f <= 1:
      raise ValueError(f"config.probe.label_fractions: {f!r} not in (0, 1]")
  _positive(c, "probe.lr")
  _int(c, "probe.epochs", 1)
  _int(c, "probe.batch_size", 1)
  _int(c, "probe.feature_draws", 1)
  _int(c, "probe.min_steps", 0)
  _positive(c, "baseline.lr")
  _int(c, "baseline.batch_size", 1)
  _int(c, "baseline.max_steps", 0)
  unknown = [s for s in c.stages if s not in STAGES]
  if unknown:
    raise ValueError(f"config.stages: unknown stage {unknown[0]!r}; allowed: {', '.join(STAGES)}")
  if not isinstance(c.mesh.data, int) or c.mesh.data == 0 or c.mesh.data < -1:
    raise ValueError(f"config.mesh.data: must be -1 (all devices) or >= 1, got {c.mesh.data!r}")
  visible = jax.device_count()
  if c.mesh.data > visible:
    raise ValueError(f"config.mesh.data: {c.mesh.data} devices, but only {visible} are visible")
  devices = visible if c.mesh.data == -1 else c.mesh.data
  # Each device takes an equal slice of a global training batch (`sharding.check_batch_size`
  # again, where the batches are made); checked here too, before hours of earlier stages.
  for path in ("train.batch_size", "baseline.batch_size"):
    if _get(c, path) % devices:
      raise ValueError(f"config.{path}: {_get(c, path)} is not divisible by the {devices} "
                       "devices of the mesh (config.mesh.data)")


def _get(c, path):
  node = c
  for part in path.split("."):
    if part not in node:
      raise ValueError(f"config.{path}: missing")
    node = node[part]
  return node


def _name(c, path, allowed):
  value = _get(c, path)
  if value not in allowed:
    raise ValueError(f"config.{path}: {value!r} not one of {', '.join(map(str, allowed))}")


def _str(c, path):
  value = _get(c, path)
  if not isinstance(value, str) or not value:
    raise ValueError(f"config.{path}: must be a non-empty string, got {value!r}")


def _int(c, path, minimum):
  value = _get(c, path)
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"config.{path}: must be an integer >= {minimum}, got {value!r}")


def _positive(c, path):
  value = _get(c, path)
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
    raise ValueError(f"config.{path}: must be a number > 0, got {value!r}")


def _spec(c, path, spec):
  try:
    corruptions.build(spec)
  except (ValueError, TypeError) as e:
    raise ValueError(f"config.{path}: {e}") from None
