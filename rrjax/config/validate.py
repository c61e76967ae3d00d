"""Checks a run's config before any compute; every error names the field and the value.

    rrjax.config.validate.validate(config)   # UserError("config.train.lr: must be a number > 0,
                                             #            got -1")

The config's own values are checked first (so a bad command-line value is refused as such),
then the command-line overrides against the experiments (`experiments.check_overrides`), then
every experiment with its overrides applied.
"""

import numbers
import re

import jax

from rrjax import corruptions, errors, losses, models
from rrjax.config import experiments

STAGES = ("train", "probe", "baseline", "transfer")


def validate(config, overrides=()) -> None:
  """Raises UserError naming the first invalid field of `config` or of one of its experiments.

  Args:
    config: the run's ConfigDict.
    overrides: the dotted paths given on the command line (`--config.<path>=...`), checked by
      `experiments.check_overrides`.
  """
  _validate_one(config)
  if config.get("seeds"):
    for name in config.experiments:
      if "seed" in config.experiments[name] or "seeds" in config.experiments[name]:
        raise errors.UserError(f"config.experiments.{name}: an experiment of a seed sweep "
                               "(config.seeds) cannot set its own seed or seeds")
    if "seed" in overrides:
      raise errors.UserError("config.seed: a seed sweep (config.seeds) sets each run's seed; "
                             "pass --config.seeds instead")
  experiments.check_overrides(config, overrides)
  for name, sub in experiments.expand(config):
    if sub is config:
      continue
    try:
      _validate_one(sub)
    except errors.UserError as e:
      raise _in_experiment(e, name, config.experiments[name]) from None


def _in_experiment(error: errors.UserError, name: str, entry) -> errors.UserError:
  """`error` of experiment `name`'s config, naming the field where the experiment sets it."""
  message = str(error)
  for path, _ in experiments.leaves(entry):
    field = f"config.{path}"
    if message.startswith(field) and message[len(field):len(field) + 1] in (":", "["):
      return errors.UserError(f"config.experiments.{name}.{message[len('config.'):]}")
  return errors.UserError(f"experiment {name}: {message}")


