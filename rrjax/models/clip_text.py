"""CLIP's text tower (Radford et al., 2021) in Flax, loaded from OpenAI / open_clip checkpoints.

    module, variables = clip_text.load_weights("~/.cache/clip/RN101.pt")
    features = module.apply(variables, token_ids)   # int [B, L] -> [B, embed_dim]

OpenAI's `.pt` files (TorchScript archives) and open_clip's checkpoints of the ResNet models
hold the text tower next to the image tower (`rrjax.models.clip_resnet`), under top-level
names: `token_embedding`, `positional_embedding`, `transformer.resblocks.N.*`, `ln_final`,
`text_projection`. The computation, with L <= context_length tokens:

    x = token_embedding[ids] + positional_embedding[:L]                  # [B, L, width]
    x = x + attn(ln_1(x)), x = x + mlp(ln_2(x))   per block              # pre-LN residual
    x = ln_final(x)[b, argmax(ids[b])] @ text_projection                 # [B, embed_dim]

`attn` is causal multi-head self-attention (token i sees tokens <= i) with one fused q/k/v
projection (PyTorch `nn.MultiheadAttention`'s `in_proj_weight`, q, k, v stacked on the output
axis); `mlp` is Linear, QuickGELU (`x * sigmoid(1.702 x)`), Linear; LayerNorms use eps 1e-5.
Pooling takes the end-of-text token's features, found as the largest token id of each sequence
(CLIP's vocabulary ends with its end-of-text token). With causal attention, what follows it
(padding of any length, by ids no larger than end-of-text's) changes nothing, so sequences
need not be padded to `context_length` as OpenAI's tokenizer does.

Module and parameter names mirror the state dict (`resblocks_3/attn/in_proj/kernel` is
`transformer.resblocks.3.attn.in_proj_weight`), so `from_torch_state_dict` maps tensors by
name and refuses another architecture naming the offending tensor. Everything runs in float32.
"""

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from rrjax import errors
from rrjax.models import clip_resnet, weights_io

# OpenAI's and open_clip's convention, which the shapes do not record: 64-wide heads.
HEAD_WIDTH = 64
_TOP_LEVEL = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.",
              "text_projection")


def quick_gelu(x: jax.Array) -> jax.Array:
  """CLIP's GELU approximation, `x * sigmoid(1.702 x)`."""
  return x * jax.nn.sigmoid(1.702 * x)


class CausalSelfAttention(nn.Module):
  """Multi-head self-attention where token i attends to tokens <= i: `[B, L, W] -> [B, L, W]`."""
  heads: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, length, width = x.shape
    head_dim = width // self.heads
    qkv = nn.Dense(3 * width, name="in_proj")(x).reshape(b, length, 3, self.heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each [B, L, heads, head_dim]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * head_dim ** -0.5, k)
    causal = jnp.tril(jnp.ones((length, length), bool))
    logits = jnp.where(causal, logits, -jnp.inf)
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
    return nn.Dense(width, name="out_proj")(out.reshape(b, length, width))


class Mlp(nn.Module):
  """`c_fc`, QuickGELU, `c_proj`: `[B, L, W] -> [B, L, W]`."""
  hidden: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = quick_gelu(nn.Dense(self.hidden, name="c_fc")(x))
    return nn.Dense(x.shape[-1], name="c_proj")(y)


class ResidualAttentionBlock(nn.Module):
  """Pre-LN transformer block: `x + attn(ln_1(x))`, then `+ mlp(ln_2(x))`; `[B, L, W]`."""
  heads: int
  mlp_width: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    norm = functools.partial(nn.LayerNorm, epsilon=1e-5)
    x = x + CausalSelfAttention(self.heads, name="attn")(norm(name="ln_1")(x))
    return x + Mlp(self.mlp_width, name="mlp")(norm(name="ln_2")(x))


