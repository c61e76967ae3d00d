"""CLIP image towers in OpenAI's PyTorch layout, both ways: for PyTorch users and from the hub.

    state = openai_layout.to_state_dict(variables)             # {"visual.conv1.weight": ...}
    weights_io.save_safetensors("student.safetensors", state)  # a flat dict: keys kept

    # PyTorch, open_clip (a tower of the same architecture and activation):
    model.load_state_dict(safetensors.torch.load_file("student.safetensors"), strict=False)
    model.visual.load_state_dict(...)   # with to_state_dict(variables, prefix="")

OpenAI's `clip` package and open_clip name the image tower's tensors identically
(`visual.conv1.weight`, `visual.transformer.resblocks.0.attn.in_proj_weight`, ...). One mapping
per family serves both directions:
  * ModifiedResNet (`clip_resnet`): its Flax modules are named after the PyTorch ones, so
    `clip_resnet._torch_key` names every variable (BatchNorm running statistics included) and
    `clip_resnet._to_flax` / `_to_torch` change the kernels' layout;
  * ViT (`clip_vit`, transformers' Flax CLIP port, HF naming): the table `_VIT` below. HF keeps
    q, k and v as three Linear layers where OpenAI has one `in_proj_weight` holding them
    stacked `[q; k; v]` along the output axis, names the pre-transformer LayerNorm
    `pre_layrnorm` (sic) where OpenAI has `ln_pre`, and applies `visual_projection` as a Dense
    kernel `(width, embed)`, which is OpenAI's `proj` as it is (`pooled @ proj`).

What a state dict does not hold, the PyTorch side must be told: the architecture (open_clip's
`vision_cfg`: `vision_cfg(module)`) and, for ViTs, the activation: OpenAI's weights use
QuickGELU (open_clip's `-quickgelu` model names), most LAION ones GELU (`hidden_act` of the
tower's config). BatchNorm's `num_batches_tracked` counters are not written: PyTorch fills them
in when a state dict lacks them, even with `strict=True`.
"""

import numpy as np
from flax import traverse_util

from rrjax import errors
from rrjax.models import clip_resnet, weights_io

VISUAL = "visual."

# The ViT tower, one row per tensor: (Flax path under the encoder's `params/clip`, OpenAI name,
# layout in `weights_io.LAYOUTS`, index of the part in a [q; k; v] stack or None). `{i}` is the
# block.
_VIT = (
    ("vision_model/embeddings/class_embedding", "class_embedding", "copy", None),
    ("vision_model/embeddings/patch_embedding/kernel", "conv1.weight", "conv", None),
    ("vision_model/embeddings/position_embedding/embedding", "positional_embedding", "copy",
     None),
    ("vision_model/pre_layrnorm/scale", "ln_pre.weight", "copy", None),
    ("vision_model/pre_layrnorm/bias", "ln_pre.bias", "copy", None),
    ("vision_model/encoder/layers/{i}/layer_norm1/scale", "transformer.resblocks.{i}.ln_1.weight",
     "copy", None),
    ("vision_model/encoder/layers/{i}/layer_norm1/bias", "transformer.resblocks.{i}.ln_1.bias",
     "copy", None),
    ("vision_model/encoder/layers/{i}/self_attn/q_proj/kernel",
     "transformer.resblocks.{i}.attn.in_proj_weight", "linear", 0),
    ("vision_model/encoder/layers/{i}/self_attn/k_proj/kernel",
     "transformer.resblocks.{i}.attn.in_proj_weight", "linear", 1),
    ("vision_model/encoder/layers/{i}/self_attn/v_proj/kernel",
     "transformer.resblocks.{i}.attn.in_proj_weight", "linear", 2),
    ("vision_model/encoder/layers/{i}/self_attn/q_proj/bias",
     "transformer.resblocks.{i}.attn.in_proj_bias", "copy", 0),
    ("vision_model/encoder/layers/{i}/self_attn/k_proj/bias",
     "transformer.resblocks.{i}.attn.in_proj_bias", "copy", 1),
    ("vision_model/encoder/layers/{i}/self_attn/v_proj/bias",
     "transformer.resblocks.{i}.attn.in_proj_bias", "copy", 2),
    ("vision_model/encoder/layers/{i}/self_attn/out_proj/kernel",
     "transformer.resblocks.{i}.attn.out_proj.weight", "linear", None),
    ("vision_model/encoder/layers/{i}/self_attn/out_proj/bias",
     "transformer.resblocks.{i}.attn.out_proj.bias", "copy", None),
    ("vision_model/encoder/layers/{i}/layer_norm2/scale", "transformer.resblocks.{i}.ln_2.weight",
     "copy", None),
    ("vision_model/encoder/layers/{i}/layer_norm2/bias", "transformer.resblocks.{i}.ln_2.bias",
     "copy", None),
    ("vision_model/encoder/layers/{i}/mlp/fc1/kernel", "transformer.resblocks.{i}.mlp.c_fc.weight",
     "linear", None),
    ("vision_model/encoder/layers/{i}/mlp/fc1/bias", "transformer.resblocks.{i}.mlp.c_fc.bias",
     "copy", None),
    ("vision_model/encoder/layers/{i}/mlp/fc2/kernel",
     "transformer.resblocks.{i}.mlp.c_proj.weight", "linear", None),
    ("vision_model/encoder/layers/{i}/mlp/fc2/bias", "transformer.resblocks.{i}.mlp.c_proj.bias",
     "copy", None),
    ("vision_model/post_layernorm/scale", "ln_post.weight", "copy", None),
    ("vision_model/post_layernorm/bias", "ln_post.bias", "copy", None),
    ("visual_projection/kernel", "proj", "copy", None),
)
_QKV = 3  # parts of an in_proj stack


