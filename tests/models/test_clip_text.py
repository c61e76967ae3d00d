"""Tests of CLIP's text tower (OpenAI / open_clip checkpoints) and the ResNet teachers' zero-shot
head, on a tiny random CLIP saved in the real formats.

As for the image tower (tests/models/test_clip_resnet.py), the numerics proof needs no torch: a
random state dict in OpenAI's naming, a tiny image tower and a small text tower, is written as a
real checkpoint (torch.save's zip format, TorchScript's archive, open_clip's nesting), loaded by the
real code, and compared with a slow NumPy forward pass written here from the PyTorch-layout tensors.
The tokenizer is the tiny BPE vocabulary of tests/models/test_clip_vit.py.
"""

import collections
import json
import math

import jax
import numpy as np
import pytest
from flax import traverse_util
from transformers import CLIPTokenizer

from rrjax.evaluation import zeroshot
from rrjax.models import clip_text, torch_reader
from tests.models.test_clip_resnet import TINY, _tiny_state, _torch_tree, write_torchscript
from tests.models.test_clip_vit import _MERGES, _VOCAB
from tests.models.test_torch_reader import write_zip

CLASSES = ["cat", "dog", "bird"]
# Two 64-wide heads (OpenAI's head width, so `heads` is inferred), 16 tokens of context.
TEXT = dict(vocab_size=len(_VOCAB), context_length=16, width=128, layers=2, heads=2,
            mlp_width=512, embed_dim=TINY.embed_dim)


def _text_state(vocab_size=TEXT["vocab_size"], context_length=TEXT["context_length"],
                width=TEXT["width"], layers=TEXT["layers"], mlp_width=TEXT["mlp_width"],
                embed_dim=TEXT["embed_dim"], seed=0) -> dict[str, np.ndarray]:
  """A random CLIP text tower in OpenAI's naming, float32.

  Weights are scaled by their fan-in and LayerNorm gains kept near 1, so every part (attention
  included: logits O(1)) shapes the output, and the comparison's tolerance means something.
  """
  rng = np.random.default_rng(seed)
  state = collections.OrderedDict()

  def ln(name):
    state[f"{name}.weight"] = rng.uniform(0.5, 1.5, width)
    state[f"{name}.bias"] = rng.normal(0, 0.1, width)

  def linear(name, out, inp, weight="weight", bias="bias"):
    state[f"{name}{weight}"] = rng.normal(size=(out, inp)) / math.sqrt(inp)
    state[f"{name}{bias}"] = rng.normal(0, 0.1, out)

  state["token_embedding.weight"] = rng.normal(size=(vocab_size, width))
  state["positional_embedding"] = rng.normal(0, 0.5, (context_length, width))
  for i in range(layers):
    p = f"transformer.resblocks.{i}"
    ln(f"{p}.ln_1")
    linear(f"{p}.attn.", 3 * width, width, "in_proj_weight", "in_proj_bias")
    linear(f"{p}.attn.out_proj.", width, width)
    ln(f"{p}.ln_2")
    linear(f"{p}.mlp.c_fc.", mlp_width, width)
    linear(f"{p}.mlp.c_proj.", width, mlp_width)
  ln("ln_final")
  state["text_projection"] = rng.normal(size=(width, embed_dim)) / math.sqrt(width)
  state["logit_scale"] = np.array(math.log(100.0))
  return collections.OrderedDict((k, v.astype(np.float32)) for k, v in state.items())


def _clip_state(**text) -> dict[str, np.ndarray]:
  """A whole tiny CLIP: test_clip_resnet's image tower and a real text tower."""
  visual = {k: v for k, v in _tiny_state().items() if k.startswith("visual.")}
  return collections.OrderedDict({**visual, **_text_state(**text)})


# --- an independent NumPy forward pass ----------------------------------------------------------

def _np_layer_norm(x, s, name):
  mean = x.mean(axis=-1, keepdims=True)
  var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-5) * s[f"{name}.weight"] + s[f"{name}.bias"]


