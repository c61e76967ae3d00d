"""Teachers by published name (`rrjax.models.hub`) and the OpenAI layout both ways
(`rrjax.models.openai_layout`), offline.

Tiny random towers are written the ways the hub holds them (open_clip's full-model layout as
safetensors and as a torch-zip `.bin` with its `open_clip_config.json`; transformers' layout
with Flax weights) into a fake Hugging Face cache (`models--org--name/blobs`, `snapshots/<rev>`
linking to them, `refs/main`), and read back by name with the hub off (`HF_HUB_OFFLINE`).
"""

import collections
import hashlib
import json
import os

import jax
import numpy as np
import pytest
from flax import traverse_util
from huggingface_hub import constants
from transformers import CLIPConfig, FlaxCLIPModel

from rrjax import errors, models
from rrjax.config import inputs, validate
from rrjax.models import clip_resnet, clip_vit, hub, openai_layout, weights_io
from rrjax.models.preprocess import CLIP_MEAN, CLIP_STD
from tests import helpers
from tests.models import test_clip_resnet as rn
from tests.models.test_clip_vit import _text_config
from tests.models.test_torch_reader import write_zip

# Tiny towers, as open_clip configs describe them.
VIT = hub.Arch(image_size=32, layers=2, width=32, patch_size=8, head_width=16, mlp_ratio=2.0,
               embed_dim=16)
RN = hub.Arch(image_size=64, layers=(1, 1, 1, 1), width=8, patch_size=0, head_width=64,
              mlp_ratio=4.0, embed_dim=16)
TEXT = ("token_embedding.weight", "transformer.resblocks.0.attn.in_proj_weight", "logit_scale",
        "ln_final.weight")
MODELS = {"ViT-tiny": VIT, "RN-tiny": RN}
TAGS = {"ViT-tiny": {"gelu": ("org/vit-tiny-gelu", False), "quick": ("org/vit-tiny-quick", True),
                     "text": ("org/text-only", False), "classifier": ("org/classifier", False)},
        "RN-tiny": {"openai": ("org/rn-tiny", True)}}


def _random_params(shapes: dict, seed: int) -> dict:
  """Random tower params of `shapes` `{path: shape}`, scaled so that activations stay O(1) and
  the embedding depends on the image (numpy: no initialiser to compile)."""
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape in shapes.items():
    if path[-1] == "scale":
      value = rng.uniform(0.5, 1.5, shape)
    elif path[-1] == "bias":
      value = rng.normal(0, 0.1, shape)
    else:
      value = rng.normal(0, 1, shape) / np.sqrt(np.prod(shape[:-1]) if len(shape) > 1 else 4)
    flat[path] = value.astype(np.float32)
  return traverse_util.unflatten_dict(flat)


def _vit_tower(quick_gelu: bool, seed: int):
  """A random tiny ViT of rrjax's, `(module, variables)`."""
  config = hub._vit_config(VIT, quick_gelu)
  return clip_vit.encoder(config, _random_params(clip_vit.param_shapes(config), seed), "embed")


def _full_model(visual: dict, seed: int = 0) -> dict:
  """An open_clip whole-model state dict: `visual` plus text-tower tensors."""
  rng = np.random.default_rng(seed)
  return {**visual, **{name: rng.normal(size=(4, 4)).astype(np.float32) for name in TEXT}}


def _put(cache, repo: str, files: dict) -> str:
  """Adds `files` `{name: bytes}` to the fake cache as huggingface_hub lays it out."""
  root = cache / f"models--{repo.replace('/', '--')}"
  revision = hashlib.sha1(repo.encode()).hexdigest()
  snapshot = root / "snapshots" / revision
  (root / "blobs").mkdir(parents=True, exist_ok=True)
  snapshot.mkdir(parents=True, exist_ok=True)
  for name, data in files.items():
    blob = hashlib.sha256(data).hexdigest()
    (root / "blobs" / blob).write_bytes(data)
    os.symlink(os.path.join("..", "..", "blobs", blob), snapshot / name)
  (root / "refs").mkdir(exist_ok=True)
  (root / "refs" / "main").write_text(revision)
  return str(snapshot)


def _safetensors(state: dict) -> bytes:
  from safetensors.numpy import save  # pylint: disable=import-outside-toplevel
  return save({k: np.ascontiguousarray(v) for k, v in state.items()})