def _vit_rows(num_layers: int) -> dict[tuple[str, ...], tuple[str, str, int | None]]:
  """`{Flax path: (OpenAI name, layout, part)}` of a ViT tower of `num_layers` blocks."""
  out = {}
  for flax, name, layout, part in _VIT:
    for i in range(num_layers) if "{i}" in flax else (None,):
      out[tuple(flax.format(i=i).split("/"))] = (name.format(i=i), layout, part)
  return out


def _num_layers(paths) -> int:
  return len({p[3] for p in paths if p[:3] == ("vision_model", "encoder", "layers")})


def family(variables) -> str | None:
  """"vit" for a `clip_vit` tower's variables, "resnet" for a `clip_resnet` one's, else None:
  whether `to_state_dict` applies."""
  params = variables.get("params", {})
  return "vit" if "clip" in params else "resnet" if "attnpool" in params else None


def to_state_dict(variables, prefix: str = VISUAL) -> dict[str, np.ndarray]:
  """The PyTorch state dict of a CLIP image tower's Flax variables, in OpenAI's naming.

  Args:
    variables: `{"params": ..., "batch_stats"?: ...}` of a `clip_resnet.ModifiedResNet` or a
      `clip_vit.CLIPVisionEncoder` with `head="embed"` (host or device arrays).
    prefix: prepended to every name: "visual." (default) as in a whole CLIP model's state
      dict (open_clip's `model.load_state_dict(..., strict=False)`, rrjax's loaders), "" as
      `model.visual.load_state_dict` takes it.

  Returns:
    `{name: float32 numpy array}` in PyTorch's layouts (OIHW convs, (out, in) Linear weights),
    each a writable C-contiguous copy.

  Raises:
    rrjax.errors.UserError: the variables are no CLIP tower's, or hold a classifier `fc`
      (`head="logits"`), which the PyTorch tower has no place for.
  """
  kind = family(variables)
  if kind is None:
    raise errors.UserError("not the variables of a CLIP image tower: expected params/clip (a "
                           "clip_vit tower) or params/attnpool (a clip_resnet tower), found "
                           f"{sorted(map(str, variables.get('params', variables)))[:6]}")
  params = variables["params"]
  if "fc" in params:
    raise errors.UserError("the variables hold a classifier (params/fc, head='logits'), which "
                           "the PyTorch image tower has no place for: export the embedding "
                           "tower (head='embed') and save the classifier on its own")
  if kind == "resnet":
    flat = traverse_util.flatten_dict(
        {k: v for k, v in variables.items() if k in ("params", "batch_stats")})
    return {prefix + clip_resnet._torch_key(path): _owned(clip_resnet._to_torch(value, path[-1]))
            for path, value in sorted(flat.items())}
  flat = traverse_util.flatten_dict(params["clip"])
  rows = _vit_rows(_num_layers(flat))
  parts: dict[str, dict[int | None, np.ndarray]] = {}
  for path, value in flat.items():
    name, layout, part = rows[path]
    parts.setdefault(name, {})[part] = weights_io.LAYOUTS[layout][1](
        np.asarray(value, np.float32))
  return {prefix + name: _owned(stack[None] if None in stack else
                                np.concatenate([stack[i] for i in range(_QKV)]))
          for name, stack in sorted(parts.items())}


