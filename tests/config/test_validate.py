"""rrjax.config.validate: every field checked before any compute, named with its value."""

import types

import jax
import numpy as np
import pytest

from rrjax import models
from rrjax.config import validate
from rrjax.corruptions import host_ops
from rrjax.parallel import sharding
from tests import helpers


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return helpers.make_folder(tmp_path_factory.mktemp("images"))


_FORMS = helpers.ALLOWED_FORMS


@pytest.mark.parametrize("overrides,message", [
    # Fields the experiment "mask" sets are named by their path there.
    ({"train.corruption": "mask(1.3)"},
     "config.experiments.mask.train.corruption: bad corruption spec part 'mask(1.3)': mask "
     f"fraction 1.3 not in [0, 1]; {_FORMS}"),
    ({"eval.corruptions": ("mask(0.5)", "blur(4,1)")},
     "config.experiments.mask.eval.corruptions[1]: bad corruption spec part 'blur(4,1)': blur "
     f"kernel size 4 not an odd integer >= 1; {_FORMS}"),
    ({"train.corruption": "foo(1)"},
     "config.experiments.mask.train.corruption: bad corruption spec part 'foo(1)': unknown "
     "operator 'foo'; known: mask, noise, blur, identity, down, box, poisson, motion, jpeg, "
     f"oneof, {', '.join(host_ops.OPERATORS)}; {_FORMS}"),
    # ImageNet-C grids: checked as written (not as the 75 specs they stand for).
    ({"eval.corruptions": ("imagenet_c(0)",)},
     "config.experiments.mask.eval.corruptions[0]: 'imagenet_c(0)': the severity s of "
     "imagenet_c(s) is one of 1..5"),
    ({"eval.corruptions": ("mask(0.5)", "imagenet_c(x)")},
     "config.experiments.mask.eval.corruptions[1]: 'imagenet_c(x)': the severity s of "
     "imagenet_c(s) is one of 1..5"),
    ({"eval.corruptions": ("imagenet_c", "fog(3)")},
     "config.experiments.mask.eval.corruptions: 'fog(3)' is evaluated twice (listed twice, or "
     "also part of an imagenet_c grid)"),
    ({"probe.label_fractions": (0.0, 1.0)}, "config.probe.label_fractions: 0.0 not in (0, 1]"),
    ({"probe.label_fractions": (1.5,)}, "config.probe.label_fractions: 1.5 not in (0, 1]"),
    ({"probe.label_fractions": (0.1, 1, 0.1)},
     "config.probe.label_fractions: (0.1, 1, 0.1) names a fraction twice"),
    ({"train.lr": -1.0}, "config.train.lr: must be a number > 0, got -1.0"),
    ({"seed": -1}, "config.seed: must be an integer >= 0, got -1"),
    ({"eval.draws": 0}, "config.eval.draws: must be an integer >= 1, got 0"),
    ({"stages": ("train", "fly")},
     "config.stages: unknown stage 'fly'; allowed: train, probe, baseline, transfer"),
    ({"only": "nope"}, "config.only: no experiment named 'nope'; names: mask"),
    ({"mesh.data": 2}, "config.mesh.data: 2 devices, but only 1 are visible"),
    ({"eval.restored": True, "eval.corruptions": ("mask(0.5)", "jpeg(50)")},
     "config.experiments.mask.eval.corruptions[1]: 'jpeg(50)' has no classical restoration for "
     "config.eval.restored (mask, noise, blur and their compositions have)"),
    ({"train.compute_dtype": "float16"},
     "config.train.compute_dtype: 'float16' not one of float32, bfloat16"),
])
def test_bad_config_field_is_named_with_the_allowed_values(folder, overrides, message):
  with pytest.raises(ValueError) as info:
    validate.validate(helpers.tiny_config(folder, **overrides))
  assert str(info.value) == message


def test_unknown_teacher_lists_the_known_encoders(folder):
  with pytest.raises(ValueError) as info:
    validate.validate(helpers.tiny_config(folder, teacher__name="vgg16"))
  assert str(info.value) == f"config.teacher.name: 'vgg16' not one of {', '.join(models.names())}"


def test_batch_not_divisible_by_the_devices_is_refused_before_compute(folder, monkeypatch):
  mesh = types.SimpleNamespace(devices=np.empty((8,), object))  # All check_batch_size reads.
  with pytest.raises(ValueError) as info:
    sharding.check_batch_size(12, mesh, "train.batch_size")
  assert str(info.value) == "train.batch_size=12 is not divisible by the 8 devices of the mesh"
  monkeypatch.setattr(jax, "device_count", lambda: 8)
  with pytest.raises(ValueError) as info:
    validate.validate(helpers.tiny_config(folder, train__batch_size=12))
  assert str(info.value) == ("config.train.batch_size: 12 is not divisible by the 8 devices of "
                             "the mesh (config.mesh.data)")
  validate.validate(helpers.tiny_config(folder, train__batch_size=16))


