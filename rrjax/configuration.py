"""Checks a run's config before any compute; every error names the field.

    rrjax.configuration.validate(config)   # ValueError("config.train.lr: must be > 0, got -1")
"""

import numbers

from rrjax import corruptions, losses, models

STAGES = ("train", "probe", "baseline", "evaluate")


def validate(config) -> None:
  """Raises ValueError naming the first invalid field of `config` (and of each experiment)."""
  from rrjax import experiment  # Sub-runs are validated with their overrides applied.
  for _, sub in experiment.expand(config):
    _validate_one(sub)


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