def _owned(value: np.ndarray) -> np.ndarray:
  # A writable C-contiguous copy: what `torch.from_numpy` and the safetensors writer take as
  # they are (a transposed view of a device array is neither).
  return np.array(value, np.float32, order="C")


def vit_from_state_dict(visual: dict, shapes: dict, *, source: str,
                        prefix: str = VISUAL) -> dict:
  """`clip_vit.VisionWithProjection` params from a ViT tower's tensors in OpenAI's naming.

  Args:
    visual: `{"conv1.weight": array, ...}`, named relative to the tower
      (`clip_resnet.visual_tensors`).
    shapes: `{Flax path: shape}` of the params the target tower expects
      (`clip_vit.param_shapes`).
    source, prefix: name the file and the tensors' prefix in errors.

  Returns:
    The nested params, float32 numpy arrays.

  Raises:
    rrjax.errors.UserError: naming the first tensor (in sorted order) that is missing, not part
      of the tower, or of the wrong shape.
  """
  rows = _vit_rows(_num_layers(shapes))
  wanted = {row[0] for row in rows.values()}
  for name in sorted(wanted | set(visual)):
    if name not in visual:
      raise errors.UserError(f"{source}: missing tensor {prefix + name!r}; not a CLIP ViT tower "
                             "of this architecture")
    if name not in wanted:
      raise errors.UserError(f"{source}: unexpected tensor {errors.quote(prefix + name)} "
                             f"{tuple(np.shape(visual[name]))}, not part of a CLIP ViT tower of "
                             f"{_num_layers(shapes)} blocks; weights of another architecture?")
  flat = {}
  for path, (name, layout, part) in sorted(rows.items()):
    value = np.asarray(visual[name], np.float32)
    if value.ndim != len(shapes[path]):
      raise errors.UserError(f"{source}: tensor {prefix + name!r} has shape {value.shape}, "
                             f"not {len(shapes[path])}-dimensional; weights of another "
                             "architecture?")
    if part is not None:
      if value.shape[0] % _QKV:
        raise errors.UserError(f"{source}: tensor {prefix + name!r} has shape {value.shape}; a "
                               "[q; k; v] stack needs a first dimension divisible by 3")
      value = np.split(value, _QKV)[part]
    value = weights_io.LAYOUTS[layout][0](value)
    if value.shape != tuple(shapes[path]):
      raise errors.UserError(f"{source}: tensor {prefix + name!r} has shape "
                             f"{tuple(np.shape(visual[name]))}, but {'/'.join(path)} expects "
                             f"{tuple(shapes[path])} in Flax layout; weights of another "
                             "architecture?")
    flat[path] = value
  return traverse_util.unflatten_dict(flat)


def vision_cfg(module) -> dict:
  """open_clip's model config for `module`'s tower: `{"embed_dim", "vision_cfg", "quick_gelu"}`.

  The PyTorch tower a state dict of `to_state_dict` loads into is
  `open_clip.model._build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], cfg["quick_gelu"])`,
  or a whole CLIP of that `embed_dim`, `vision_cfg` and `quick_gelu` with any text tower.
  """
  if hasattr(module, "layers"):  # clip_resnet.ModifiedResNet
    return {"embed_dim": module.embed_dim, "quick_gelu": False,
            "vision_cfg": {"image_size": module.resolution, "layers": list(module.layers),
                           "width": module.width, "head_width": module.width * 32 // module.heads,
                           "patch_size": None}}
  config = module.config  # clip_vit.CLIPVisionEncoder
  if config.hidden_act not in ("gelu", "quick_gelu"):
    raise errors.UserError(f"open_clip has no {config.hidden_act!r} activation (gelu or "
                           "quick_gelu)")
  return {"embed_dim": config.projection_dim, "quick_gelu": config.hidden_act == "quick_gelu",
          "vision_cfg": {"image_size": config.image_size, "layers": config.num_hidden_layers,
                         "width": config.hidden_size, "patch_size": config.patch_size,
                         "head_width": config.hidden_size // config.num_attention_heads,
                         "mlp_ratio": config.intermediate_size / config.hidden_size}}
