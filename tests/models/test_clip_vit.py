"""CLIP ViT towers and the zero-shot head, on a tiny random CLIP saved to disk and reloaded.

The hub checkpoints are unreachable here, so a tiny random `FlaxCLIPModel` (the hub's format:
full model, Flax weights) and a tiny hand-written BPE tokenizer stand in for them.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from transformers import (CLIPConfig, CLIPTokenizer, CLIPVisionConfig, FlaxCLIPModel,
                          FlaxCLIPVisionModel)

from rrjax import errors, models
from rrjax.models import clip_vit
from rrjax.models.preprocess import CLIP_MEAN, CLIP_STD, prepare

RES = 32
PROJ = 16
VISION = dict(image_size=RES, patch_size=8, hidden_size=32, intermediate_size=64,
              num_hidden_layers=2, num_attention_heads=2)
CLASSES = ["cat", "dog", "bird"]

# A valid CLIP BPE vocabulary for lower-case words: every letter and '.', alone and as a word's
# last symbol ('</w>'), one two-step merge ('c a' -> 'ca', 'ca t</w>' -> 'cat</w>'), and the
# special tokens last, where CLIP keeps them.
_SYMBOLS = list("abcdefghijklmnopqrstuvwxyz.")
_VOCAB = _SYMBOLS + [s + "</w>" for s in _SYMBOLS] + ["ca", "cat</w>",
                                                        "<|startoftext|>", "<|endoftext|>"]
_MERGES = ["#version: 0.2", "c a", "ca t</w>"]


def _text_config():
  return dict(vocab_size=len(_VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=2, max_position_embeddings=24,
              bos_token_id=_VOCAB.index("<|startoftext|>"),
              eos_token_id=_VOCAB.index("<|endoftext|>"), pad_token_id=_VOCAB.index("<|endoftext|>"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
  """A directory like the hub's: full CLIP Flax weights, config and tokenizer files."""
  path = tmp_path_factory.mktemp("clip")
  # The nested vision config keeps the default projection_dim (512); the full config's 16 rules.
  config = CLIPConfig(text_config=_text_config(), vision_config=VISION, projection_dim=PROJ)
  model = FlaxCLIPModel(config, seed=3)
  # HF's initialisation (std 0.01 kernels) leaves the image embedding nearly independent of
  # the image (differences ~1e-3); with 30x larger kernels content and layout matter (~0.2).
  params = dict(model.params)
  params["vision_model"] = jax.tree_util.tree_map_with_path(
      lambda p, x: x * 30 if p[-1].key == "kernel" else x, params["vision_model"])
  model.save_pretrained(path, params=params)
  with open(path / "vocab.json", "w") as f:
    json.dump({token: i for i, token in enumerate(_VOCAB)}, f)
  (path / "merges.txt").write_text("\n".join(_MERGES) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def hf_clip(clip_dir):
  return FlaxCLIPModel.from_pretrained(clip_dir)


@pytest.fixture(scope="module")
def encoder(clip_dir):
  return models.load("clip_vit_b32", weights=clip_dir, resolution=RES)


def _images(shape, seed=0):
  return jax.random.uniform(jax.random.key(seed), shape)


def test_registry():
  for name, hub in clip_vit.HUB_NAMES.items():
    entry = models.info(name)
    assert (entry.native_resolution, entry.has_pretrained) == (224, True)
    assert entry.embed_dim == clip_vit.ARCHS[name]["projection_dim"]
    assert hub.startswith("openai/clip-vit-")
  assert models.info("clip_vit_l14").embed_dim == 768


def test_matches_hf_wrapper_on_nchw_pixels(encoder, hf_clip):
  """Equal to the port's own wrapper fed NCHW, and sensitive to an H/W transposition."""
  module, variables = encoder
  assert module.embed_dim == PROJ
  # Non-square inputs: the encoder resizes them; the wrapper gets the same resized pixels.
  images = _images((2, 40, 48, 3))
  got = module.apply(variables, images)
  pixels = prepare(images, RES, CLIP_MEAN, CLIP_STD)
  want = hf_clip.get_image_features(jnp.transpose(pixels, (0, 3, 1, 2)))
  assert got.shape == (2, PROJ)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # Feeding the inner module H and W swapped would give these instead: far from `want`, so the
  # comparison above catches a layout mistake.
  swapped = module.apply(variables, jnp.swapaxes(images, 1, 2))
  assert np.abs(np.asarray(swapped - want)).max() > 0.05


def test_jit_grad_and_train_flag(encoder):
  module, variables = encoder
  images = _images((2, RES, RES, 3), seed=1)
  loss = lambda v, train: jnp.sum(module.apply(v, images, train=train) ** 2)
  grads = jax.jit(jax.grad(loss), static_argnums=1)(variables, True)
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(g).all() for g in leaves)
  assert np.abs(grads["params"]["clip"]["vision_model"]["embeddings"]["patch_embedding"]
                ["kernel"]).max() > 0
  # No BatchNorm, zero dropout: train=True computes the same function.
  np.testing.assert_allclose(module.apply(variables, images, train=True),
                             module.apply(variables, images), atol=1e-6)


