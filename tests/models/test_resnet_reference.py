"""The Flax ResNet-101 against timm's PyTorch `resnet101` (make test-reference).

timm's `resnet101` has torchvision's layout and names (`conv1`, `layer3.22.downsample.1`, `fc`),
so its state dict stands in for torchvision's ImageNet checkpoint, the paper's baseline: a
random one is saved with `torch.save`, read back by rrjax's torch-free reader into
`rrjax.models.resnet` (`weights=<.pth>`), and both run on the same normalised pixels.
torchvision itself does not import beside the CPU torch wheel, and timm imports it at import
time for helpers these tests never call, so torchvision is stubbed while timm loads.
"""

import importlib.abc
import importlib.util
import importlib.machinery
import sys
from unittest import mock

import jax
import numpy as np
import pytest

from rrjax import models
from rrjax.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

pytestmark = pytest.mark.reference
torch = pytest.importorskip("torch")


class _StubTorchvision(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Any `torchvision[.*]` import gives an inert module, only while timm is imported."""

  def find_spec(self, name, path, target=None):
    del path, target
    if name == "torchvision" or name.startswith("torchvision."):
      return importlib.machinery.ModuleSpec(name, self, is_package=True)
    return None

  def create_module(self, spec):
    module = mock.MagicMock(name=spec.name)
    module.__path__, module.__spec__ = [], spec
    return module

  def exec_module(self, module):
    del module


def _timm_resnet101():
  if importlib.util.find_spec("timm") is None:
    pytest.skip("timm is not installed (make test-reference installs it)")
  stub = _StubTorchvision()
  sys.meta_path.insert(0, stub)
  try:
    from timm.models.resnet import resnet101  # pylint: disable=g-import-not-at-top
  finally:
    sys.meta_path.remove(stub)
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
      del sys.modules[name]
  torch.manual_seed(0)
  net = resnet101(pretrained=False).eval()
  with torch.no_grad():  # Every BatchNorm matters (timm zero-initialises the last of a block).
    for m in net.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.1)
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
  return net


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  net = _timm_resnet101()
  path = tmp_path_factory.mktemp("weights") / "resnet101.pth"
  torch.save(net.state_dict(), path)
  images = np.random.default_rng(1).uniform(size=(2, 96, 96, 3)).astype(np.float32)
  normalised = (images - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
  x = torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    features = net.forward_head(net.forward_features(x), pre_logits=True).numpy()
    logits = net(x).numpy()
  return str(path), images, features, logits


def test_torchvision_layout_state_dict_gives_timms_logits_and_features(reference):
  path, images, features, logits = reference
  module, variables = models.load("resnet101", head="logits", weights=path, resolution=96)
  got = np.asarray(jax.jit(module.apply)(variables, images))
  print(f"logits: max abs diff {np.abs(got - logits).max():.2e} (up to {np.abs(logits).max():.2f})")
  np.testing.assert_allclose(got, logits, rtol=1e-3, atol=1e-3 * np.abs(logits).max())
  encoder, enc_vars = models.load("resnet101", head="embed", weights=path, resolution=96)
  got = np.asarray(jax.jit(encoder.apply)(enc_vars, images))
  assert got.shape == (2, 2048)
  np.testing.assert_allclose(got, features, rtol=1e-3, atol=1e-3 * np.abs(features).max())


def test_a_new_head_starts_at_zero_on_the_pretrained_backbone(reference):
  path, images, features, _ = reference
  module, variables = models.load("resnet101", head="logits", num_classes=10, weights=path,
                                  resolution=96)
  assert np.asarray(jax.jit(module.apply)(variables, images)).shape == (2, 10)
  assert not np.any(np.asarray(variables["params"]["fc"]["kernel"]))
  from rrjax.training import baseline  # pylint: disable=g-import-not-at-top
  backbone = baseline.backbone(module)
  got = np.asarray(jax.jit(backbone.apply)(variables, images))
  np.testing.assert_allclose(got, features, rtol=1e-3, atol=1e-3 * np.abs(features).max())
