"""rrjax's CLIP towers to and from open_clip's PyTorch towers (make test-reference).

Random open_clip towers (a tiny ModifiedResNet, tiny ViTs with either activation) are read into
rrjax the ways rrjax reads published ones, exported back with `openai_layout.to_state_dict`,
and loaded with `strict=True` into fresh open_clip towers built from `openai_layout.vision_cfg`:
the tensors come back equal and the three towers embed the same images alike. The tables of
`rrjax.models.hub` are checked against open_clip's own.
"""

import importlib
import importlib.util
import json
import os
import sys
import types
from unittest import mock

import jax
import numpy as np
import pytest

from rrjax import models
from rrjax.models import clip_resnet, clip_vit, hub, openai_layout
from tests.models.test_clip_resnet_reference import _compare, _random_tower, open_clip_module

pytestmark = pytest.mark.reference
torch = pytest.importorskip("torch")


def _open_clip_tower(cfg: dict):
  """open_clip's `model._build_vision_tower(embed_dim, vision_cfg, quick_gelu)` for a plain
  tower, written out: `open_clip.model` cannot be imported beside the torchvision stub of
  `open_clip_module` (transformers probes for torchvision)."""
  vision = cfg["vision_cfg"]
  if isinstance(vision["layers"], list):
    return open_clip_module("modified_resnet").ModifiedResNet(
        vision["layers"], cfg["embed_dim"], vision["width"] * 32 // vision["head_width"],
        vision["image_size"], vision["width"]).eval()
  transformer = open_clip_module("transformer")
  return transformer.VisionTransformer(
      image_size=vision["image_size"], patch_size=vision["patch_size"], width=vision["width"],
      layers=vision["layers"], heads=vision["width"] // vision["head_width"],
      mlp_ratio=vision["mlp_ratio"], output_dim=cfg["embed_dim"],
      act_layer=transformer.QuickGELU if cfg["quick_gelu"] else torch.nn.GELU).eval()


def _export_into_fresh_tower(tower, module, variables):
  """Exports rrjax's tower into a fresh open_clip one (strict), checking every tensor."""
  exported = openai_layout.to_state_dict(jax.tree.map(np.asarray, variables), prefix="")
  fresh = _open_clip_tower(openai_layout.vision_cfg(module))
  fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
  original = {k: v for k, v in tower.state_dict().items()
              if not k.endswith("num_batches_tracked")}
  assert sorted(exported) == sorted(original)
  for name, value in original.items():
    np.testing.assert_array_equal(exported[name], value.numpy(), err_msg=name)
  return fresh


def _scaled(tower):
  """`tower` with larger weights (matrices 3x, conv kernels sqrt(3)x, which PyTorch's default
  initialisation shrinks the signal by): open_clip's initialisation leaves a tiny tower's
  embedding nearly independent of the image."""
  with torch.no_grad():
    for p in tower.parameters():
      if p.ndim > 1:
        p.mul_(3 if p.ndim == 2 else 3**0.5)
  return tower


def test_resnet_round_trip():
  tower = _scaled(_random_tower((1, 1, 1, 1), 16, 4, 64, 8))
  state = {f"visual.{k}": v.numpy() for k, v in tower.state_dict().items()}
  variables = clip_resnet.from_torch_state_dict(state, heads=4)
  module = clip_resnet.ModifiedResNet((1, 1, 1, 1), 8, 16, 4, resolution=64)
  fresh = _export_into_fresh_tower(tower, module, variables)
  for reference in (tower, fresh):
    diff, want = _compare(reference, module, variables, 64)
    assert np.abs(want[0] - want[1]).max() > 0.05  # the images matter
    assert diff < 1e-4