def test_logits_head(clip_dir, encoder):
  module, variables = models.load("clip_vit_b32", head="logits", weights=clip_dir,
                                  resolution=RES, num_classes=5)
  out = module.apply(variables, _images((3, RES, RES, 3)))
  assert out.shape == (3, 5)
  jax.tree.map(np.testing.assert_array_equal, variables["params"]["clip"],
               encoder[1]["params"]["clip"])
  with pytest.raises(ValueError, match="num_classes"):
    models.load("clip_vit_b32", head="logits", weights=clip_dir, resolution=RES)


def test_random_init_and_hashable():
  module, variables = models.load("clip_vit_b16", pretrained=False, config=VISION,
                                  resolution=RES, seed=1)
  # The published architecture's fields stay where the tiny config does not override them.
  assert dict(module.arch)["projection_dim"] == 512
  assert module.apply(variables, _images((1, 20, 20, 1))).shape == (1, 512)
  # Hashable and compared by value: modules are static jit arguments.
  again = clip_vit.CLIPVisionEncoder(clip_vit.arch_of(module.config), resolution=RES,
                                     dtype=module.dtype)
  assert hash(module) == hash(again) and module == again


def test_errors(tmp_path, clip_dir):
  with pytest.raises(errors.UserError,
                     match=r"could not load CLIP weights .*config\.teacher\.weights"):
    models.load("clip_vit_b32", weights=str(tmp_path))
  with pytest.raises(ValueError, match="resolution must be 32"):
    models.load("clip_vit_b32", weights=clip_dir, resolution=64)
  with pytest.raises(ValueError, match="random initialisations"):
    models.load("clip_vit_b32", weights=clip_dir, config=VISION)
  # A vision checkpoint without the projection must not load with a random projection.
  vision_only = tmp_path / "vision_only"
  FlaxCLIPVisionModel(CLIPVisionConfig(**VISION)).save_pretrained(vision_only)
  with pytest.raises(errors.UserError, match="lacks.*visual_projection"):
    models.load("clip_vit_b32", weights=str(vision_only))


def test_pytorch_weights_file(tmp_path):
  assert clip_vit.pytorch_weights_file(str(tmp_path)) is None
  (tmp_path / "pytorch_model.bin").touch()
  assert clip_vit.pytorch_weights_file(str(tmp_path)) == str(tmp_path / "pytorch_model.bin")
  # A safetensors file is PyTorch's or Flax's by its metadata, and comes before a `.bin`.
  st = str(tmp_path / "model.safetensors")
  safetensors.numpy.save_file({"w": np.zeros(2, np.float32)}, st, metadata={"format": "pt"})
  assert clip_vit.pytorch_weights_file(str(tmp_path)) == st
  safetensors.numpy.save_file({"w": np.zeros(2, np.float32)}, st, metadata={"format": "flax"})
  assert clip_vit.pytorch_weights_file(str(tmp_path)) is None
  (tmp_path / "model.safetensors").unlink()
  (tmp_path / "flax_model.msgpack").touch()
  assert clip_vit.pytorch_weights_file(str(tmp_path)) is None
  assert clip_vit.pytorch_weights_file("openai/clip-vit-base-patch32") is None


def test_tokenizer_files_load(clip_dir):
  tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
  ids = tokenizer("a photo of a cat.")["input_ids"]
  assert tokenizer.convert_ids_to_tokens(ids) == [
      "<|startoftext|>", "a</w>", "p", "h", "o", "t", "o</w>", "o", "f</w>", "a</w>", "cat</w>",
      ".</w>", "<|endoftext|>"]

