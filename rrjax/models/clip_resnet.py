"""CLIP's ModifiedResNet image tower (Radford et al., 2021) in Flax: RN50, RN101, RN50x4, ...

How it differs from a torchvision ResNet (`rrjax.models.resnet`):
  * a stem of three 3x3 convs (width/2, width/2, width channels; the first one strided), each
    with BatchNorm and ReLU, then a 2x2 average pool instead of the 7x7 conv and max pool;
  * anti-aliased strides: a strided Bottleneck keeps its convs at stride 1 and average-pools
    after its 3x3 conv, and its shortcut average-pools before the 1x1 projection;
  * attention pooling instead of global average pooling: the mean of the final feature map,
    prepended as an extra token, is the only query of one multi-head attention layer over all
    positions (itself included); the attended query, projected by `c_proj`, is the embedding.

Module and parameter names mirror the PyTorch state dicts of OpenAI's `clip` package and of
open_clip, which name this tower identically (`layer2_0/downsample_conv/kernel` is
`visual.layer2.0.downsample.0.weight`), so `from_torch_state_dict` maps tensors by name and
refuses weights of another architecture, naming the offending tensor.

Resolution: the tower downsamples by 32, and the attention pool's positional embedding holds
one row per position of the final feature map after the mean token's row, i.e.
`[(resolution / 32)**2 + 1, 32 * width]`; `resolution` must be a multiple of 32. Checkpoints
trained at another resolution (OpenAI's: 224, a 7x7 grid) are adapted on load: the grid part
of the positional embedding is resized bicubically (`jax.image.resize` with PyTorch's bicubic
kernel, no antialiasing, as `F.interpolate(mode="bicubic")` in open_clip's resizing helpers),
the mean token's row is kept. The result is an approximation of the tower at its native size,
not a retrained one.
"""

import dataclasses
import functools
import math
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from rrjax import errors
from rrjax.models import register, torch_reader, weights_io
from rrjax.models.preprocess import CLIP_MEAN, CLIP_STD, prepare

HEADS = ("embed", "logits")
# Total downsampling of the tower: stem stride 2, stem pool 2, one stride 2 in layers 2-4.
REDUCTION = 32
# OpenAI's `clip.load` keeps downloaded checkpoints here, named e.g. RN101.pt.
OPENAI_CACHE = os.path.join("~", ".cache", "clip")

# He-normal over the output fan for convs, as the `resnet` students (CLIP keeps PyTorch's
# default for its convs, a third of He's variance, and relies on its zero-initialised bn3).
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _norm(train: bool, dtype, **kwargs):
  return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                           epsilon=1e-5, dtype=dtype, **kwargs)


def _avg_pool(x: jax.Array, size: int) -> jax.Array:
  """`size` x `size` average pool with stride `size` (PyTorch's `AvgPool2d(size)`)."""
  return nn.avg_pool(x, (size, size), (size, size)) if size > 1 else x


class Bottleneck(nn.Module):
  """Anti-aliased bottleneck: `[B, H, W, C] -> [B, H/stride, W/stride, 4 * width]`."""
  width: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=_conv_init)
    norm = _norm(train, self.dtype)
    features = self.width * self.expansion
    y = conv(self.width, (1, 1), name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.width, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y)
    y = nn.relu(norm(name="bn2")(y))
    y = _avg_pool(y, self.stride)
    y = conv(features, (1, 1), name="conv3")(y)
    # Zero-initialised last BN (as CLIP initialises it): each block starts as its shortcut.
    y = norm(scale_init=nn.initializers.zeros, name="bn3")(y)
    shortcut = x
    if self.stride > 1 or x.shape[-1] != features:
      shortcut = conv(features, (1, 1), name="downsample_conv")(_avg_pool(x, self.stride))
      shortcut = norm(name="downsample_bn")(shortcut)
    return nn.relu(y + shortcut)