def _torch_zip(tmp, state: dict) -> bytes:
  path = tmp / "model.bin"
  write_zip(path, rn._torch_tree(collections.OrderedDict(state)))
  return path.read_bytes()


def _open_clip_config(arch: hub.Arch, quick_gelu: bool, **vision) -> bytes:
  layers = list(arch.layers) if isinstance(arch.layers, tuple) else arch.layers
  cfg = {"model_cfg": {"embed_dim": arch.embed_dim, "quick_gelu": quick_gelu,
                       "vision_cfg": {"image_size": arch.image_size, "layers": layers,
                                      "width": arch.width, "patch_size": arch.patch_size or None,
                                      "head_width": arch.head_width,
                                      "mlp_ratio": arch.mlp_ratio, **vision},
                       "text_cfg": {"width": 4, "layers": 1}},
         "preprocess_cfg": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD)}}
  return json.dumps(cfg).encode()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """The fake cache, and the towers written into it."""
  tmp = tmp_path_factory.mktemp("hub")
  root = tmp / "cache"
  towers = {"gelu": _vit_tower(False, seed=1), "quick": _vit_tower(True, seed=2)}
  visual = {k: openai_layout.to_state_dict(v[1]) for k, v in towers.items()}
  # open_clip's tags: safetensors first, as open_clip looks for it.
  _put(root, "org/vit-tiny-gelu",
       {"open_clip_model.safetensors": _safetensors(_full_model(visual["gelu"]))})
  _put(root, "org/vit-tiny-quick",
       {"open_clip_pytorch_model.bin": _torch_zip(tmp, _full_model(visual["quick"]))})
  _put(root, "org/text-only",
       {"open_clip_model.safetensors": _safetensors(_full_model({}))})
  classifier = {"head.weight": np.zeros((10, 32), np.float32),
                "blocks.0.attn.qkv.weight": np.zeros((96, 32), np.float32)}
  _put(root, "org/classifier", {"open_clip_pytorch_model.bin": _torch_zip(tmp, classifier)})
  _put(root, "org/vit-classifier",
       {"config.json": json.dumps({"model_type": "vit", "hidden_size": 32}).encode(),
        "model.safetensors": _safetensors(classifier)})
  rn_state = rn._tiny_state()
  _put(root, "org/rn-tiny", {"open_clip_pytorch_model.bin": _torch_zip(tmp, rn_state)})
  # A hub repository in open_clip's layout (as FARE's), with a torch-zip .bin.
  _put(root, "robust/fare-tiny",
       {"open_clip_config.json": _open_clip_config(VIT, True),
        "open_clip_pytorch_model.bin": _torch_zip(tmp, _full_model(visual["quick"]))})
  _put(root, "robust/siglip-like",
       {"open_clip_config.json": _open_clip_config(VIT, False, pool_type="avg"),
        "open_clip_model.safetensors": _safetensors(_full_model(visual["gelu"]))})
  # A repository in transformers' layout: a whole CLIP, Flax weights.
  config = CLIPConfig(text_config=_text_config(), projection_dim=16,
                      vision_config=dict(image_size=32, patch_size=8, hidden_size=32,
                                         intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2))
  hf_dir = tmp / "hf"
  model = FlaxCLIPModel(config, _do_init=False)
  shapes = {path: leaf.shape for path, leaf in
            traverse_util.flatten_dict(model.params_shape_tree).items()}
  model.save_pretrained(hf_dir, params=_random_params(shapes, seed=3))
  _put(root, "openai/clip-tiny", {name: (hf_dir / name).read_bytes()
                                  for name in ("config.json", "flax_model.msgpack")})
  return {"root": root, "towers": towers, "visual": visual, "rn_state": rn_state,
          "hf_dir": str(hf_dir)}


@pytest.fixture(autouse=True)
def offline(cache, monkeypatch):
  """The hub off, the fake cache in place, and the tiny models in open_clip's tables."""
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache["root"]))
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(hub, "_MODELS", {**hub._MODELS, **MODELS})
  monkeypatch.setattr(hub, "_TAGS", {**hub._TAGS, **TAGS})


def _images(n=2, size=40, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, size, size, 3))


def _flat(variables):
  return traverse_util.flatten_dict(jax.tree.map(np.asarray, variables))


