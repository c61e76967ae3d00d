"""rrjax.config.smoke: the one smoke mechanism every config uses."""

import pytest

from rrjax import errors
from rrjax.config import embedded, schema, smoke
from tests import helpers


def _suite():
  c = schema.base()
  for name, spec in (("a", "mask(0.5)"), ("b", "noise(0.3)"), ("c", "blur(21,5)")):
    c.experiments[name] = schema.experiment(spec, ("mask(0.5)", "mask(0.75)", "mask(0.9)"))
  c.probe.label_fractions = (0.01, 0.1, 1.0)
  c.transfer.x = schema.transfer_dataset("cifar10", "train", "train[:2%]", "test")
  c.transfer.y = schema.transfer_dataset("stl10", "train", "train[:2%]", "test")
  return c


def test_smoke_keeps_the_first_experiment_and_the_ends_of_each_grid(monkeypatch):
  monkeypatch.delenv(smoke.SMOKE_DATA_ENV, raising=False)
  c = smoke.smoke(_suite())
  assert list(c.experiments) == ["a"]
  assert c.experiments.a.eval.corruptions == ("mask(0.5)", "mask(0.9)")
  assert c.probe.label_fractions == (0.01, 1.0)
  assert (c.teacher.name, c.teacher.weights, c.teacher.resolution) == ("tiny_cnn", "random", 16)
  assert (c.data.name, c.data.image_size) == ("fashion_mnist_local", 40)
  # Its first transfer dataset, on the smoke data.
  assert list(c.transfer) == ["x"] and c.transfer.x.name == "fashion_mnist_local"
  assert (c.train.steps, c.eval.draws, c.baseline.max_steps) == (2, 2, 2)


def test_smoke_keeps_the_experiments_named_and_their_order():
  c = smoke.smoke(_suite(), keep=("c", "a"))
  assert list(c.experiments) == ["c", "a"]


def test_smoke_may_keep_the_configs_own_model():
  c = smoke.smoke(embedded.base(), keep_model=True)
  assert (c.teacher.name, c.teacher.weights, c.teacher.resolution) == (
      "efficientnet_lite0", "", 32)


def test_smoke_data_defaults_to_fashion_mnist_and_follows_the_environment(monkeypatch):
  monkeypatch.delenv(smoke.SMOKE_DATA_ENV, raising=False)
  assert helpers.load_config("mask90", "smoke").data.name == "fashion_mnist_local"
  monkeypatch.setenv(smoke.SMOKE_DATA_ENV, "imagefolder:/data/x")
  assert helpers.load_config("mask90", "smoke").data.name == "imagefolder:/data/x"
  assert helpers.load_config("demo", "smoke").data.name == "imagefolder:/data/x"


def test_variant_names_the_allowed_arguments():
  c = schema.paper_config("mask(0.9)", "mask90")
  assert smoke.variant(c, None, "mask90") is c
  with pytest.raises(errors.UserError, match="configs/x.py: unknown argument 'nope'; allowed: "
                     "smoke, validate"):
    smoke.variant(c, "nope", "x", others={"validate": lambda c: c})