class TextTransformer(nn.Module):
  """CLIP's text tower: token ids `[B, L]` (L <= context_length) -> `[B, embed_dim]`.

  The output is the projected features of each sequence's end-of-text token, i.e. its largest
  id (not normalised). See the module docstring for the computation.

  Attributes:
    vocab_size: rows of the token embedding (49408 for OpenAI's models).
    context_length: rows of the positional embedding, the longest sequence (77).
    width: residual width (512 for RN50 and RN101).
    layers: residual attention blocks (12).
    heads: attention heads; `width` must be divisible by it (OpenAI: `width // 64`).
    mlp_width: hidden width of the blocks' MLPs (`4 * width` in CLIP).
    embed_dim: output width, that of the image tower's embedding (1024 RN50, 512 RN101).
  """
  vocab_size: int
  context_length: int
  width: int
  layers: int
  heads: int
  mlp_width: int
  embed_dim: int

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    b, length = tokens.shape
    if length > self.context_length:
      raise ValueError(f"{length} tokens exceed the text tower's context length "
                       f"{self.context_length}; truncate the prompts")
    if self.width % self.heads:
      raise ValueError(f"text width {self.width} is not divisible by heads={self.heads}")
    std = self.width ** -0.5
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                 name="token_embedding")(tokens)
    pos = self.param("positional_embedding", nn.initializers.normal(0.01),
                     (self.context_length, self.width))
    x = x + pos[:length]
    for i in range(self.layers):
      x = ResidualAttentionBlock(self.heads, self.mlp_width, name=f"resblocks_{i}")(x)
    x = nn.LayerNorm(epsilon=1e-5, name="ln_final")(x)
    x = x[jnp.arange(b), jnp.argmax(tokens, axis=-1)]
    projection = self.param("text_projection", nn.initializers.normal(std),
                            (self.width, self.embed_dim))
    return x @ projection


# --- PyTorch checkpoints ----------------------------------------------------------------------

# Flax leaf name -> state-dict suffix.
_LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
_BLOCK = "resblocks_"


def _torch_key(path: tuple[str, ...]) -> str:
  """('params', 'resblocks_3', 'attn', 'in_proj', 'kernel') ->
  'transformer.resblocks.3.attn.in_proj_weight'; top-level parameters keep their name."""
  *modules, leaf = path[1:]
  if not modules:
    return leaf
  if modules[0].startswith(_BLOCK):
    modules = ["transformer", "resblocks", modules[0][len(_BLOCK):], *modules[1:]]
  if modules[-1] == "in_proj":
    # nn.MultiheadAttention keeps the fused q/k/v projection as two bare parameters.
    return ".".join(modules[:-1]) + f".in_proj_{_LEAVES[leaf]}"
  return ".".join(modules + [_LEAVES[leaf]])


def _to_flax(value: np.ndarray, leaf: str) -> np.ndarray:
  """A float32 tensor for Flax leaf `leaf`: Linear kernels (out, in) -> (in, out).

  `text_projection` needs no transpose: CLIP multiplies by it from the right already.
  """
  value = np.asarray(value, np.float32)
  return value.T if leaf == "kernel" else value


def text_tensors(state: dict[str, np.ndarray], source: str = "state dict") -> dict:
  """The text tower's tensors of a CLIP state dict.

  Accepts OpenAI's naming (top-level `token_embedding.weight`, ..., also as read from their
  TorchScript `.pt`) and open_clip's training checkpoints (`{"state_dict":
  {"module.token_embedding.weight": ...}}`, read flat as `state_dict.module....`). The image
  tower (`visual.`), `logit_scale` and the causal `attn_mask`s some files store are dropped.

  Returns:
    `{"token_embedding.weight": array, ...}`.

  Raises:
    ValueError: the dict holds none of the text tower's tensors, e.g. an image-only file or
      open_clip's `CustomTextCLIP` (whose text tower lives under `text.`).
  """
  keep = lambda name: (name if name.startswith(_TOP_LEVEL) and not name.endswith("attn_mask")
                       else None)
  out = weights_io.select_tensors(state, keep, source=source)
  if not out:
    found = ", ".join(errors.quote(k, 60) for k in sorted(state)[:5])
    raise errors.UserError(f"{source}: no CLIP text-tower tensors (token_embedding.weight, "
                           f"transformer.resblocks.*, ...); found e.g. {found or 'no tensors'}")
  return out