@pytest.mark.parametrize("quick_gelu", [True, False], ids=["quickgelu", "gelu"])
def test_vit_by_name_and_round_trip(tmp_path, monkeypatch, quick_gelu):
  """An open_clip checkpoint (whole model: `visual.*` and text tensors) loaded by name."""
  arch = hub.Arch(32, 2, 32, 8, 16, 2.0, 16)
  monkeypatch.setattr(hub, "_MODELS", {**hub._MODELS, "ViT-tiny": arch})
  torch.manual_seed(0)
  tower = _scaled(_open_clip_tower({"embed_dim": 16, "quick_gelu": quick_gelu,
                            "vision_cfg": {"image_size": 32, "layers": 2, "width": 32,
                                           "patch_size": 8, "head_width": 16, "mlp_ratio": 2.0}}))
  state = {f"visual.{k}": v for k, v in tower.state_dict().items()}
  state["token_embedding.weight"] = torch.zeros(8, 4)
  state["transformer.resblocks.0.attn.in_proj_weight"] = torch.zeros(12, 4)
  path = tmp_path / "open_clip_pytorch_model.bin"
  torch.save(state, path)
  name = "open_clip:ViT-tiny" + ("-quickgelu" if quick_gelu else "")
  module, variables = models.load(name, weights=str(path))
  assert module.config.hidden_act == ("quick_gelu" if quick_gelu else "gelu")
  fresh = _export_into_fresh_tower(tower, module, variables)
  for reference in (tower, fresh):
    diff, want = _compare(reference, module, variables, 32)
    assert np.abs(want[0] - want[1]).max() > 0.1  # the images matter
    assert diff < 1e-4
  # The activation matters too: the other one is far off.
  other = hub._vit_config(arch, not quick_gelu)
  wrong, _ = clip_vit.encoder(other, variables["params"]["clip"], "embed")
  assert _compare(tower, wrong, variables, 32)[0] > 1e-2


def test_hub_tables_are_open_clips():
  """`hub._MODELS` and `hub._TAGS`: open_clip 3.3.0's models with a plain CLIP image tower,
  OpenAI's normalisation and weights on the hub."""
  spec = importlib.util.find_spec("open_clip")
  package = types.ModuleType("open_clip")
  package.__path__ = list(spec.submodule_search_locations)
  with mock.patch.dict(sys.modules, {"open_clip": package}):
    pretrained = importlib.import_module("open_clip.pretrained")
  plain = set(hub.Arch._fields) - {"embed_dim"} | {"patch_dropout"}
  want_models, want_tags = {}, {}
  for model, tags in pretrained._PRETRAINED.items():
    path = os.path.join(package.__path__[0], "model_configs", f"{model}.json")
    if model.endswith("-quickgelu") or not os.path.exists(path):
      continue
    with open(path) as f:
      cfg = json.load(f)
    vision = cfg["vision_cfg"]
    if set(vision) - plain:
      continue
    for tag, t in tags.items():
      if (tuple(t["mean"]), tuple(t["std"])) != (pretrained.OPENAI_DATASET_MEAN,
                                                 pretrained.OPENAI_DATASET_STD) or not t["hf_hub"]:
        continue
      repo, filename = os.path.split(t["hf_hub"])
      assert not filename  # open_clip's default file names, which hub._OPEN_CLIP_FILES are
      quick_gelu = bool(t.get("quick_gelu") or cfg.get("quick_gelu"))
      want_tags.setdefault(model, {})[tag] = (repo, quick_gelu)
      layers = vision["layers"]
      want_models[model] = hub.Arch(
          vision["image_size"], tuple(layers) if isinstance(layers, list) else layers,
          vision["width"], vision.get("patch_size") or 0, vision.get("head_width", 64),
          vision.get("mlp_ratio", 4.0), cfg["embed_dim"])
  assert hub._MODELS == want_models
  assert hub._TAGS == want_tags
  # open_clip's -quickgelu models are the tags trained with it, which hub keeps.
  for model, tags in pretrained._PRETRAINED.items():
    base = model[:-len("-quickgelu")]
    if model.endswith("-quickgelu") and base in hub._TAGS:
      assert set(tags) == {t for t, (_, q) in hub._TAGS[base].items() if q}, model