def _np_text_features(ids, state, heads):
  """CLIP's `encode_text` on token ids `[B, L]` -> `[B, embed_dim]`, float64."""
  s = {k: v.astype(np.float64) for k, v in state.items() if not k.startswith("visual.")}
  linear = lambda x, name: x @ s[f"{name}.weight"].T + s[f"{name}.bias"]
  b, length = ids.shape
  x = s["token_embedding.weight"][ids] + s["positional_embedding"][:length]
  width = x.shape[-1]
  d = width // heads
  future = np.triu(np.ones((length, length), bool), k=1)
  blocks = len({k.split(".")[2] for k in s if k.startswith("transformer.resblocks.")})
  for i in range(blocks):
    p = f"transformer.resblocks.{i}"
    y = _np_layer_norm(x, s, f"{p}.ln_1")
    qkv = y @ s[f"{p}.attn.in_proj_weight"].T + s[f"{p}.attn.in_proj_bias"]
    q, k, v = qkv[..., :width], qkv[..., width:2 * width], qkv[..., 2 * width:]
    out = np.zeros_like(y)
    for h in range(heads):
      part = slice(h * d, (h + 1) * d)
      logits = q[..., part] @ k[..., part].transpose(0, 2, 1) / math.sqrt(d)
      logits[:, future] = -np.inf
      weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
      weights /= weights.sum(axis=-1, keepdims=True)
      out[..., part] = weights @ v[..., part]
    x = x + linear(out, f"{p}.attn.out_proj")
    y = linear(_np_layer_norm(x, s, f"{p}.ln_2"), f"{p}.mlp.c_fc")
    x = x + linear(y / (1 + np.exp(-1.702 * y)), f"{p}.mlp.c_proj")
  x = _np_layer_norm(x, s, "ln_final")
  return x[np.arange(b), ids.argmax(axis=1)] @ s["text_projection"]


def _openai_tokens(tokenizer, prompts, context_length):
  """Token ids as OpenAI's `clip.tokenize` lays them out: zero-padded to the full context."""
  ids = tokenizer(prompts)["input_ids"]
  out = np.zeros((len(ids), context_length), np.int64)
  for row, seq in zip(out, ids):
    row[:len(seq)] = seq
  return out


def _unit(x, axis):
  return x / np.linalg.norm(x, axis=axis, keepdims=True)


# --- fixtures -----------------------------------------------------------------------------------

def _write_tokenizer(path, vocab):
  path.mkdir()
  with open(path / "vocab.json", "w") as f:
    json.dump({token: i for i, token in enumerate(vocab)}, f)
  (path / "merges.txt").write_text("\n".join(_MERGES) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  return _write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer", _VOCAB)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
  """A tiny CLIP state dict saved by torch.save (zip), as open_clip's exported models are."""
  state = _clip_state()
  path = tmp_path_factory.mktemp("clip_text") / "tiny.pt"
  write_zip(path, _torch_tree(state))
  return state, path


def _flat(variables):
  return traverse_util.flatten_dict(jax.tree.map(np.asarray, variables), sep="/")


def _assert_same_variables(got, want):
  got, want = _flat(got), _flat(want)
  assert sorted(got) == sorted(want)
  for name in want:
    assert got[name].dtype == np.float32, name
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# --- tests --------------------------------------------------------------------------------------

def test_checkpoint_matches_numpy_forward(tiny_ckpt, tokenizer_dir):
  state, path = tiny_ckpt
  module, variables = clip_text.load_weights(path)
  assert module == clip_text.TextTransformer(**TEXT)
  shapes = _flat(variables)
  assert shapes["params/resblocks_1/attn/in_proj/kernel"].shape == (128, 384)
  assert shapes["params/text_projection"].shape == (128, TINY.embed_dim)
  tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
  prompts = ["a photo of a cat.", "a dog.", "a bird in a cat."]
  # rrjax pads to the longest prompt with end-of-text tokens; the reference sees OpenAI's
  # layout, zeros to the full context: equal only if nothing attends past the pooled token.
  ids = tokenizer(prompts, padding=True, return_tensors="np")["input_ids"]
  got = np.asarray(jax.jit(module.apply)(variables, ids))
  want = _np_text_features(_openai_tokens(tokenizer, prompts, 16), state, heads=2)
  assert got.shape == (3, TINY.embed_dim) and np.abs(want).max() > 0.5
  print(f"max abs diff vs numpy {np.abs(got - want).max():.2e}")
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # The prompts' features differ by far more than the tolerance.
  assert np.abs(want[0] - want[2]).max() > 0.1


def test_checkpoint_formats_load_alike(tiny_ckpt, tmp_path):
  state, path = tiny_ckpt
  want = clip_text.load_weights(path)[1]
  # open_clip's training checkpoints: nested under "state_dict", DDP's "module." prefix.
  nested = tmp_path / "epoch_1.pt"
  wrapped = collections.OrderedDict((f"module.{k}", v) for k, v in _torch_tree(state).items())
  write_zip(nested, {"epoch": 1, "name": "RN-tiny", "state_dict": wrapped})
  _assert_same_variables(clip_text.load_weights(nested)[1], want)

  # OpenAI's files: TorchScript archives of the whole model in float16, whose blocks keep
  # their causal mask as a tensor attribute.
  half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in state.items()}
  mask = np.triu(np.full((16, 16), -np.inf, np.float16), k=1)
  for i in range(TEXT["layers"]):
    half[f"transformer.resblocks.{i}.attn_mask"] = mask
  archive = tmp_path / "RN-tiny.pt"
  write_torchscript(archive, half)
  assert "transformer.resblocks.1.attn_mask" in torch_reader.read(archive)
  module, got = clip_text.load_weights(archive)
  assert module == clip_text.TextTransformer(**TEXT)
  _assert_same_variables(got, clip_text.from_torch_state_dict(
      {k: v.astype(np.float32) for k, v in half.items()})[1])


