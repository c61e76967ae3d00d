"""EfficientNet-Lite0: the packaged ImageNet weights classify real photos; loading is strict."""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import models
from rrjax.models import efficientnet, torch_reader

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def state_dict():
  return torch_reader.read(efficientnet.default_weights_path())


@pytest.mark.parametrize("image,label", [("chelsea", 285), ("coffee", 967)])
def test_pretrained_classifies_imagenet_photos(image, label):
  module, variables = models.load("efficientnet_lite0", pretrained=True, head="logits")
  # The whole photo, batch 1, float [0, 1]; the module resizes it to 224 x 224 itself.
  pixels = getattr(skimage_data, image)().astype(np.float32)[None] / 255.0
  probs = jax.nn.softmax(jax.jit(module.apply)(variables, pixels))[0]
  top1 = int(jnp.argmax(probs))
  print(f"{image}: top-1 class {top1}, probability {float(probs[top1]):.3f}")
  assert top1 == label
  assert probs[label] > 0.5


def test_embed_head_and_small_grey_inputs():
  module, variables = models.load("efficientnet_lite0", pretrained=True, head="embed",
                                  resolution=64)
  assert module.embed_dim == models.info("efficientnet_lite0").embed_dim == 1280
  assert "fc" not in variables["params"]
  grey = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
  emb = jax.jit(module.apply)(variables, grey)
  assert emb.shape == (3, 1280) and emb.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(emb)))


def test_train_mode_updates_batch_stats():
  # A random initialisation, which also covers the builder's pretrained=False path.
  module, variables = models.load("efficientnet_lite0", pretrained=False, head="embed",
                                  resolution=32)
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  _, updates = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, images)
  old, new = variables["batch_stats"]["bn0"]["mean"], updates["batch_stats"]["bn0"]["mean"]
  assert new.shape == old.shape and not np.allclose(new, old)


def test_new_classifier_for_other_num_classes():
  module, variables = models.load("efficientnet_lite0", pretrained=True, head="logits",
                                  num_classes=10)
  assert variables["params"]["fc"]["kernel"].shape == (1280, 10)
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(jnp.shape, variables)


def test_converted_state_dict_fills_every_variable(state_dict):
  variables = efficientnet.from_torch_state_dict(state_dict)
  module = efficientnet.EfficientNetLite0(head="logits")
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(np.shape, variables)
  # The depthwise weight (C, 1, k, k) lands as (k, k, 1, C) with the taps in place.
  torch_dw = state_dict["_blocks.1._depthwise_conv.weight"]
  np.testing.assert_array_equal(variables["params"]["blocks_1"]["depthwise_conv"]["kernel"],
                                torch_dw.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["batch_stats"]["blocks_1"]["bn1"]["var"],
                                state_dict["_blocks.1._bn1.running_var"])


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("_blocks.4._bn1.running_var"), "missing tensor '_blocks.4._bn1.running_var'"),
    (lambda s: s.update({"_blocks.4._se_reduce.weight": s.pop("_blocks.4._project_conv.weight")}),
     "missing tensor '_blocks.4._project_conv.weight'"),
    (lambda s: s.update({"_blocks.16._bn1.bias": np.zeros(3, np.float32)}),
     "unexpected tensor '_blocks.16._bn1.bias'"),
    (lambda s: s.update({"_conv_head.weight": np.zeros((1280, 192, 1, 1), np.float32)}),
     "tensor '_conv_head.weight' has shape"),
], ids=["missing", "renamed", "extra", "wrong-shape"])
def test_wrong_architecture_is_refused_by_name(state_dict, edit, message):
  edited = dict(state_dict)
  edit(edited)
  with pytest.raises(ValueError, match=message):
    efficientnet.from_torch_state_dict(edited)


class _Evil:
  """Unpickling this runs a shell command, as `pickle.load` or `torch.load` would."""

  def __init__(self, cmd):
    self.cmd = cmd

  def __reduce__(self):
    return os.system, (self.cmd,)


def test_malicious_weights_are_refused_without_running_them(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.pth"
  path.write_bytes(pickle.dumps(_Evil(f"touch {marker}")))
  with pytest.raises(ValueError) as info:
    models.load("efficientnet_lite0", weights=str(path), resolution=32)
  assert type(info.value).__name__ == "UnsafeWeightsError"
  assert str(info.value) == (f"{path}: refusing to load weights: the file asks to call "
                             f"'{os.system.__module__}.system'; only tensors are allowed")
  assert not marker.exists()
