"""CLIP ViT image towers (Radford et al., 2021) through transformers' Flax CLIP port.

    module, variables = rrjax.models.load("clip_vit_b32", weights="/path/to/clip-vit-base-patch32")
    emb = module.apply(variables, images)   # [B, H, W, 3] in [0, 1] -> image_embeds [B, 512]

The port's linen modules are used as they are, inside an rrjax module that follows the encoder
contract (resize and CLIP normalisation inside, `train` flag, `embed` / `logits` heads), so the
tower composes with jit, grad and the TrainState like any other encoder.

Layout: the port's *wrappers* (`FlaxCLIPModel.get_image_features`, `FlaxCLIPVisionModel`) take
PyTorch-style NCHW `pixel_values` and transpose them to NHWC before calling their inner linen
module, whose patch embedding is a channels-last `nn.Conv` (the PyTorch-to-Flax weight
converter transposes the OIHW conv kernel to HWIO). The encoder here calls the inner modules,
so `prepare`'s NHWC output goes in without a transpose.

transformers has a PyTorch `CLIPVisionModelWithProjection` but no Flax one, so
`VisionWithProjection` is its linen twin: the port's `FlaxCLIPVisionTransformer` as
`vision_model` and a bias-free `visual_projection`, the names `FlaxCLIPModule` and the PyTorch
state dicts use. Full CLIP checkpoints (the hub's, whose text tower is dropped on load) and
vision-with-projection checkpoints, Flax or PyTorch, therefore load alike.

Images of another size are resized bilinearly to the tower's fixed `image_size`; the hub's
`CLIPImageProcessor` instead resizes bicubically and centre-crops, so feed square images when
comparing with embeddings computed through it.
"""

import contextlib
import functools
import json
import os
import stat
import types
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import msgpack
import safetensors
from flax import traverse_util
from transformers import AutoConfig, CLIPConfig, CLIPVisionConfig
from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax
from transformers.models.clip.modeling_flax_clip import (FlaxCLIPVisionPreTrainedModel,
                                                         FlaxCLIPVisionTransformer)

from rrjax import errors
from rrjax.models import register, torch_reader, weights_io
from rrjax.models.preprocess import CLIP_MEAN, CLIP_STD, prepare

HEADS = ("embed", "logits")

# Published towers: hub checkpoint and CLIPVisionConfig fields (for random initialisations).
HUB_NAMES = {
    "clip_vit_b32": "openai/clip-vit-base-patch32",
    "clip_vit_b16": "openai/clip-vit-base-patch16",
    "clip_vit_l14": "openai/clip-vit-large-patch14",
}
ARCHS = {
    "clip_vit_b32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, patch_size=32, projection_dim=512),
    "clip_vit_b16": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, patch_size=16, projection_dim=512),
    "clip_vit_l14": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                         num_attention_heads=16, patch_size=14, projection_dim=768),
}

# The CLIPVisionConfig fields that define the computation. The encoder stores them as a tuple
# rather than the config object: configs are unhashable, and modules are static jit arguments.
_ARCH_FIELDS = ("hidden_size", "intermediate_size", "projection_dim", "num_hidden_layers",
                "num_attention_heads", "num_channels", "image_size", "patch_size", "hidden_act",
                "layer_norm_eps", "attention_dropout")


class VisionWithProjection(nn.Module):
  """The port's vision transformer + projection, PyTorch's `CLIPVisionModelWithProjection`.

  Maps normalised NHWC pixels `[B, image_size, image_size, C]` to `image_embeds`
  `[B, projection_dim]` (not normalised, float32). The transformer computes in `dtype`; the
  projection to the embedding is float32 whatever the compute dtype (module docs of
  rrjax.models).
  """
  config: CLIPVisionConfig
  dtype: Any = jnp.float32

  def setup(self):
    self.vision_model = FlaxCLIPVisionTransformer(self.config, dtype=self.dtype)
    self.visual_projection = nn.Dense(self.config.projection_dim, use_bias=False,
                                      dtype=jnp.float32,
                                      kernel_init=jax.nn.initializers.normal(0.02))

  def __call__(self, pixel_values: jax.Array, deterministic: bool = True) -> jax.Array:
    outputs = self.vision_model(pixel_values, deterministic=deterministic)
    return self.visual_projection(outputs.pooler_output.astype(jnp.float32))


