"""The Flax CLIP ResNet tower against open_clip's PyTorch `ModifiedResNet` (make test-reference).

Random towers are saved the ways real checkpoints are (a `torch.save` state dict under
`visual.`; a TorchScript archive of a whole model, like OpenAI's `.pt` files), loaded through
rrjax's torch-free reader and converter, and run on the same normalised pixels.
"""

import importlib
import importlib.util
import sys
import types
from unittest import mock

import jax
import numpy as np
import pytest

import rrjax.models
from rrjax.models import clip_resnet
from rrjax.models.preprocess import CLIP_MEAN, CLIP_STD

pytestmark = pytest.mark.reference
torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")


def open_clip_module(name: str) -> types.ModuleType:
  """open_clip's submodule `name` ("modified_resnet", "model"), without `open_clip/__init__`.

  The package's `__init__` pulls in its whole training stack and torchvision, whose PyPI wheels
  are CUDA builds that fail to load beside a CPU-only torch. The modules used here need torch
  only, plus torchvision's `FrozenBatchNorm2d` for a freezing helper the tests never call:
  torchvision is stubbed while the files load, and nothing stays registered afterwards.
  """
  spec = importlib.util.find_spec("open_clip")
  if spec is None:
    pytest.skip("open_clip (pip package open_clip_torch) is not installed")
  package = types.ModuleType("open_clip")
  package.__path__ = list(spec.submodule_search_locations)
  misc = types.ModuleType("torchvision.ops.misc")
  misc.FrozenBatchNorm2d = None
  stubs = {"open_clip": package, "torchvision": types.ModuleType("torchvision"),
           "torchvision.ops": types.ModuleType("torchvision.ops"), "torchvision.ops.misc": misc}
  with mock.patch.dict(sys.modules, stubs):
    return importlib.import_module(f"open_clip.{name}")


def _random_tower(layers, output_dim, heads, image_size, width, seed=0):
  """An eval-mode open_clip tower whose BatchNorms all matter (CLIP zero-initialises bn3)."""
  torch.manual_seed(seed)
  tower = open_clip_module("modified_resnet").ModifiedResNet(layers, output_dim, heads, image_size, width).eval()
  with torch.no_grad():
    for m in tower.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.1)
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
  return tower


def _compare(tower, module, variables, size, batch=2):
  """Max abs difference of the two towers' embeddings on the same pixels."""
  images = np.random.default_rng(1).uniform(size=(batch, size, size, 3)).astype(np.float32)
  # rrjax normalises inside; torch gets the normalised tensor, NCHW.
  normalised = (images - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)
  with torch.no_grad():
    want = tower(torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy())).numpy()
  got = np.asarray(jax.jit(module.apply)(variables, images))
  assert got.shape == want.shape
  diff = float(np.abs(got - want).max())
  print(f"max abs diff {diff:.2e} (outputs up to {np.abs(want).max():.2f})")
  return diff, want


def test_tiny_state_dict_matches_open_clip(tmp_path):
  layers, width, embed_dim, heads = (2, 1, 2, 1), 16, 24, 4
  tower = _random_tower(layers, embed_dim, heads, 64, width)
  path = tmp_path / "tiny.pt"
  torch.save({f"visual.{k}": v for k, v in tower.state_dict().items()}, path)
  arch = clip_resnet.Arch("tiny", layers, width, embed_dim, heads)
  module, variables = clip_resnet.build(arch, pretrained=True, head="embed", weights=str(path),
                                        resolution=64)
  diff, _ = _compare(tower, module, variables, 64)
  assert diff < 1e-4

  # Another resolution: the positional embedding's grid is resized as torch's bicubic does.
  _, variables = clip_resnet.build(arch, pretrained=True, head="embed", weights=str(path),
                                   resolution=128)
  pos = tower.attnpool.positional_embedding.detach()
  grid = pos[1:].T.reshape(1, -1, 2, 2)
  want = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
  want = torch.cat([pos[:1], want.reshape(-1, 16).T]).numpy()
  got = np.asarray(variables["params"]["attnpool"]["positional_embedding"])
  np.testing.assert_allclose(got, want, atol=1e-6)


# Tracing warns about the shape checks inside `F.multi_head_attention_forward`; the shapes are
# fixed here, so the trace is exact.
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_rn50_torchscript_archive_matches_open_clip(tmp_path):
  tower = _random_tower((3, 4, 6, 3), 1024, 32, 224, 64)

  class Clip(torch.nn.Module):
    """A CLIP model as OpenAI's archives hold it: the tower as `visual`, plus text weights."""

    def __init__(self, visual):
      super().__init__()
      self.visual = visual
      self.token_embedding = torch.nn.Embedding(8, 4)
      self.logit_scale = torch.nn.Parameter(torch.ones([]))
      self.register_buffer("attn_mask", torch.ones(4, 4), persistent=False)

    def forward(self, image):
      return self.visual(image)

  path = tmp_path / "RN50.pt"
  with torch.no_grad():
    traced = torch.jit.trace(Clip(tower), torch.zeros(1, 3, 224, 224))
  torch.jit.save(traced, str(path))
  module, variables = rrjax.models.load("clip_rn50", weights=str(path))
  assert module.embed_dim == 1024 and module.resolution == 224
  diff, want = _compare(tower, module, variables, 224, batch=1)
  assert diff < 1e-4 * max(1.0, float(np.abs(want).max()))