def _validate_one(c) -> None:
  _int(c, "seed", 0)
  seeds = c.get("seeds", ())
  if (isinstance(seeds, (str, bytes)) or not all(isinstance(s, int) and not isinstance(s, bool)
                                                and s >= 0 for s in seeds)
      or len(set(seeds)) != len(seeds) or len(seeds) == 1):
    raise errors.UserError("config.seeds: must be () or at least two distinct integers >= 0, "
                           f"got {seeds!r}")
  _encoder(c, "teacher.name")
  if c.student.name:
    _encoder(c, "student.name")
  _int(c, "data.image_size", 0)
  _int(c, "data.num_workers", -1)
  _int(c, "data.cache_mb", 0)
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
    raise errors.UserError("config.eval.corruptions: must be a non-empty list of specs, got "
                           f"{specs!r}")
  for i, spec in enumerate(specs):
    if corruptions.host_ops.is_grid(spec):
      try:
        corruptions.host_ops.grid(spec)
      except ValueError as e:
        raise errors.UserError(f"config.eval.corruptions[{i}]: {e}") from None
    else:
      _spec(c, f"eval.corruptions[{i}]", spec)
  specs = corruptions.host_ops.expand(specs)  # The grid's specs, for the checks below.
  twice = sorted({s for s in specs if specs.count(s) > 1})
  if twice:
    raise errors.UserError(f"config.eval.corruptions: {twice[0]!r} is evaluated twice (listed "
                           "twice, or also part of an imagenet_c grid)")
  _int(c, "eval.draws", 1)
  _int(c, "eval.batch_size", 1)
  # Optional sections (rrjax/config/schema.py documents them); a config without them skips them.
  for flag in ("restored", "zeroshot"):
    if flag in c.eval and not isinstance(c.eval[flag], bool):
      raise errors.UserError(f"config.eval.{flag}: must be True or False, got {c.eval[flag]!r}")
  if c.eval.get("restored", False):
    from rrjax.evaluation import restoration  # pylint: disable=import-outside-toplevel
    for i, spec in enumerate(specs):  # i: in the list with any imagenet_c grid expanded.
      if not restoration.restorable(corruptions.build(spec)):
        raise errors.UserError(f"config.eval.corruptions[{i}]: {spec!r} has no classical "
                               "restoration for config.eval.restored (mask, noise, blur and "
                               "their compositions have)")
  if c.eval.get("zeroshot", False):
    _zeroshot_teacher(c)
  if c.eval.get("data") and c.eval.data.name:
    _str(c, "eval.data.split")
  for name in (c.get("transfer") or {}):
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
      raise errors.UserError(f"config.transfer.{name}: name rows by letters, digits, '_' and '-'")
    for field in ("name", "train_split", "val_split", "test_split"):
      _str(c, f"transfer.{name}.{field}")
    if not isinstance(c.transfer[name].get("data_dir"), str):
      raise errors.UserError(f"config.transfer.{name}.data_dir: must be a string ('' for TFDS's "
                             "default)")
    _int(c, f"transfer.{name}.image_size", 0)
  fractions = list(c.probe.label_fractions)
  if not fractions:
    raise errors.UserError("config.probe.label_fractions: must not be empty")
  for f in fractions:
    if not isinstance(f, numbers.Real) or not 0 < f <= 1:
      raise errors.UserError(f"config.probe.label_fractions: {f!r} not in (0, 1]")
  if len(set(map(float, fractions))) < len(fractions):
    raise errors.UserError(f"config.probe.label_fractions: {tuple(fractions)} names a fraction "
                           "twice")
  _positive(c, "probe.lr")
  _int(c, "probe.epochs", 1)
  _int(c, "probe.batch_size", 1)
  _int(c, "probe.min_steps", 0)
  _positive(c, "baseline.lr")
  _int(c, "baseline.batch_size", 1)
  _int(c, "baseline.max_steps", 0)
  _int(c, "baseline.epochs", 1)
  _int(c, "baseline.checkpoint_every", 0)
  encoder = c.baseline.get("encoder")
  if encoder is not None:
    if encoder.name:
      _encoder(c, "baseline.encoder.name")
    if not isinstance(encoder.weights, str):
      raise errors.UserError(f"config.baseline.encoder.weights: must be a string, got "
                             f"{encoder.weights!r}")
    _int(c, "baseline.encoder.resolution", 0)
  if "select" in c.baseline:
    if not isinstance(c.baseline.select, bool):
      raise errors.UserError(f"config.baseline.select: must be True or False, got "
                             f"{c.baseline.select!r}")
    grid = c.baseline.lr_grid
    if isinstance(grid, (str, bytes)) or not all(
        isinstance(lr, numbers.Real) and not isinstance(lr, bool) and lr > 0 for lr in grid):
      raise errors.UserError(f"config.baseline.lr_grid: must be a list of numbers > 0, got "
                             f"{grid!r}")
    _int(c, "baseline.val_points", 1)
  unknown = [s for s in c.stages if s not in STAGES]
  if unknown:
    raise errors.UserError(f"config.stages: unknown stage {unknown[0]!r}; allowed: "
                           f"{', '.join(STAGES)}")
  if not isinstance(c.mesh.data, int) or c.mesh.data == 0 or c.mesh.data < -1:
    raise errors.UserError("config.mesh.data: must be -1 (all devices) or >= 1, got "
                           f"{c.mesh.data!r}")
  visible = jax.device_count()
  if c.mesh.data > visible:
    raise errors.UserError(f"config.mesh.data: {c.mesh.data} devices, but only {visible} are "
                           "visible")
  if jax.process_count() > 1 and c.mesh.data not in (-1, visible):
    raise errors.UserError(f"config.mesh.data: {c.mesh.data} devices, but a run of "
                           f"{jax.process_count()} processes needs all {visible} in the mesh "
                           "(-1 says all): a smaller mesh may hold only some processes' "
                           "devices, and their batch slices would be dropped")
  devices = visible if c.mesh.data == -1 else c.mesh.data
  # Each device takes an equal slice of a global training batch (`sharding.check_batch_size`
  # again, where the batches are made); checked here too, before hours of earlier stages.
  for path in ("train.batch_size", "baseline.batch_size"):
    if _get(c, path) % devices:
      raise errors.UserError(f"config.{path}: {_get(c, path)} is not divisible by the {devices} "
                       "devices of the mesh (config.mesh.data)")


def _get(c, path):
  node = c
  for part in path.split("."):
    if part not in node:
      raise errors.UserError(f"config.{path}: missing")
    node = node[part]
  return node


def _name(c, path, allowed):
  value = _get(c, path)
  if value not in allowed:
    raise errors.UserError(f"config.{path}: {value!r} not one of {', '.join(map(str, allowed))}")


def _encoder(c, path):
  """An encoder's name: a registered one, or a hub name (`rrjax.models.hub`), parsed here."""
  value = _get(c, path)
  if not models.is_hub_name(value):
    _name(c, path, models.names())
    return
  try:
    models.info(value)
  except errors.UserError as e:
    raise errors.UserError(f"config.{path}: {e}") from None


def _str(c, path):
  value = _get(c, path)
  if not isinstance(value, str) or not value:
    raise errors.UserError(f"config.{path}: must be a non-empty string, got {value!r}")


def _int(c, path, minimum):
  value = _get(c, path)
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise errors.UserError(f"config.{path}: must be an integer >= {minimum}, got {value!r}")


def _positive(c, path):
  value = _get(c, path)
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
    raise errors.UserError(f"config.{path}: must be a number > 0, got {value!r}")


def _spec(c, path, spec):
  try:
    corruptions.build(spec)
  except corruptions.SpecError as e:
    raise errors.UserError(f"config.{path}: {e}") from None


def _zeroshot_teacher(c):
  """`eval.zeroshot` needs the text tower of the teacher's own CLIP checkpoint."""
  if c.teacher.name not in models.WITH_TEXT_TOWER:
    raise errors.UserError(f"config.eval.zeroshot needs a CLIP teacher with a text tower "
                           f"({', '.join(models.WITH_TEXT_TOWER)}); teacher.name is "
                           f"{c.teacher.name!r}")
  if c.teacher.weights == "random":
    raise errors.UserError("config.eval.zeroshot needs the teacher's CLIP checkpoint (its text "
                           "tower); teacher.weights is 'random'")