def infer_config(state: dict[str, np.ndarray], heads: int | None = None,
                 source: str = "state dict") -> dict:
  """Reads the text tower's configuration off a CLIP state dict's tensor shapes.

  Args:
    state: a CLIP state dict in any naming `text_tensors` accepts; only shapes are used.
    heads: attention heads; None for OpenAI's convention, `width // 64`.
    source: names the file in error messages.

  Returns:
    The `TextTransformer` fields, e.g. RN101's `{"vocab_size": 49408, "context_length": 77,
    "width": 512, "layers": 12, "heads": 8, "mlp_width": 2048, "embed_dim": 512}`.
  """
  return _infer(text_tensors(state, source), heads, source)


def _infer(text: dict[str, np.ndarray], heads: int | None, source: str) -> dict:
  """`infer_config` on the output of `text_tensors`."""
  shapes = {}
  for key, ndim in (("token_embedding.weight", 2), ("positional_embedding", 2),
                    ("text_projection", 2), ("transformer.resblocks.0.mlp.c_fc.weight", 2)):
    if key not in text:
      raise errors.UserError(f"{source}: missing tensor {key!r}; not a CLIP checkpoint with "
                             "OpenAI's text tower")
    shapes[key] = np.shape(weights_io.shaped(text, key, ndim, source=source))
  vocab_size, width = shapes["token_embedding.weight"]
  if heads is None:
    if width % HEAD_WIDTH:
      raise errors.UserError(f"{source}: text width {width} is not a multiple of {HEAD_WIDTH}, so "
                             f"CLIP's heads = width // {HEAD_WIDTH} does not apply; pass heads=")
    heads = width // HEAD_WIDTH
  prefix = "transformer.resblocks."
  layers = len({key[len(prefix):].split(".")[0] for key in text if key.startswith(prefix)})
  return {"vocab_size": vocab_size, "context_length": shapes["positional_embedding"][0],
          "width": width, "layers": layers, "heads": heads,
          "mlp_width": shapes["transformer.resblocks.0.mlp.c_fc.weight"][0],
          "embed_dim": shapes["text_projection"][1]}


def from_torch_state_dict(state: dict[str, np.ndarray], heads: int | None = None, *,
                          source: str = "state dict") -> tuple[TextTransformer, dict]:
  """Converts the text tower of a CLIP PyTorch state dict to a Flax module and variables.

  Args:
    state: a CLIP state dict in OpenAI's or open_clip's naming (see `text_tensors`), e.g. from
      `clip_resnet.read_state_dict`; other tensors are ignored.
    heads: attention heads; None for OpenAI's convention, `width // 64`.
    source: names the file in error messages.

  Returns:
    `(module, {"params": ...})`, the architecture read off the tensor shapes, float32 numpy
    parameters.

  Raises:
    ValueError: naming the first text tensor (in sorted order) that is missing, not part of
      the architecture, or of the wrong shape: the sign of weights of another architecture.
  """
  text = text_tensors(state, source)
  module = TextTransformer(**_infer(text, heads, source))
  variables = weights_io.match_state_dict(
      text, _variable_shapes(module), _torch_key, _to_flax, source=source,
      arch=f"a CLIP text tower with {module.layers} blocks of width {module.width}")
  return module, variables


def _variable_shapes(module: TextTransformer) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Flat `{path: shape}` of the module's variables, from tracing alone (no computation)."""
  tree = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(tree).items()}


def load_weights(path: str | os.PathLike,
                 heads: int | None = None) -> tuple[TextTransformer, dict]:
  """`(module, variables)` of the text tower in a CLIP checkpoint file.

  Args:
    path: OpenAI's TorchScript `.pt`, an open_clip checkpoint (`torch.save` zip or legacy, or
      `.safetensors`), read as data by `clip_resnet.read_state_dict`.
    heads: see `from_torch_state_dict`.
  """
  return from_torch_state_dict(clip_resnet.read_state_dict(path), heads,
                               source=os.fspath(path))