class _FlaxVisionWithProjection(FlaxCLIPVisionPreTrainedModel):
  """HF wrapper of `VisionWithProjection`, used only to load weights (`load_pretrained`)."""
  module_class = VisionWithProjection


class CLIPVisionEncoder(nn.Module):
  """CLIP image tower: images `[B, H, W, 1|3]` in [0, 1] -> `[B, embed_dim]` or `[B, C]`.

  Attributes:
    arch: `(field, value)` pairs of the `CLIPVisionConfig` (see `arch_of`).
    resolution: input size; must equal the config's `image_size`, which fixes the number of
      position embeddings. Images of any size are resized to it.
    head: "embed" for the projected `image_embeds`, "logits" for a fresh `Dense(num_classes)`
      on them (fine-tuning baselines; CLIP has no classifier of its own).
    num_classes: classifier width for `head="logits"`.
    dtype: compute dtype of the transformer (the projection to the embedding, the
      classifier, the parameters and the returned output are float32).
  """
  # The normalisation `prepare` applies inside (an exported encoder states it).
  MEAN, STD = CLIP_MEAN, CLIP_STD
  arch: tuple[tuple[str, Any], ...]
  resolution: int = 224
  head: str = "embed"
  num_classes: int = 0
  dtype: Any = jnp.float32

  def __post_init__(self):
    super().__post_init__()
    if self.head not in HEADS:
      raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
    if self.head == "logits" and self.num_classes < 1:
      raise ValueError("CLIP towers have no classifier: head='logits' needs num_classes=<C> "
                       "for a fresh Dense on the embedding")
    image_size = dict(self.arch)["image_size"]
    if self.resolution != image_size:
      raise errors.UserError("this CLIP tower's position embeddings fix its input at "
                             f"{image_size}x{image_size}: resolution must be {image_size}, got "
                             f"{self.resolution} (inputs of any size are resized to it)")

  @property
  def config(self) -> CLIPVisionConfig:
    return CLIPVisionConfig(**dict(self.arch))

  @property
  def embed_dim(self) -> int:
    return dict(self.arch)["projection_dim"]

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    x = prepare(images, self.resolution, self.MEAN, self.STD).astype(self.dtype)
    # NHWC as it is: the inner module is channels-last (only the HF wrappers take NCHW).
    # CLIP has no BatchNorm; `train` only switches dropout, whose rates are 0 in CLIP.
    x = VisionWithProjection(self.config, dtype=self.dtype, name="clip")(
        x, deterministic=not train)
    if self.head == "logits":
      x = nn.Dense(self.num_classes, name="fc")(x)
    return x


def arch_of(config: CLIPVisionConfig) -> tuple[tuple[str, Any], ...]:
  """The hashable `CLIPVisionEncoder.arch` of `config`."""
  return tuple((field, getattr(config, field)) for field in _ARCH_FIELDS)