class AttentionPool(nn.Module):
  """Attention pooling: `[B, H, W, C] -> [B, out_features]`.

  The spatial mean is prepended to the H*W positions as token 0, a learned positional
  embedding `[H*W + 1, C]` is added, and token 0 alone queries all H*W + 1 tokens through
  `heads`-head attention with q/k/v projections; `c_proj` maps the attended query out.
  Attention runs in `dtype` with a float32 softmax; `c_proj` and the output are float32.
  """
  heads: int
  out_features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    if c % self.heads:
      raise ValueError(f"attention pool width {c} is not divisible by heads={self.heads}")
    x = x.reshape(b, h * w, c)
    x = jnp.concatenate([jnp.mean(x, axis=1, keepdims=True), x], axis=1)
    std = c ** -0.5  # CLIP's initialisation of the embedding and the projections
    pos = self.param("positional_embedding", nn.initializers.normal(std), (h * w + 1, c))
    x = x + pos.astype(self.dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=nn.initializers.normal(std))
    head_dim = c // self.heads
    q = dense(c, name="q_proj")(x[:, :1]).reshape(b, 1, self.heads, head_dim)
    k = dense(c, name="k_proj")(x).reshape(b, h * w + 1, self.heads, head_dim)
    v = dense(c, name="v_proj")(x).reshape(b, h * w + 1, self.heads, head_dim)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * head_dim ** -0.5, k)
    # Softmax in float32: with bfloat16 compute the normaliser would lose most of its bits.
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, c)
    # The embedding is float32 whatever the compute dtype (module docs of rrjax.models).
    return dense(self.out_features, dtype=jnp.float32, name="c_proj")(out.astype(jnp.float32))


