"""rrjax.config.experiments: sub-runs in order, `config.only`, and command-line overrides that
an experiment would replace."""

import ml_collections
import pytest

from rrjax import errors
from rrjax.config import experiments, schema
from tests import helpers


def _two():
  c = schema.base()
  c.experiments.noise05 = schema.experiment("noise(0.5)")
  c.experiments.mask90 = schema.experiment("mask(0.9)", extra={"train.loss": "mse"})
  return c


def test_expand_sets_each_experiments_fields_in_config_order():
  c = _two()
  runs = experiments.expand(c)
  assert [n for n, _ in runs] == ["noise05", "mask90"]  # As written, not sorted.
  noise, mask = (r for _, r in runs)
  assert (noise.train.corruption, noise.train.loss, noise.baseline.epochs) == (
      "noise(0.5)", "st", 50)
  assert (mask.train.corruption, mask.train.loss, mask.eval.corruptions) == (
      "mask(0.9)", "mse", ("mask(0.9)",))
  assert not noise.experiments and c.train.corruption == "mask(0.9)"  # The base is untouched.


def test_only_chooses_experiments_and_names_unknown_ones():
  c = _two()
  c.only = "mask90"
  assert [n for n, _ in experiments.expand(c)] == ["mask90"]
  c.only = "mask90,nope"
  with pytest.raises(errors.UserError, match="config.only: no experiment named 'nope'; names: "
                     "noise05, mask90"):
    experiments.expand(c)


def test_config_without_experiments_is_one_run_named_by_its_corruption():
  c = schema.base()
  c.train.corruption = "mask(0.5,0.95)"
  assert [(n, r is c) for n, r in experiments.expand(c)] == [("mask_0.5_0.95", True)]


def test_unknown_field_and_bad_name_are_named():
  c = schema.base()
  c.experiments.x = {"train": {"nope": 1}}
  with pytest.raises(errors.UserError, match=r"config\.experiments\.x\.train\.nope: config has "
                     "no field 'train.nope'"):
    experiments.expand(c)
  c = schema.base()
  c.experiments["a b"] = schema.experiment("mask(0.5)")
  with pytest.raises(errors.UserError, match="name experiments by letters"):
    experiments.expand(c)


def test_override_of_a_field_no_experiment_sets_reaches_every_one():
  c = _two()
  c.probe.lr = 0.01
  experiments.check_overrides(c, ["probe.lr"])
  assert {r.probe.lr for _, r in experiments.expand(c)} == {0.01}


def _refusal(config, path: str) -> str:
  with pytest.raises(errors.UserError) as info:
    experiments.check_overrides(config, [path])
  return str(info.value)


def test_override_an_experiment_would_replace_is_refused_naming_the_flag_to_use():
  c = helpers.load_config("mask90", "smoke")
  c.train.corruption = "noise(0.3)"
  assert _refusal(c, "train.corruption") == (
      "'--config.train.corruption=noise(0.3)' would not reach every experiment: experiment "
      "mask90 sets train.corruption itself; override it there: "
      "'--config.experiments.mask90.train.corruption=noise(0.3)'")
  # Its own path takes effect.
  c.train.corruption = "mask(0.9)"
  c.experiments.mask90.train.corruption = "noise(0.3)"
  experiments.check_overrides(c, ["experiments.mask90.train.corruption"])
  ((_, run),) = experiments.expand(c)
  assert run.train.corruption == "noise(0.3)"


def test_override_refusal_lists_every_experiment_that_sets_the_field():
  c = _two()
  c.train.corruption = "blur(5,1)"
  assert _refusal(c, "train.corruption") == (
      "'--config.train.corruption=blur(5,1)' would not reach every experiment: experiments "
      "noise05, mask90 set train.corruption themselves; override it in each: "
      "'--config.experiments.noise05.train.corruption=blur(5,1)' "
      "'--config.experiments.mask90.train.corruption=blur(5,1)'")
  # Only the chosen experiments count.
  c.only = "noise05"
  assert "experiment noise05 sets train.corruption itself" in _refusal(c, "train.corruption")


def test_override_of_a_parent_or_child_of_an_experiments_field_is_refused():
  c = _two()
  c.experiments.mask90.probe = {"label_fractions": (1.0,)}
  c.probe = ml_collections.ConfigDict(dict(c.probe.to_dict(), lr=0.5))
  with pytest.raises(errors.UserError, match=r"experiment mask90 sets probe\.label_fractions"):
    experiments.check_overrides(c, ["probe"])
  c = _two()
  c.experiments.mask90.transfer = {}
  c.transfer.x = schema.transfer_dataset("cifar10", "train", "train[:2%]", "test")
  with pytest.raises(errors.UserError, match="experiment mask90 sets transfer itself"):
    experiments.check_overrides(c, ["transfer.x.name"])


def test_leaves_are_the_dotted_fields_an_experiment_sets():
  entry = schema.experiment("mask(0.5)", ("mask(0.5)", "mask(0.9)"),
                            {"train.loss": "ss", "transfer": {}})
  leaves = dict(experiments.leaves(entry))
  assert sorted(leaves) == ["baseline.epochs", "eval.corruptions", "train.corruption",
                            "train.loss", "transfer"]
  assert (leaves["train.loss"], leaves["eval.corruptions"]) == ("ss", ("mask(0.5)", "mask(0.9)"))
  assert not leaves["transfer"]  # An empty section is a value: it replaces the config's.


def test_override_of_an_experiment_that_does_not_run_is_refused():
  c = _two()
  c.only = "noise05"
  c.experiments.mask90.train.corruption = "noise(0.3)"
  assert _refusal(c, "experiments.mask90.train.corruption") == (
      "'--config.experiments.mask90.train.corruption=noise(0.3)' would not reach any "
      "experiment that runs: config.only chooses noise05")
  experiments.check_overrides(c, ["experiments.noise05.train.corruption"])
