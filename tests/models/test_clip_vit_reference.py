"""The CLIP tower against transformers' PyTorch `CLIPVisionModelWithProjection` (make test-reference).

A tiny random PyTorch tower is saved the way PyTorch users save it (safetensors, or a `.bin`
that Flax reads only with `from_pt=True`) and loaded through the rrjax registry.
"""

import jax
import numpy as np
import pytest

from rrjax import models
from rrjax.models import clip_vit
from rrjax.models.preprocess import CLIP_MEAN, CLIP_STD, prepare

pytestmark = pytest.mark.reference
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

RES = 32
VISION = dict(image_size=RES, patch_size=8, hidden_size=32, intermediate_size=64,
              num_hidden_layers=2, num_attention_heads=2, projection_dim=16)


@pytest.mark.parametrize("safe_serialization", [True, False], ids=["safetensors", "bin"])
def test_matches_pytorch(tmp_path, safe_serialization):
  torch.manual_seed(0)
  reference = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**VISION))
  # PyTorch's initialisation leaves the embedding weakly dependent on the image; 3x larger
  # weight matrices make it vary across images as much as its own size (~6).
  with torch.no_grad():
    for name, p in reference.named_parameters():
      if name.endswith("weight") and p.ndim > 1:
        p.mul_(3)
  reference.eval().save_pretrained(tmp_path, safe_serialization=safe_serialization)
  weights_file = "model.safetensors" if safe_serialization else "pytorch_model.bin"
  assert clip_vit.pytorch_weights_file(str(tmp_path)) == str(tmp_path / weights_file)

  module, variables = models.load("clip_vit_b16", weights=str(tmp_path), resolution=RES)
  images = jax.random.uniform(jax.random.key(0), (3, 40, 36, 3))
  got = np.asarray(module.apply(variables, images))
  pixels = np.array(prepare(images, RES, CLIP_MEAN, CLIP_STD)).transpose(0, 3, 1, 2)
  with torch.no_grad():
    want = reference(pixel_values=torch.from_numpy(pixels)).image_embeds.numpy()
  print(f"max |rrjax - torch| = {np.abs(got - want).max():.3g} (|torch| max "
        f"{np.abs(want).max():.3g}, between images {np.abs(want[0] - want[1]).max():.3g})")
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