class ModifiedResNet(nn.Module):
  """CLIP's image tower: images `[B, H, W, 1|3]` in [0, 1] -> `[B, embed_dim]` (or logits).

  Attributes:
    layers: Bottleneck blocks per stage, (3, 4, 6, 3) for RN50, (3, 4, 23, 3) for RN101.
    width: stem width; stage s has bottleneck width `width * 2**s`, the pooled features
      `32 * width` channels.
    embed_dim: output width of the attention pool (1024 for RN50, 512 for RN101).
    heads: attention heads of the pool (CLIP uses `width // 2`).
    resolution: input size the images are resized to; a multiple of 32.
    head: "embed" for the embedding, "logits" for a `Dense(num_classes)` classifier on it
      (not part of CLIP: for supervised baselines).
    num_classes: classifier width, required with `head="logits"`.
    dtype: compute dtype of the tower (BatchNorm statistics, the attention softmax, the
      output projection, the classifier, the parameters and the returned output are float32).
  """
  # The normalisation `prepare` applies inside (an exported encoder states it).
  MEAN, STD = CLIP_MEAN, CLIP_STD
  layers: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  embed_dim: int = 1024
  heads: int = 32
  resolution: int = 224
  head: str = "embed"
  num_classes: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    if self.head not in HEADS:
      raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
    if self.head == "logits" and self.num_classes is None:
      raise ValueError("head='logits' needs num_classes: CLIP has no classifier of its own")
    check_resolution(self.resolution)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=_conv_init)
    norm = _norm(train, self.dtype)
    x = prepare(images, self.resolution, self.MEAN, self.STD).astype(self.dtype)
    for i, features in enumerate((self.width // 2, self.width // 2, self.width), start=1):
      x = conv(features, (3, 3), 2 if i == 1 else 1, padding=((1, 1), (1, 1)), name=f"conv{i}")(x)
      x = nn.relu(norm(name=f"bn{i}")(x))
    x = _avg_pool(x, 2)
    for stage, num_blocks in enumerate(self.layers):
      for i in range(num_blocks):
        stride = 2 if stage > 0 and i == 0 else 1
        x = Bottleneck(self.width * 2**stage, stride, self.dtype,
                       name=f"layer{stage + 1}_{i}")(x, train)
    x = AttentionPool(self.heads, self.embed_dim, self.dtype, name="attnpool")(x)
    if self.head == "logits":
      x = nn.Dense(self.num_classes, name="fc")(x)
    return x


def check_resolution(resolution: int) -> None:
  """Raises unless `resolution` is a positive multiple of 32 (the tower's downsampling)."""
  if resolution <= 0 or resolution % REDUCTION:
    raise errors.UserError(f"CLIP ResNet resolution must be a positive multiple of {REDUCTION}, "
                           f"got {resolution}")


# --- PyTorch checkpoints ----------------------------------------------------------------------

# Flax leaf name -> state-dict suffix.
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
           "var": "running_var", "positional_embedding": "positional_embedding"}
_MODULES = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
_VISUAL = "visual."


def _torch_key(path: tuple[str, ...]) -> str:
  """('params', 'layer2_0', 'downsample_conv', 'kernel') -> 'layer2.0.downsample.0.weight'."""
  *modules, leaf = path[1:]
  parts = [_MODULES.get(m, m.replace("_", ".") if m.startswith("layer") else m) for m in modules]
  return ".".join(parts + [_LEAVES[leaf]])


def _layout(leaf: str, ndim: int) -> str:
  """The `weights_io.LAYOUTS` entry of Flax leaf `leaf`: kernels of convs (4-d) and of Linear
  layers change layout; everything else keeps its own."""
  return "copy" if leaf != "kernel" else "conv" if ndim == 4 else "linear"


def _to_flax(value: np.ndarray, leaf: str) -> np.ndarray:
  """A PyTorch tensor for Flax leaf `leaf`, as float32 (OIHW -> HWIO, (out, in) -> (in, out))."""
  value = np.asarray(value, np.float32)
  return weights_io.LAYOUTS[_layout(leaf, value.ndim)][0](value)


def _to_torch(value: np.ndarray, leaf: str) -> np.ndarray:
  """Flax leaf `leaf` as its PyTorch tensor: the inverse of `_to_flax`."""
  value = np.asarray(value, np.float32)
  return weights_io.LAYOUTS[_layout(leaf, value.ndim)][1](value)


def visual_tensors(state: dict[str, np.ndarray], source: str = "state dict") -> dict:
  """The image tower's tensors of a CLIP state dict, named relative to the tower.

  Accepts OpenAI's naming (`visual.conv1.weight`, also as read from their TorchScript `.pt`)
  and open_clip's: training checkpoints `{"state_dict": {"module.visual.conv1.weight": ...}}`
  read flat as `state_dict.module.visual...`. Text-tower tensors, `logit_scale`, `attn_mask`
  and BatchNorm's `num_batches_tracked` counters are dropped.

  Returns:
    `{"conv1.weight": array, ...}`.

  Raises:
    ValueError: the dict holds no `visual.` tensors (not a CLIP checkpoint).
  """
  keep = lambda name: (name[len(_VISUAL):] if name.startswith(_VISUAL)
                       and not name.endswith(".num_batches_tracked") else None)
  out = weights_io.select_tensors(state, keep, source=source)
  if not out:
    found = ", ".join(errors.quote(k, 60) for k in sorted(state)[:5])
    raise errors.UserError(f"{source}: no CLIP image-tower tensors (names starting with "
                           f"'visual.'); found e.g. {found or 'no tensors'}")
  return out


def infer_config(state: dict[str, np.ndarray], source: str = "state dict") -> dict:
  """Reads the tower's configuration off a CLIP state dict's tensor shapes.

  Args:
    state: a CLIP state dict in any naming `visual_tensors` accepts; only shapes are used.
    source: names the file in error messages.

  Returns:
    `{"layers", "width", "embed_dim", "heads", "resolution"}`, e.g. RN101's
    `{"layers": (3, 4, 23, 3), "width": 64, "embed_dim": 512, "heads": 32,
    "resolution": 224}`. Shapes do not fix `heads`: it is CLIP's convention, `width // 2`.
  """
  return _infer(visual_tensors(state, source), source)


def _infer(visual: dict[str, np.ndarray], source: str) -> dict:
  """`infer_config` on the output of `visual_tensors`."""
  for key in ("layer1.0.conv1.weight", "attnpool.c_proj.weight", "attnpool.positional_embedding"):
    if key not in visual:
      raise errors.UserError(f"{source}: missing tensor {_VISUAL + key!r}; not a CLIP ResNet "
                             "tower (a ViT checkpoint?)")
  shaped = functools.partial(weights_io.shaped, visual, source=source, prefix=_VISUAL)
  layers = tuple(len({key.split(".")[1] for key in visual if key.startswith(f"layer{stage}.")})
                 for stage in range(1, 5))
  width = shaped("layer1.0.conv1.weight", 4).shape[0]
  tokens = shaped("attnpool.positional_embedding", 2).shape[0]
  grid = math.isqrt(max(tokens - 1, 0))
  if tokens < 2 or grid * grid != tokens - 1:
    raise errors.UserError(f"{source}: 'visual.attnpool.positional_embedding' has {tokens} rows, "
                           "not one plus a square grid")
  return {"layers": layers, "width": width,
          "embed_dim": shaped("attnpool.c_proj.weight", 2).shape[0],
          "heads": max(width // 2, 1),
          "resolution": grid * REDUCTION}


def _resize_positional_embedding(pos: np.ndarray, tokens: int) -> np.ndarray:
  """`[1 + g*g, C] -> [tokens, C]`: the g x g grid resized bicubically, token 0 kept."""
  grid, new_grid = math.isqrt(pos.shape[0] - 1), math.isqrt(tokens - 1)
  spatial = pos[1:].reshape(grid, grid, pos.shape[1])
  spatial = jax.image.resize(spatial, (new_grid, new_grid, pos.shape[1]), "bicubic-pytorch",
                             antialias=False)
  return np.concatenate([pos[:1], np.asarray(spatial).reshape(new_grid**2, -1)])


def from_torch_state_dict(state: dict[str, np.ndarray], layers: Sequence[int] | None = None,
                          width: int | None = None, embed_dim: int | None = None,
                          heads: int | None = None, resolution: int | None = None, *,
                          source: str = "state dict") -> dict:
  """Converts a CLIP ModifiedResNet PyTorch state dict to Flax variables, by name.

  Args:
    state: `{"visual.conv1.weight": array, ...}` in OpenAI's or open_clip's naming (see
      `visual_tensors`), e.g. from `torch_reader.read`; non-visual tensors are ignored.
    layers, width, embed_dim, heads: the expected architecture; each one left None is
      inferred from the tensor shapes (`infer_config`).
    resolution: input size of the target module; None for the checkpoint's own. Another one
      resizes the positional embedding (see the module docstring).
    source: names the file in error messages.

  Returns:
    `{"params": ..., "batch_stats": ...}` of `ModifiedResNet(layers, width, embed_dim, heads,
    resolution)` with `head="embed"`, float32 numpy arrays.

  Raises:
    ValueError: naming the first visual tensor (in sorted order) that is missing, not part of
      the architecture, or of the wrong shape: the sign of weights of another architecture.
  """
  visual = visual_tensors(state, source)
  config = _infer(visual, source)
  given = {"layers": layers, "width": width, "embed_dim": embed_dim, "heads": heads,
           "resolution": resolution}
  config.update({name: value for name, value in given.items() if value is not None})
  config["layers"] = tuple(config["layers"])
  check_resolution(config["resolution"])
  shapes = _variable_shapes(**config)

  def adapt(key, value, shape):
    if (key == "attnpool.positional_embedding" and value.shape[0] != shape[0]
        and value.shape[1:] == shape[1:]):
      # Trained at another resolution: adapt the grid (see the module docstring).
      return _resize_positional_embedding(value, shape[0])
    return value

  return weights_io.match_state_dict(
      visual, shapes, _torch_key, _to_flax, source=source, prefix=_VISUAL, adapt=adapt,
      arch=f"a CLIP ResNet with layers={config['layers']}")


@functools.lru_cache(maxsize=8)
def _variable_shapes(layers: tuple, width: int, embed_dim: int, heads: int,
                     resolution: int) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Flat `{path: shape}` of the module's variables, from tracing alone (no computation)."""
  module = ModifiedResNet(layers, width, embed_dim, heads, resolution)
  # The input is resized to `resolution` inside, so a small dummy traces the same variables.
  tree = jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0),
                        jnp.zeros((1, 8, 8, 3)))
  return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(tree).items()}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """All tensors of a checkpoint file, by dotted name, running none of its code.

  PyTorch files (OpenAI's TorchScript `.pt`, `torch.save` zip or legacy `.pt`/`.pth`/`.bin`)
  go through the restricted `torch_reader`; `.safetensors` files need the `safetensors`
  package.
  """
  if os.fspath(path).endswith(".safetensors"):
    try:
      from safetensors.numpy import load_file
    except ImportError as e:
      raise errors.UserError(f"reading {os.fspath(path)} needs the safetensors package: pip "
                             "install safetensors") from e
    # A CLIP checkpoint's header is well under 16 MiB; a longer one is refused unparsed.
    weights_io.check_safetensors_header(os.fspath(path), 16 << 20)
    try:
      return load_file(path)
    except Exception as e:  # safetensors' own error type, OSError, ...: the file is bad.
      raise errors.UserError(f"{os.fspath(path)}: not a readable safetensors file "
                             f"({errors.one_line(f'{type(e).__name__}: {e}', 200)})") from None
  return torch_reader.read(path)


