"""Tests for the ResNet family: shapes, the .npz weights helper, torchvision state dicts.

Only ResNet-18 at 32 px is ever run; the larger models are checked through `jax.eval_shape`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import traverse_util

from rrjax import errors, models
from rrjax.models import resnet, weights_io
from rrjax.training import baseline

RES = 32
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
POOLED = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672,
                      "resnet50": 25_557_032, "resnet101": 44_549_160}


def _module(name, **kwargs):
  stage_sizes, block = resnet._ARCHS[name]
  return resnet.ResNet(stage_sizes, block, **kwargs)


def _shapes(module, images_shape, train=False):
  """(variable shapes, output shape) without running anything."""
  images = jax.ShapeDtypeStruct(images_shape, jnp.float32)
  variables = jax.eval_shape(lambda k, x: module.init(k, x, train=False), jax.random.key(0),
                             images)
  out = jax.eval_shape(lambda v, x: module.apply(v, x, train=train,
                                                 mutable=["batch_stats"] if train else False),
                       variables, images)
  return variables, out


def _zeros_like(shapes):
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


@pytest.fixture(scope="module")
def r18():
  return resnet._build("resnet18", pretrained=False, head="embed", weights=None, resolution=RES)


@pytest.fixture(scope="module")
def images():
  return jax.random.uniform(jax.random.key(1), (2, RES, RES, 3))


@pytest.mark.parametrize("name", ARCHS)
def test_output_shapes(name):
  _, out = _shapes(_module(name, resolution=64), (2, 64, 64, 3))
  assert out.shape == (2, POOLED[name]) and out.dtype == jnp.float32
  _, out = _shapes(_module(name, resolution=64, embed_dim=96), (2, 64, 64, 3))
  assert out.shape == (2, 96)
  _, out = _shapes(_module(name, resolution=64, head="logits", num_classes=10), (2, 64, 64, 3))
  assert out.shape == (2, 10)


@pytest.mark.parametrize("name", ARCHS)
def test_parameter_count_matches_torchvision(name):
  variables, _ = _shapes(_module(name, head="logits"), (1, 224, 224, 3))
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
  assert count == TORCHVISION_PARAMS[name]


def test_stage_layout_and_names():
  variables, _ = _shapes(_module("resnet50", resolution=64), (1, 64, 64, 3))
  params = variables["params"]
  assert sorted(k for k in params if k.startswith("layer3_")) == sorted(
      f"layer3_{i}" for i in range(6))
  # Projection shortcut only at the first block of a stage; stride on the 3x3 (v1.5).
  assert "downsample_conv" in params["layer2_0"] and "downsample_conv" not in params["layer2_1"]
  assert params["layer2_0"]["conv2"]["kernel"].shape == (3, 3, 128, 128)
  assert params["layer4_2"]["conv3"]["kernel"].shape == (1, 1, 512, 2048)
  assert params["conv1"]["kernel"].shape == (7, 7, 3, 64)


def test_bf16_compute_keeps_float32_params_and_output():
  variables, out = _shapes(_module("resnet18", resolution=RES, dtype=jnp.bfloat16),
                           (2, RES, RES, 3))
  assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert out.dtype == jnp.float32


def test_eval_needs_no_mutable_and_train_updates_batch_stats(r18, images):
  module, variables = r18
  out = module.apply(variables, images, train=False)
  assert out.shape == (2, 512) and np.all(np.isfinite(np.asarray(out)))
  out_train, updates = module.apply(variables, images, train=True, mutable=["batch_stats"])
  assert out_train.shape == (2, 512)
  # Batch statistics differ from the initial running ones, so the output does too.
  assert not np.allclose(np.asarray(out_train), np.asarray(out))
  old, new = variables["batch_stats"], updates["batch_stats"]
  assert jax.tree.structure(old) == jax.tree.structure(new)
  stem_mean = np.asarray(new["bn1"]["mean"])
  assert np.any(stem_mean != 0) and np.allclose(np.asarray(old["bn1"]["mean"]), 0)
  # momentum 0.9: the running variance moves 10% of the way from 1 to the batch variance.
  stem_var = np.asarray(new["bn1"]["var"])
  assert np.all(stem_var > 0.9 - 1e-6) and np.any(stem_var != 1)


@pytest.mark.parametrize("size", [28, 40])
def test_any_input_resolution(r18, size):
  module, variables = r18
  images = jax.random.uniform(jax.random.key(size), (2, size, size, 3))
  out = module.apply(variables, images)
  assert out.shape == (2, 512) and np.all(np.isfinite(np.asarray(out)))


def test_grey_input_is_repeated_rgb(r18, images):
  module, variables = r18
  grey = images[..., :1]
  np.testing.assert_allclose(np.asarray(module.apply(variables, grey)),
                             np.asarray(module.apply(variables, jnp.repeat(grey, 3, -1))),
                             rtol=1e-6, atol=1e-6)


def test_npz_round_trip(r18, images, tmp_path):
  module, variables = r18
  path = tmp_path / "r18.npz"
  weights_io.save_npz(path, variables)
  loaded_module, loaded = resnet._build("resnet18", pretrained=True, head="embed",
                                        weights=str(path), resolution=RES)
  assert jax.tree.structure(loaded) == jax.tree.structure(variables)
  np.testing.assert_array_equal(np.asarray(loaded_module.apply(loaded, images)),
                                np.asarray(module.apply(variables, images)))


def test_wrong_architecture_weights_raise(tmp_path):
  path = tmp_path / "r34.npz"
  r34, _ = _shapes(_module("resnet34", resolution=RES), (1, RES, RES, 3))
  weights_io.save_npz(path, _zeros_like(r34))
  with pytest.raises(ValueError, match="unexpected variable 'batch_stats/layer1_2/bn1/mean'"):
    resnet._build("resnet18", pretrained=True, head="embed", weights=str(path), resolution=RES)


def test_wrong_shape_weights_raise(tmp_path):
  # Same tree as resnet18 except the embedding width.
  path = tmp_path / "r18_wide.npz"
  wide, _ = _shapes(_module("resnet18", resolution=RES, embed_dim=64), (1, RES, RES, 3))
  weights_io.save_npz(path, _zeros_like(wide))
  with pytest.raises(ValueError, match=r"'params/embed/bias' has shape \(64,\).*\(512,\)"):
    resnet._build("resnet18", pretrained=False, head="embed", weights=str(path),
                  resolution=RES)


def test_missing_weights_raise(tmp_path):
  path = tmp_path / "truncated.npz"
  variables, _ = _shapes(_module("resnet18", resolution=RES), (1, RES, RES, 3))
  flat = weights_io.flatten(_zeros_like(variables))
  del flat["params/layer3_1/bn2/scale"]
  weights_io.save_npz(path, weights_io.unflatten(flat))
  with pytest.raises(ValueError, match="missing variable 'params/layer3_1/bn2/scale'"):
    resnet._build("resnet18", pretrained=True, head="embed", weights=str(path), resolution=RES)


def test_bad_options_raise(images):
  with pytest.raises(ValueError, match="'widht'.*resolution"):
    resnet._build("resnet18", pretrained=False, head="embed", weights=None, widht=2)
  module = _module("resnet18", resolution=RES, head="pooled")
  with pytest.raises(ValueError, match="'pooled'"):
    module.init(jax.random.key(0), images)


def test_registry():
  pytest.importorskip("rrjax.models.efficientnet")  # the registry imports every family
  from rrjax import models
  assert models.info("resnet50").embed_dim == 2048
  assert models.info("resnet18").embed_dim == 512
  assert models.info("resnet101").native_resolution == 224
  assert not models.info("resnet34").has_pretrained
  with pytest.raises(ValueError, match="no published weights"):
    models.load("resnet18")
  module, variables = models.load("resnet18", pretrained=False, head="logits", resolution=RES,
                                  num_classes=7, seed=3)
  assert module.apply(variables, jnp.zeros((1, RES, RES, 3))).shape == (1, 7)


def _as_torchvision_state_dict(variables) -> dict:
  """Flax variables of `head="logits"` back in torchvision's names and layouts."""
  out = {}
  for path, value in traverse_util.flatten_dict(variables).items():
    value = np.asarray(value)
    if path[-1] == "kernel":
      value = np.transpose(value, (3, 2, 0, 1) if value.ndim == 4 else (1, 0))
    out[resnet._torch_key(path)] = value
  return out