def _same_tower(want, got, embed=True):
  """`got` is the tower `want`: the same architecture and activation, equal variables; and it
  embeds (rrjax's towers against PyTorch's: tests/models/*_reference.py)."""
  (module_a, vars_a), (module_b, vars_b) = want, got
  fields = lambda m: getattr(m, "arch", None) or (m.layers, m.width, m.embed_dim, m.heads,
                                                  m.resolution)
  assert fields(module_b) == fields(module_a)
  a, b = _flat(vars_a), _flat(vars_b)
  assert sorted(a) == sorted(b)
  for path in a:
    np.testing.assert_allclose(b[path], a[path], rtol=1e-6, atol=1e-7, err_msg=str(path))
  if not embed:
    return
  out = jax.jit(module_b.apply)(vars_b, _images())
  assert out.shape == (2, module_b.embed_dim) and np.isfinite(out).all()


# --- openai_layout ---------------------------------------------------------------------------

def test_vit_round_trip_through_openai_layout(cache):
  module, variables = cache["towers"]["quick"]
  state = cache["visual"]["quick"]
  assert state["visual.transformer.resblocks.1.attn.in_proj_weight"].shape == (96, 32)
  assert state["visual.conv1.weight"].shape == (32, 3, 8, 8)
  assert state["visual.proj"].shape == (32, 16)
  q = variables["params"]["clip"]["vision_model"]["encoder"]["layers"]["0"]["self_attn"]
  np.testing.assert_array_equal(state["visual.transformer.resblocks.0.attn.in_proj_weight"][:32],
                                np.asarray(q["q_proj"]["kernel"]).T)
  visual = {k[len("visual."):]: v for k, v in state.items()}
  back = openai_layout.vit_from_state_dict(visual, clip_vit.param_shapes(module.config),
                                           source="t")
  want, got = _flat(variables["params"]["clip"]), _flat(back)
  assert sorted(want) == sorted(got)
  for path in want:
    np.testing.assert_array_equal(got[path], want[path], err_msg=str(path))
  assert sorted(openai_layout.to_state_dict(variables, prefix="")) == sorted(visual)
  assert openai_layout.vision_cfg(module) == {
      "embed_dim": 16, "quick_gelu": True,
      "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                     "head_width": 16, "mlp_ratio": 2.0}}


def test_resnet_round_trip_keeps_batch_stats(cache):
  state = cache["rn_state"]
  variables = clip_resnet.from_torch_state_dict(state)
  exported = openai_layout.to_state_dict(jax.tree.map(np.asarray, variables))
  want = {k: v for k, v in clip_resnet.visual_tensors(state).items()}
  assert sorted(exported) == sorted("visual." + k for k in want)
  assert "visual.layer2.0.downsample.1.running_var" in exported
  for name, value in want.items():
    np.testing.assert_array_equal(exported["visual." + name], value, err_msg=name)


def test_export_refuses_what_is_no_tower(cache):
  module, variables = cache["towers"]["gelu"]
  with_fc = {"params": {**variables["params"], "fc": {"kernel": np.zeros((16, 3))}}}
  with pytest.raises(errors.UserError, match="classifier"):
    openai_layout.to_state_dict(with_fc)
  with pytest.raises(errors.UserError, match="not the variables of a CLIP image tower"):
    openai_layout.to_state_dict({"params": {"conv_stem": {}}})
  visual = {k[len("visual."):]: v for k, v in cache["visual"]["gelu"].items()}
  shapes = clip_vit.param_shapes(module.config)
  bad = {**visual, "transformer.resblocks.0.attn.in_proj_bias": np.zeros(95, np.float32)}
  with pytest.raises(errors.UserError, match=r"in_proj_bias' has shape \(95,\)"):
    openai_layout.vit_from_state_dict(bad, shapes, source="f.bin")
  with pytest.raises(errors.UserError, match="f.bin: missing tensor 'visual.ln_post.bias'"):
    openai_layout.vit_from_state_dict(
        {k: v for k, v in visual.items() if k != "ln_post.bias"}, shapes, source="f.bin")


def test_safetensors_file_holds_the_state_dict(cache, tmp_path):
  path = tmp_path / "visual.safetensors"
  weights_io.save_safetensors(path, cache["visual"]["gelu"])
  stored, _ = weights_io.read_safetensors(path)
  assert sorted(stored) == sorted(cache["visual"]["gelu"])


# --- hub names -------------------------------------------------------------------------------

@pytest.mark.parametrize("tag", ["gelu", "quick"])
def test_open_clip_tag_loads_the_tower_it_names(cache, tag):
  """safetensors (gelu) and torch-zip .bin (quick): the towers that were written, and their
  activation from the tag."""
  module, variables = models.load("open_clip:ViT-tiny", weights=tag, resolution=32)
  assert module.config.hidden_act == ("quick_gelu" if tag == "quick" else "gelu")
  _same_tower(cache["towers"][tag], (module, variables))


@pytest.mark.parametrize("tag", ["gelu", "quick"])
def test_the_standalone_name_rebuilds_the_taggeds_activation(cache, tag):
  """An exported student is rebuilt from its name alone (`rrjax.export`): a tag trained with
  QuickGELU must not come back with GELU."""
  module, _ = models.load("open_clip:ViT-tiny", weights=tag, resolution=32)
  name = hub.standalone_name("open_clip:ViT-tiny", tag)
  rebuilt, _ = models.load(name, pretrained=False, resolution=32)
  assert rebuilt.config == module.config
  assert name == ("open_clip:ViT-tiny-quickgelu" if tag == "quick" else "open_clip:ViT-tiny")


@pytest.mark.parametrize("repo", ["robust/fare-tiny", "openai/clip-tiny"])
def test_an_hf_repository_has_an_open_clip_name_that_rebuilds_it_without_the_hub(
    cache, repo, monkeypatch):
  """An exported student of an `hf:` teacher loads with no Hugging Face cache: its name is the
  open_clip model of the same tower (open_clip's layout and transformers'), whose random
  tower with the repository's weights computes the same embeddings."""
  name = hub.standalone_name(f"hf:{repo}", None)
  assert name == "open_clip:ViT-tiny-quickgelu"
  module, variables = models.load(f"hf:{repo}")
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache["root"] / "absent"))
  rebuilt, random = models.load(name, pretrained=False)
  assert jax.tree.map(np.shape, random) == jax.tree.map(np.shape, variables)
  np.testing.assert_allclose(jax.jit(rebuilt.apply)(variables, _images()),
                             jax.jit(module.apply)(variables, _images()), rtol=1e-6, atol=1e-6)