def param_shapes(config: CLIPVisionConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Flat `{path: shape}` of `VisionWithProjection(config)`'s params, from tracing alone."""
  pixels = jnp.zeros((1, config.image_size, config.image_size, config.num_channels))
  tree = jax.eval_shape(VisionWithProjection(config).init, jax.random.key(0), pixels)
  return {path: tuple(leaf.shape)
          for path, leaf in traverse_util.flatten_dict(tree["params"]).items()}


# Files transformers may open in a local HF directory (weights, their shard indexes, configs,
# tokenizer); `check_local_source` checks each one that is there.
_HF_FILES = ("config.json", "flax_model.msgpack", "flax_model.msgpack.index.json",
             "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
             "pytorch_model.bin.index.json", "preprocessor_config.json", "tokenizer_config.json",
             "tokenizer.json", "special_tokens_map.json", "vocab.json", "merges.txt",
             "added_tokens.json", "generation_config.json")
_MAX_JSON_BYTES = 4 << 20
_MAX_ENTRIES = 10_000  # files and folders of a weights directory


def check_local_source(source: str) -> None:
  """Refuses a local HF directory that would make transformers run code or read outside it.

  Weights directories are data: a `config.json` (or `tokenizer_config.json`) with an `auto_map`
  asks transformers to import Python files of the directory; a shard index (`*.index.json`)
  and the tokenizer config's `*_file` entries name files to read next, which must be plain names
  of files inside the directory; and every entry of the directory must be a regular file or a
  folder inside it (no link out of it, no FIFO or device, which would block or flood a read).
  A hub name (no such directory) is left to transformers, which then reads only its own cache.

  Raises:
    rrjax.errors.UserError: naming the directory, the file and the problem.
  """
  if not os.path.isdir(source):
    return
  root = os.path.realpath(source)
  # A snapshot of the Hugging Face cache (`.../models--org--name/snapshots/<revision>`) links
  # each file to the cache's content store, `.../models--org--name/blobs`: inside too.
  allowed = [root]
  if os.path.basename(os.path.dirname(root)) == "snapshots":
    allowed.append(os.path.join(os.path.dirname(os.path.dirname(root)), "blobs"))

  def inside(name: str) -> bool:
    path = os.path.realpath(os.path.join(root, name))
    return any(path == top or path.startswith(top + os.sep) for top in allowed)

  def refuse(name: str, problem: str):
    where = os.path.join(source, errors.quote(name)[1:-1] if len(name) > 100 else name)
    raise errors.UserError(f"{where}: {problem}; rrjax reads weights directories as data only")

  seen = 0
  for folder, dirs, files in os.walk(root):  # links to folders are not followed
    if os.path.relpath(folder, root).count(os.sep) >= 8:
      refuse(os.path.relpath(folder, root)[:100], "nests folders more than 8 deep")
    for entry in dirs + files:
      seen += 1
      if seen > _MAX_ENTRIES:
        refuse("", f"holds more than {_MAX_ENTRIES} files and folders")
      name = os.path.relpath(os.path.join(folder, entry), root)
      if not inside(name):
        refuse(name, "links to a file outside the directory")
      try:
        mode = os.stat(os.path.join(root, name)).st_mode
      except OSError as e:  # a dangling or looping link
        refuse(name, f"cannot be read ({e.strerror or e})")
      if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        refuse(name, "is neither a regular file nor a folder")
  for name in _HF_FILES:
    if not name.endswith(".json") or not os.path.exists(os.path.join(root, name)):
      continue
    content = _read_json(os.path.join(root, name), refuse, name)
    if name == "tokenizer_config.json":
      for field, value in content.items():
        if field.endswith("_file") and value is not None and (
            not isinstance(value, str) or os.path.basename(value) != value
            or value in ("", ".", "..") or not inside(value)):
          refuse(name, f"names {errors.one_line(repr(value), 80)} as its {field[:40]!r}, "
                 "not a file of the directory")
    if name in ("config.json", "tokenizer_config.json") and "auto_map" in content:
      refuse(name, "has an 'auto_map', which asks to run Python code from the directory")
    if name.endswith(".index.json"):
      weight_map = content.get("weight_map")
      if not isinstance(weight_map, dict) or not all(
          isinstance(v, str) for v in weight_map.values()):
        refuse(name, "has no 'weight_map' of tensor names to shard files")
      for shard in sorted(set(weight_map.values())):
        if (shard in ("", ".", "..") or os.path.basename(shard) != shard
            or os.path.isabs(shard) or not inside(shard)):
          refuse(name, f"names the shard {errors.one_line(repr(shard), 80)}, which is not a "
                 "file of the directory")


def _read_json(path: str, refuse, name: str) -> dict:
  """The JSON object of `path` (at most `_MAX_JSON_BYTES`); `refuse(name, problem)` otherwise."""
  try:
    with open(path, "rb") as f:
      raw = f.read(_MAX_JSON_BYTES + 1)
    if len(raw) > _MAX_JSON_BYTES:
      refuse(name, f"is larger than {_MAX_JSON_BYTES} bytes")
    content = json.loads(raw)
  except (OSError, ValueError, RecursionError) as e:
    refuse(name, f"is not readable JSON ({errors.one_line(f'{type(e).__name__}: {e}', 120)})")
  if not isinstance(content, dict):
    refuse(name, "is not a JSON object")
  return content


def pytorch_weights_file(source: str) -> str | None:
  """The PyTorch-format weights file of a local HF directory without Flax weights, else None.

  PyTorch-format means a `.bin` state dict or a safetensors file written by PyTorch (whose
  metadata says so); a hub name or a directory with Flax weights gives None.
  """
  if not os.path.isdir(source) or any(os.path.isfile(os.path.join(source, name)) for name in
                                      ("flax_model.msgpack", "flax_model.msgpack.index.json")):
    return None
  path = os.path.join(source, "model.safetensors")
  if os.path.isfile(path):
    with safetensors.safe_open(path, framework="numpy") as f:
      return path if (f.metadata() or {}).get("format") == "pt" else None
  path = os.path.join(source, "pytorch_model.bin")
  return path if os.path.isfile(path) else None


def _weights_error(source: str, reason: str) -> errors.UserError:
  return errors.UserError(f"could not load CLIP weights {source!r}: {errors.one_line(reason)}; "
                          "pass config.teacher.weights=<local HF directory>")


class _TooMany(Exception):
  """Raised inside msgpack's unpacker to stop counting."""


def _check_counts(source: str, max_tensors: int) -> None:
  """Refuses weights files of more than `max_tensors` tensors before any is built.

  transformers makes a device array of every tensor a file holds, so a file of a few MB
  holding a million empty ones would take gigabytes (or crash) before rrjax could count them:
  safetensors headers are measured (about `_HEADER_BYTES_PER_TENSOR` per tensor), Flax msgpack
  files are counted by a streaming pass that builds no arrays.
  """
  if not os.path.isdir(source):
    return
  names = [n for n in ("model.safetensors", "flax_model.msgpack")
           if os.path.isfile(os.path.join(source, n))]
  index = os.path.join(source, "flax_model.msgpack.index.json")
  if os.path.isfile(index):
    with open(index, "rb") as f:
      names += sorted(set(json.loads(f.read(_MAX_JSON_BYTES))["weight_map"].values()))
  # Every value of a Flax file (arrays, numbers, the maps holding them) is a leaf or a node
  # transformers makes something of: counted over all shards, each container checked by its
  # declared length before msgpack builds it.
  limit, count = 4 * max_tensors, 0

  def counted(n: int):
    nonlocal count
    count += n
    if count > limit:
      raise _TooMany

  for name in names:
    path = os.path.join(source, name)
    if name.endswith(".safetensors"):
      weights_io.check_safetensors_header(path, max_tensors * _HEADER_BYTES_PER_TENSOR)
      continue
    try:
      with open(path, "rb") as f:
        msgpack.Unpacker(
            f, max_buffer_size=1 << 31, max_array_len=limit, max_map_len=limit,
            ext_hook=lambda code, data: counted(1),
            list_hook=lambda items: counted(len(items)),
            object_pairs_hook=lambda pairs: counted(len(pairs))).unpack()
    except _TooMany:
      raise errors.UserError(f"{path}: more than {limit} values in its Flax weights, more than "
                             "a CLIP checkpoint holds") from None
    except Exception as e:  # msgpack's own errors: the file is not msgpack
      raise errors.UserError(f"{path}: not a Flax msgpack file "
                             f"({errors.one_line(f'{type(e).__name__}: {e}', 120)})") from None


_HEADER_BYTES_PER_TENSOR = 512  # a safetensors header entry is about 100 bytes


def _pytorch_state_dict(path: str, max_tensors: int) -> dict:
  """The tensors of a PyTorch-format weights file, as numpy arrays, running none of its code.

  At most `max_tensors` (a checkpoint of a few times the model's): the conversion makes device
  arrays per tensor, so a small file of a million empty tensors would take gigabytes.
  """
  if path.endswith(".safetensors"):
    weights_io.check_safetensors_header(path, max_tensors * _HEADER_BYTES_PER_TENSOR)
    with safetensors.safe_open(path, framework="numpy") as f:
      keys = list(f.keys())
      if len(keys) > max_tensors:
        raise errors.UserError(f"{path}: {len(keys)} tensors, more than the {max_tensors} a "
                               "CLIP checkpoint can hold")
      return {key: f.get_tensor(key) for key in keys}
  state = torch_reader.read(path)
  if len(state) > max_tensors:
    raise errors.UserError(f"{path}: {len(state)} tensors, more than the {max_tensors} a CLIP "
                           "checkpoint can hold")
  return state


@contextlib.contextmanager
def _quiet_transformers():
  """transformers' warnings (deprecations, "some weights were not used: <every name>", which
  a crafted file can make megabytes long) held back while loading; its errors still show."""
  from transformers.utils import logging as hf_logging  # pylint: disable=import-outside-toplevel
  level = hf_logging.get_verbosity()
  hf_logging.set_verbosity_error()
  try:
    yield
  finally:
    hf_logging.set_verbosity(level)


def load_pretrained(model_cls, source: str, config=None) -> tuple[Any, dict]:
  """Float32 params of `model_cls` from a local HF directory or hub name, strictly.

  Unlike `model_cls.from_pretrained`, weights the checkpoint lacks are an error rather than a
  random initialisation, weights it has beyond the model's (e.g. the text tower of a full CLIP
  checkpoint when loading the vision tower) are dropped, and nothing is initialised randomly.

  PyTorch-format files (`pytorch_weights_file`) are read as data (safetensors, or rrjax's
  `torch_reader` for `.bin`: no torch needed, no pickle run) and converted by transformers' own
  converter, called here rather than through `from_pretrained(from_pt=True)`, which needs the
  random initialisation (it reads the target shapes from `model.params`) and `torch.load`.
  A local directory is checked first (`check_local_source`): no code of it runs, no file
  outside it is read.

  Args:
    model_cls: a transformers Flax model class, e.g. `FlaxCLIPModel`.
    source: a local HF directory or a hub name.
    config: the model config; default: the one of `source`.

  Returns:
    `(model, params)`: the uninitialised HF wrapper and its parameters.

  Raises:
    rrjax.errors.UserError: the weights could not be read, or lack some of the model's
      parameters; one line.
  """
  check_local_source(source)
  try:
    with _quiet_transformers():
      model, params = _load_params(model_cls, source, config)
  except errors.UserError as e:
    raise _weights_error(source, str(e)) from None
  except Exception as e:  # Any failure (missing files, network, a bad file) gets the same advice.
    raise _weights_error(source, f"{type(e).__name__}: {e}") from None
  flat = traverse_util.flatten_dict(params)
  missing = model.required_params - set(flat)
  if missing:
    raise _weights_error(source, f"the checkpoint lacks {sorted('/'.join(k) for k in missing)[:5]}")
  return model, traverse_util.unflatten_dict(
      {k: jnp.asarray(flat[k], jnp.float32) for k in model.required_params})


def _load_params(model_cls, source: str, config):
  """`(model, params)` of `load_pretrained`, before its checks."""
  model = model_cls(config or model_cls.config_class.from_pretrained(source), _do_init=False)
  # A full CLIP checkpoint holds both towers: a few times the tensors of the model.
  max_tensors = 4 * len(traverse_util.flatten_dict(model.params_shape_tree)) + 1000
  _check_counts(source, max_tensors)
  pt_file = pytorch_weights_file(source)
  if pt_file is None:
    return model_cls.from_pretrained(source, config=config, _do_init=False,
                                     trust_remote_code=False)
  shapes = types.SimpleNamespace(params=model.params_shape_tree,
                                 base_model_prefix=model.base_model_prefix)
  state = _pytorch_state_dict(pt_file, max_tensors)
  if not state:
    raise errors.UserError(f"{pt_file} holds no tensors")
  return model, convert_pytorch_state_dict_to_flax(state, shapes)


def load_vision_tower(source: str) -> tuple[CLIPVisionConfig, dict]:
  """Vision config and `VisionWithProjection` params of a full CLIP or vision-only checkpoint."""
  vision = read_vision_config(source)
  _, params = load_pretrained(_FlaxVisionWithProjection, source, config=vision)
  return vision, params


def read_vision_config(source: str) -> CLIPVisionConfig:
  """The vision config of a full CLIP or vision-only checkpoint directory (no weights read)."""
  check_local_source(source)
  try:
    with _quiet_transformers():
      config = AutoConfig.from_pretrained(source, trust_remote_code=False)
  except Exception as e:
    raise _weights_error(source, f"{type(e).__name__}: {e}") from None
  if isinstance(config, CLIPConfig):
    vision = config.vision_config
    # The projection width is a field of the full config; the nested copy may be stale.
    vision.projection_dim = config.projection_dim
  elif isinstance(config, CLIPVisionConfig):
    vision = config
  else:
    raise errors.UserError(f"{source!r} holds a {type(config).__name__}, not a CLIP checkpoint")
  return vision


_OPTIONS = ("resolution", "num_classes", "dtype", "seed", "config")


def _build(name: str, pretrained: bool, head: str, weights: str | None = None, **kwargs):
  """Builds CLIP tower `name`; see `rrjax.models.load`.

  Args:
    name: a key of `HUB_NAMES`.
    pretrained: load `weights`, or the hub checkpoint when `weights` is None (needs internet
      or the HF cache); otherwise initialise randomly from `seed`.
    head: "embed" or "logits" (needs `num_classes`; the classifier is fresh, from `seed`).
    weights: a local HF directory or a hub name; loaded whenever given.
    **kwargs: `resolution` (default: the config's `image_size`), `num_classes`, `dtype`
      (float32), `seed` (0), and for random initialisations `config`: `CLIPVisionConfig`
      fields overriding the published architecture's (tiny test towers).

  Returns:
    `(module, variables)` with variables `{"params": {"clip": ..., "fc"?: ...}}`.
  """
  unknown = sorted(set(kwargs) - set(_OPTIONS))
  if unknown:
    raise errors.UserError(f"unknown option(s) {unknown} for {name!r}; allowed: "
                           f"{', '.join(_OPTIONS)}")
  source = weights if weights is not None else (HUB_NAMES[name] if pretrained else None)
  if source is not None and "config" in kwargs:
    raise errors.UserError("config= only shapes random initialisations; loaded weights bring "
                           "their own config")
  if source is None:
    config = CLIPVisionConfig(**{**ARCHS[name], **kwargs.pop("config", {})})
    return encoder(config, None, head, **kwargs)
  return encoder(*load_vision_tower(os.fspath(source)), head, **kwargs)


def encoder(config: CLIPVisionConfig, params: dict | None, head: str, *, resolution=None,
            num_classes: int = 0, dtype=jnp.float32, seed: int = 0):
  """`(CLIPVisionEncoder, variables)` of the tower `config` with `VisionWithProjection` params.

  Args:
    config: the tower's `CLIPVisionConfig`.
    params: the tower's parameters, or None for a random initialisation from `seed`.
    head, resolution, num_classes, dtype, seed: as for `rrjax.models.load`; `resolution`
      defaults to the config's `image_size`, the classifier of `head="logits"` is fresh.
  """
  module = CLIPVisionEncoder(arch_of(config),
                             resolution=config.image_size if resolution is None else resolution,
                             head=head, num_classes=num_classes, dtype=jnp.dtype(dtype))
  key = jax.random.key(seed)
  if params is None:
    dummy = jnp.zeros((1, module.resolution, module.resolution, 3), jnp.float32)
    return module, jax.jit(functools.partial(module.init, train=False))(key, dummy)
  variables = {"params": {"clip": params}}
  if head == "logits":
    variables["params"]["fc"] = nn.Dense(module.num_classes).init(
        key, jnp.zeros((1, module.embed_dim)))["params"]
  return module, variables


for _name, _arch in ARCHS.items():
  register(_name, native_resolution=224, embed_dim=_arch["projection_dim"],
           has_pretrained=True)(functools.partial(_build, _name))