def test_torchvision_state_dict_maps_onto_every_variable():
  module, variables = models.load("resnet18", pretrained=False, head="logits", seed=3)
  state = _as_torchvision_state_dict(variables)
  assert {"conv1.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var",
          "layer4.1.bn2.bias", "fc.weight"} <= set(state)
  state["bn1.num_batches_tracked"] = np.array(7)  # Ignored, as torchvision writes it.
  converted = resnet.from_torch_state_dict(state, "resnet18")
  jax.tree.map(np.testing.assert_array_equal, converted, jax.device_get(variables))
  del state["layer3.1.conv2.weight"]
  with pytest.raises(errors.UserError, match=r"missing tensor 'layer3\.1\.conv2\.weight'"):
    resnet.from_torch_state_dict(state, "resnet18")
  with pytest.raises(errors.UserError, match="another architecture"):
    resnet.from_torch_state_dict(_as_torchvision_state_dict(variables), "resnet34")


def test_a_classifiers_backbone_is_its_pooled_features():
  module, variables = models.load("resnet18", pretrained=False, head="logits", num_classes=4)
  images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  features = baseline.backbone(module).apply(variables, images)
  assert features.shape == (2, 512)
  fc = variables["params"]["fc"]
  np.testing.assert_allclose(np.asarray(features) @ fc["kernel"] + fc["bias"],
                             module.apply(variables, images), rtol=1e-4, atol=1e-4)