def test_an_hf_repository_of_no_known_tower_keeps_its_name(monkeypatch):
  monkeypatch.setattr(hub, "_MODELS", {k: v for k, v in hub._MODELS.items() if k != "ViT-tiny"})
  assert hub.standalone_name("hf:robust/fare-tiny", None) == "hf:robust/fare-tiny"


def test_open_clip_resnet_tag_and_random_from_a_config(cache, tmp_path):
  module, variables = models.load("open_clip:RN-tiny-quickgelu", weights="openai")
  assert (module.resolution, module.heads, module.embed_dim) == (64, 4, 16)
  path = tmp_path / "rn.pt"
  write_zip(path, rn._torch_tree(cache["rn_state"]))
  # The loader's own numerics: test_clip_resnet.py.
  _same_tower((module, clip_resnet.load_weights(path)), (module, variables), embed=False)
  # Random: the architecture its open_clip_config.json states; no weights read.
  module, random = models.load("hf:robust/fare-tiny", pretrained=False, head="logits",
                               num_classes=3)
  assert module.config.hidden_act == "quick_gelu" and module.num_classes == 3
  assert random["params"]["clip"]["visual_projection"]["kernel"].shape == (32, 16)


def test_hf_repositories_in_both_layouts(cache):
  # open_clip's layout (open_clip_config.json: QuickGELU, the architecture).
  module, variables = models.load("hf:robust/fare-tiny")
  assert module.config.hidden_act == "quick_gelu" and module.embed_dim == 16
  _same_tower(cache["towers"]["quick"], (module, variables))
  pinned = f"hf:robust/fare-tiny@{hashlib.sha1(b'robust/fare-tiny').hexdigest()}"
  _same_tower((module, variables), models.load(pinned), embed=False)
  # transformers' layout: as clip_vit loads the same directory.
  _same_tower(models.load("clip_vit_b16", weights=cache["hf_dir"]),
              models.load("hf:openai/clip-tiny"))
  _, random = models.load("hf:openai/clip-tiny", pretrained=False, seed=5)
  _, loaded = models.load("hf:openai/clip-tiny")
  assert jax.tree.map(np.shape, random) == jax.tree.map(np.shape, loaded)