def test_a_multi_process_run_needs_every_device_in_the_mesh(folder, monkeypatch):
  # Two processes of 4 devices each: a mesh of the first 4 would hold only process 0's.
  monkeypatch.setattr(jax, "device_count", lambda: 8)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(ValueError) as info:
    validate.validate(helpers.tiny_config(folder, mesh__data=4))
  assert str(info.value) == (
      "config.mesh.data: 4 devices, but a run of 2 processes needs all 8 in the mesh (-1 says "
      "all): a smaller mesh may hold only some processes' devices, and their batch slices "
      "would be dropped")
  validate.validate(helpers.tiny_config(folder, mesh__data=8))
  validate.validate(helpers.tiny_config(folder, mesh__data=-1))


def test_the_data_axis_lists_devices_process_by_process():
  device = lambda p: types.SimpleNamespace(process_index=p)
  sharding.check_process_order([device(0), device(0), device(1), device(1)])
  with pytest.raises(ValueError,
                     match=r"interleave processes along the data axis \(\[0, 1, 0, 1\]\)"):
    sharding.check_process_order([device(0), device(1), device(0), device(1)])
  with pytest.raises(ValueError, match="interleave"):
    sharding.check_process_order([device(1), device(0)])


@pytest.mark.parametrize("path,value,match", [
    ("train.lr", -1.0, r"config\.train\.lr"),
    ("train.loss", "l2", r"config\.train\.loss"),
    ("train.corruption", "mask(1.3)", r"config\.train\.corruption.*mask fraction"),
    ("teacher.name", "vgg", r"config\.teacher\.name"),
    ("train.batch_size", 0, r"config\.train\.batch_size"),
    ("eval.draws", 0, r"config\.eval\.draws"),
    ("probe.label_fractions", (0.0, 1.0), r"config\.probe\.label_fractions"),
    ("probe.label_fractions", (1.5,), r"config\.probe\.label_fractions"),
    ("stages", ("train", "fly"), r"config\.stages"),
    ("train.teacher", "sometimes", r"config\.train\.teacher"),
    ("seeds", (0,), r"config\.seeds: must be \(\) or at least two distinct"),
    ("seeds", (1, 1), r"config\.seeds"),
    ("seeds", (0, -2), r"config\.seeds"),
    ("baseline.lr_grid", (1e-3, 0.0), r"config\.baseline\.lr_grid: must be a list of numbers"),
    ("baseline.encoder.name", "vgg", r"config\.baseline\.encoder\.name: 'vgg' not one of"),
])
def test_invalid_config_fails_before_compute_naming_the_field(path, value, match):
  c = helpers.load_config("demo")
  c.experiments = {}
  *sections, leaf = path.split(".")
  node = c
  for section in sections:
    node = node[section]
  node[leaf] = value
  with pytest.raises(ValueError, match=match):
    validate.validate(c)


def test_invalid_experiment_field_is_named_by_its_path_there():
  c = helpers.load_config("demo")
  c.only = ""
  c.experiments = {"x": {"eval": {"corruptions": ("blur(4,1)",)}}}
  with pytest.raises(ValueError, match=r"^config\.experiments\.x\.eval\.corruptions\[0\].*odd"):
    validate.validate(c)
  c.experiments = {"x": {"train": {"nope": 1}}}
  with pytest.raises(ValueError, match=r"^config\.experiments\.x\.train\.nope: config has no "
                     r"field 'train\.nope'"):
    validate.validate(c)
  c.experiments = {"x": {"train": {"batch_size": 0}}}
  with pytest.raises(ValueError, match=r"^config\.experiments\.x\.train\.batch_size: must be"):
    validate.validate(c)


def test_base_value_is_checked_even_where_every_experiment_sets_it():
  """A bad value given for the config itself is refused, not hidden by the experiments."""
  c = helpers.load_config("mask90", "smoke")
  c.train.corruption = "mask(1.5)"
  with pytest.raises(ValueError, match=r"^config\.train\.corruption: .*mask fraction 1\.5"):
    validate.validate(c)


def test_a_field_an_experiment_does_not_set_is_checked_there_too(folder, monkeypatch):
  """An experiment's own combination of fields is named with the experiment."""
  monkeypatch.setattr(jax, "device_count", lambda: 8)
  c = helpers.tiny_config(folder)
  c.experiments.mask.baseline = {"batch_size": 8}
  c.baseline.batch_size = 12
  with pytest.raises(ValueError, match=r"^config\.baseline\.batch_size: 12 is not divisible"):
    validate.validate(c)
  c.baseline.batch_size = 8
  c.experiments.mask.baseline.batch_size = 12
  with pytest.raises(ValueError, match=r"^config\.experiments\.mask\.baseline\.batch_size: 12"):
    validate.validate(c)


def test_zeroshot_needs_a_clip_teacher_before_any_compute(folder):
  c = helpers.tiny_config(folder, eval__zeroshot=True)
  with pytest.raises(ValueError, match="eval.zeroshot needs a CLIP teacher.*'tiny_cnn'"):
    validate.validate(c)


def test_a_seed_sweep_sets_every_runs_seed():
  c = helpers.load_config("demo", "seeds")
  validate.validate(c)
  c.experiments.noise05.seed = 3
  with pytest.raises(ValueError, match=r"config\.experiments\.noise05: an experiment of a seed "
                     r"sweep \(config\.seeds\) cannot set its own seed"):
    validate.validate(c)
  del c.experiments.noise05["seed"]
  with pytest.raises(ValueError, match=r"config\.seed: a seed sweep"):
    validate.validate(c, overrides=("seed",))