def test_infers_config_from_shapes(tiny_ckpt):
  state, _ = tiny_ckpt
  assert clip_text.infer_config(state) == TEXT
  assert clip_text.infer_config(state, heads=4)["heads"] == 4
  # RN101's text tower (broadcast views: no real memory).
  zeros = lambda *shape: np.broadcast_to(np.float32(0), shape)
  rn101 = {"token_embedding.weight": zeros(49408, 512), "positional_embedding": zeros(77, 512),
           "text_projection": zeros(512, 512)}
  for i in range(12):
    rn101[f"transformer.resblocks.{i}.mlp.c_fc.weight"] = zeros(2048, 512)
  assert clip_text.infer_config(rn101) == {
      "vocab_size": 49408, "context_length": 77, "width": 512, "layers": 12, "heads": 8,
      "mlp_width": 2048, "embed_dim": 512}


def test_malformed_checkpoints_name_the_tensor(tiny_ckpt, tokenizer_dir, tmp_path):
  state, _ = tiny_ckpt
  image_only = {k: v for k, v in state.items() if k.startswith("visual.")}
  with pytest.raises(ValueError, match="no CLIP text-tower tensors"):
    clip_text.from_torch_state_dict(image_only)
  missing = {k: v for k, v in state.items() if k != "ln_final.bias"}
  with pytest.raises(ValueError, match=r"missing tensor 'ln_final\.bias' for Flax variable "
                                       r"params/ln_final/bias \(128,\)"):
    clip_text.from_torch_state_dict(missing)
  with pytest.raises(ValueError, match=r"missing tensor 'text_projection'"):
    clip_text.from_torch_state_dict({k: v for k, v in state.items() if k != "text_projection"})
  bad = dict(state)
  bad["transformer.resblocks.1.attn.in_proj_weight"] = np.zeros((3 * 128, 96), np.float32)
  with pytest.raises(ValueError, match=r"'transformer\.resblocks\.1\.attn\.in_proj_weight' has "
                                       r"shape \(384, 96\)"):
    clip_text.from_torch_state_dict(bad)
  with pytest.raises(ValueError, match=r"unexpected tensor 'transformer\.resblocks\.0\.ls_1'"):
    clip_text.from_torch_state_dict({**state, "transformer.resblocks.0.ls_1": np.ones(128)})
  with pytest.raises(ValueError, match=r"text width 96 is not a multiple of 64.*heads="):
    clip_text.from_torch_state_dict(_text_state(width=96))
  # Through the file reader: a damaged file is refused by it, with its own error.
  damaged = tmp_path / "damaged.pt"
  damaged.write_bytes(b"PK\x03\x04 not a zip")
  with pytest.raises(torch_reader.CheckpointError, match="corrupt zip"):
    zeroshot.classifier_for_teacher("clip_rn101", str(damaged), CLASSES, tokenizer=tokenizer_dir)