def load_weights(path: str | os.PathLike, **config) -> dict:
  """Flax variables of the CLIP ResNet tower in a checkpoint file.

  Args:
    path: see `read_state_dict`.
    **config: `layers`, `width`, `embed_dim`, `heads`, `resolution`, as for
      `from_torch_state_dict`; missing ones are inferred from the file.
  """
  return from_torch_state_dict(read_state_dict(path), source=os.fspath(path), **config)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, layers: tuple, width: int, embed_dim: int, heads: int,
                 resolution: int) -> dict:
  # Reading RN101 (text tower included) and converting takes seconds and is repeated by every
  # experiment that builds the teacher; cached per path and shape for the process's life (a
  # file changed on disk meanwhile is not re-read). Host arrays: every caller gets its own
  # device buffers, which a training step may donate without touching the cache.
  return load_weights(path, layers=layers, width=width, embed_dim=embed_dim, heads=heads,
                      resolution=resolution)


# --- registry ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Arch:
  """A CLIP ResNet tower: `ModifiedResNet` fields, and OpenAI's checkpoint file name."""
  name: str
  layers: tuple[int, ...]
  width: int
  embed_dim: int
  heads: int
  openai_file: str | None = None


ARCHS = {
    "clip_rn50": Arch("clip_rn50", (3, 4, 6, 3), 64, 1024, 32, "RN50.pt"),
    "clip_rn101": Arch("clip_rn101", (3, 4, 23, 3), 64, 512, 32, "RN101.pt"),
}
_OPTIONS = ("resolution", "num_classes", "dtype", "seed")