def test_config_fields_take_hub_names(cache, tmp_path):
  folder = helpers.make_folder(tmp_path / "images")
  config = helpers.tiny_config(folder, teacher__name="hf:robust/fare-tiny", teacher__weights="")
  validate.validate(config)
  assert inputs.missing(config) == []
  config.teacher.name = "hf:org/absent"
  assert [line for line in inputs.missing(config) if "hf:org/absent" in line]
  config.teacher.name = "hf:robust/fare-tiny"
  config.teacher.resolution = 0
  module, _ = models.load_from_config(config.teacher)
  assert module.resolution == 32
  with pytest.raises(errors.UserError, match=r"^config\.teacher\.name: 'open_clip:ViT-nope': "):
    validate.validate(helpers.tiny_config(folder, teacher__name="open_clip:ViT-nope"))


@pytest.mark.parametrize("name,weights,message", [
    ("open_clip:ViT-tiny", "text",
     r"text-only.*open_clip_model\.safetensors: no CLIP image-tower tensors \(names starting "
     r"with 'visual\.'\)"),
    ("open_clip:ViT-tiny", "classifier",
     r"classifier.*open_clip_pytorch_model\.bin: no CLIP image-tower tensors .* found e\.g\. "
     r"'blocks\.0\.attn\.qkv\.weight', 'head\.weight'"),
    ("hf:org/vit-classifier", None, r"org--vit-classifier.* holds a ViTConfig, not a CLIP"),
    ("open_clip:ViT-tiny", None, r"needs weights = one of open_clip's tags gelu, quick, text"),
    ("open_clip:ViT-tiny-quickgelu", "gelu", r"has no pretrained tag 'gelu': .* tags quick,"),
    ("hf:robust/siglip-like", None,
     r"open_clip_config\.json: vision_cfg\.pool_type = 'avg': not a plain CLIP image tower"),
    ("hf:org/absent", None, r"^hf:org/absent: none of open_clip_config\.json, config\.json .*"
     r"HF_HUB_OFFLINE"),
])
def test_bad_sources_are_one_line_user_errors(name, weights, message):
  with pytest.raises(errors.UserError, match=message) as info:
    models.load(name, weights=weights)
  assert "\n" not in str(info.value)


def test_preflight_names_what_is_missing(cache):
  assert hub.problem("open_clip:ViT-tiny", "gelu") is None
  assert hub.problem("open_clip:ViT-tiny", "random") is None
  assert hub.problem("hf:robust/fare-tiny", "") is None
  assert hub.problem("hf:openai/clip-tiny", "") is None
  assert "HF_HUB_OFFLINE" in hub.problem("hf:openai/clip-tiny@v2", "")
  assert "HF_HUB_OFFLINE" in hub.problem("hf:org/absent", "")
  assert "tags gelu, quick, text" in hub.problem("open_clip:ViT-tiny", "laion")
  assert hub.problem("hf:openai/clip-tiny", "x.bin").endswith("the repository holds them")


@pytest.mark.parametrize("content,message", [
    (None, "not a regular file"),
    (b"[" * 100_000, "not readable JSON"),
    (b" " * (2 << 20), "larger than 1048576 bytes"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"model_cfg": {"embed_dim": 16}}).encode(), "no model_cfg.vision_cfg object"),
    (_open_clip_config(VIT, False, timm_model_name="eva02"), "vision_cfg.timm_model_name = "),
    (_open_clip_config(VIT, False, new_field=1), "vision_cfg.'new_field': not a field"),
    (_open_clip_config(VIT._replace(width=True), False), "vision_cfg.width = True: not a whole"),
    (_open_clip_config(VIT._replace(layers=10**9), False), "vision_cfg.layers = 1000000000"),
    (_open_clip_config(VIT._replace(layers=(1, 1)), False), "a ModifiedResNet has four stages"),
    (_open_clip_config(VIT, "yes"), "model_cfg.quick_gelu = 'yes': not true or false"),
    (json.dumps({"model_cfg": json.loads(_open_clip_config(VIT, False))["model_cfg"],
                 "preprocess_cfg": {"mean": [0.5] * 3}}).encode(),
     r"preprocess_cfg.mean \[0.5, 0.5, 0.5\] is not OpenAI's"),
])
def test_hostile_open_clip_config_is_one_line_error(tmp_path, content, message):
  path = tmp_path / "open_clip_config.json"
  if content is None:
    os.mkfifo(path)
  else:
    path.write_bytes(content)
  with pytest.raises(errors.UserError, match=message) as info:
    hub.read_open_clip_config(str(path))
  assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
  assert len(str(info.value)) < 400