def default_weights_path(arch: Arch) -> str:
  """OpenAI's published checkpoint of `arch` in `clip.load`'s download cache, if it is there."""
  if arch.openai_file is None:
    raise errors.UserError(f"{arch.name!r} has no published weights: pass weights=<path>")
  path = os.path.expanduser(os.path.join(OPENAI_CACHE, arch.openai_file))
  if not os.path.isfile(path):
    raise errors.UserError(f"no weights for {arch.name!r}: OpenAI's {arch.openai_file} is not at "
                           f"{path} (nothing is downloaded here). Pass "
                           f"config.teacher.weights=<path to {arch.openai_file} or an open_clip "
                           "checkpoint> (weights=<path> for rrjax.models.load), or copy the file "
                           "there")
  return path


def build(arch: Arch, pretrained: bool, head: str, weights: str | None = None, **kwargs):
  """Builds a CLIP ResNet tower and its variables; see `rrjax.models.load`.

  Args:
    arch: the architecture, e.g. `ARCHS["clip_rn101"]`.
    pretrained: load OpenAI's weights from `~/.cache/clip/<file>` (or `weights`); otherwise
      initialise randomly from `seed`.
    head: "embed"; or "logits" with `num_classes`, for a fresh classifier on the embedding
      (CLIP's own classifier is the zero-shot head built from text prompts, not part of this
      tower).
    weights: path to an OpenAI `.pt` or an open_clip checkpoint of this architecture; loaded
      whenever given.
    **kwargs: `resolution` (default 224), `num_classes`, `dtype` (float32), `seed` (0).

  Returns:
    `(module, variables)`.
  """
  unknown = sorted(set(kwargs) - set(_OPTIONS))
  if unknown:
    raise errors.UserError(f"unknown option(s) {unknown} for {arch.name!r}; allowed: "
                           f"{', '.join(_OPTIONS)}")
  num_classes = kwargs.get("num_classes")
  if head == "logits" and num_classes is None:
    raise errors.UserError(f"{arch.name!r} has no classifier (head='logits'): use head='embed' "
                           "with the zero-shot head, or pass num_classes=N for a fresh linear "
                           "classifier")
  module = ModifiedResNet(arch.layers, arch.width, arch.embed_dim, arch.heads,
                          resolution=kwargs.get("resolution", 224), head=head,
                          num_classes=num_classes,
                          dtype=jnp.dtype(kwargs.get("dtype", jnp.float32)))
  check_resolution(module.resolution)
  key = jax.random.key(kwargs.get("seed", 0))
  if not pretrained and weights is None:
    dummy = jnp.zeros((1, module.resolution, module.resolution, 3), jnp.float32)
    return module, jax.jit(functools.partial(module.init, train=False))(key, dummy)

  path = os.path.abspath(weights if weights is not None else default_weights_path(arch))
  variables = jax.tree.map(jnp.array, _load_cached(path, arch.layers, arch.width,
                                                   arch.embed_dim, arch.heads, module.resolution))
  if head == "logits":
    variables["params"]["fc"] = nn.Dense(num_classes).init(
        key, jnp.zeros((1, arch.embed_dim)))["params"]
  return module, variables


for _arch in ARCHS.values():
  register(_arch.name, native_resolution=224, embed_dim=_arch.embed_dim,
           has_pretrained=True)(functools.partial(build, _arch))
