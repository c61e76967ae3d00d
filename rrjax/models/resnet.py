"""ResNet-18/34/50/101 student encoders (He et al., 2016), torchvision layout.

The architecture follows torchvision's `resnet*` exactly (7x7/2 stem with padding 3, 3x3/2 max
pool, stride on the 3x3 conv of bottleneck blocks, i.e. "ResNet v1.5", 1x1 projection shortcuts
where the shape changes, global average pooling), so parameter counts match torchvision's and its
checkpoints map onto these modules layer for layer: layer names mirror torchvision's
(`layer2_0/downsample_conv` is `layer2.0.downsample.0`). Padding is explicit and symmetric, like
PyTorch's, rather than Flax's 'SAME', which pads strided convs asymmetrically.

On top of the pooled features sits either an embedding projection `Dense(embed_dim)` (the
student's output, compared to the teacher's embedding by the losses; `embed_dim=0`: the pooled
features themselves) or a `Dense(num_classes)` classifier, selected by `head`.

Weights: random, an `.npz` of these variables, or a torchvision-layout PyTorch state dict
(`.pth`/`.pt`, e.g. torchvision's ImageNet-supervised `resnet101-63fe2227.pth`, or timm's
`resnet101`, which has the same names), read as data by `rrjax.models.torch_reader`. From a
state dict the encoder is torchvision's: `head="embed"` gives the pooled features (no
projection), `head="logits"` the checkpoint's classifier, or a new zero-initialised one of
`num_classes` (a supervised baseline's head, fine-tuned from the pretrained backbone).
"""

import functools
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from rrjax import errors
from rrjax.models import register, torch_reader, weights_io
from rrjax.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, prepare

HEADS = ("embed", "logits")

# torchvision's initialisation: He-normal over the output fan for convolutions.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _norm(train: bool, dtype):
  """torchvision's BatchNorm (momentum 0.1 in PyTorch's convention, eps 1e-5)."""
  return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                           epsilon=1e-5, dtype=dtype)


def _pad(k: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return (k // 2, k // 2), (k // 2, k // 2)


class BasicBlock(nn.Module):
  """Two 3x3 convs; `[B, H, W, C] -> [B, H/stride, W/stride, width]`."""
  width: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=_conv_init)
    norm = _norm(train, self.dtype)
    y = conv(self.width, (3, 3), self.stride, padding=_pad(3), name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.width, (3, 3), padding=_pad(3), name="conv2")(y)
    y = norm(name="bn2")(y)
    return nn.relu(y + _shortcut(x, self.width, self.stride, conv, norm))


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand; `[B, H, W, C] -> [B, H/stride, W/stride, 4 width]`."""
  width: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=_conv_init)
    norm = _norm(train, self.dtype)
    y = conv(self.width, (1, 1), name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.width, (3, 3), self.stride, padding=_pad(3), name="conv2")(y)
    y = nn.relu(norm(name="bn2")(y))
    y = conv(self.width * self.expansion, (1, 1), name="conv3")(y)
    y = norm(name="bn3")(y)
    return nn.relu(y + _shortcut(x, self.width * self.expansion, self.stride, conv, norm))


def _shortcut(x, features, stride, conv, norm):
  """Identity, or a 1x1 strided projection + BN when the block changes shape."""
  if stride == 1 and x.shape[-1] == features:
    return x
  x = conv(features, (1, 1), stride, name="downsample_conv")(x)
  return norm(name="downsample_bn")(x)


class ResNet(nn.Module):
  """ResNet encoder: images `[B, H, W, 1|3]` in [0, 1] -> `[B, embed_dim]` or `[B, num_classes]`.

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block: `BasicBlock` or `Bottleneck`.
    resolution: input size the images are resized to before the stem.
    embed_dim: width of the embedding projection; None for the pooled width (512 or 2048);
      0 for no projection (the pooled features, as torchvision's encoder gives them).
    num_classes: classifier width for `head="logits"`.
    head: "embed" or "logits".
    dtype: compute dtype of the convolutions and BatchNorm outputs (BatchNorm statistics,
      pooling, the output layer, the parameters and the returned output are float32).
  """
  # The normalisation `prepare` applies inside (an exported encoder states it).
  MEAN, STD = IMAGENET_MEAN, IMAGENET_STD
  stage_sizes: Sequence[int]
  block: Any
  resolution: int = 224
  embed_dim: int | None = None
  num_classes: int = 1000
  head: str = "embed"
  dtype: Any = jnp.float32

  @property
  def features(self) -> int:
    """Width of the pooled features."""
    return 512 * self.block.expansion

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    if self.head not in HEADS:
      raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
    x = prepare(images, self.resolution, self.MEAN, self.STD).astype(self.dtype)
    x = nn.Conv(64, (7, 7), 2, padding=_pad(7), use_bias=False, dtype=self.dtype,
                kernel_init=_conv_init, name="conv1")(x)
    x = _norm(train, self.dtype)(name="bn1")(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), (2, 2), padding=_pad(3))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for i in range(num_blocks):
        stride = 2 if stage > 0 and i == 0 else 1
        x = self.block(64 * 2**stage, stride, self.dtype, name=f"layer{stage + 1}_{i}")(x, train)
    # Pooling and the output layer in float32 whatever the compute dtype (rrjax.models' module
    # docs): the losses normalise the embedding, and the logits feed a cross-entropy.
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if self.head == "embed":
      if self.embed_dim == 0:
        return x
      width = self.features if self.embed_dim is None else self.embed_dim
      return nn.Dense(width, name="embed")(x)
    return nn.Dense(self.num_classes, name="fc")(x)


_ARCHS = {
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), Bottleneck),
    "resnet101": ((3, 4, 23, 3), Bottleneck),
}
_OPTIONS = ("resolution", "embed_dim", "num_classes", "dtype", "seed")


def _build(name: str, pretrained: bool, head: str, weights: str | None, **kwargs):
  """Builds `name` with random, `.npz` or PyTorch state-dict weights; see `rrjax.models.load`.

  There are no packaged weights (`rrjax.models.load` refuses `pretrained=True` without
  `weights`), so `pretrained` only matters there; a given `weights` file is always loaded.
  """
  del pretrained  # Checked by the registry; see above.
  unknown = sorted(set(kwargs) - set(_OPTIONS))
  if unknown:
    raise errors.UserError(f"unknown option(s) {unknown} for {name!r}; allowed: "
                           f"{', '.join(_OPTIONS)}")
  stage_sizes, block = _ARCHS[name]
  from_torch = weights is not None and weights.endswith(TORCH_SUFFIXES)
  # A classifier has no projection under its head: its encoder (`head="embed"` of the same
  # variables, e.g. a fine-tuned baseline's backbone) is the pooled features.
  module = ResNet(stage_sizes, block, resolution=kwargs.get("resolution", 224),
                  embed_dim=0 if from_torch or head == "logits" else kwargs.get("embed_dim"),
                  num_classes=kwargs.get("num_classes", 1000), head=head,
                  dtype=jnp.dtype(kwargs.get("dtype", jnp.float32)))
  if from_torch:
    if kwargs.get("embed_dim") not in (None, 0):
      raise errors.UserError(f"{name} from a PyTorch state dict has no embedding projection: "
                             f"embed_dim={kwargs['embed_dim']} cannot be loaded")
    return module, _from_torch_file(module, name, os.path.expanduser(weights))
  dummy = jnp.zeros((1, module.resolution, module.resolution, 3), jnp.float32)
  init = functools.partial(module.init, train=False)
  key = jax.random.key(kwargs.get("seed", 0))
  if weights is not None:
    # Shapes suffice to check the file, so skip the real initialisation.
    return module, weights_io.load_npz(weights, jax.eval_shape(init, key, dummy))
  return module, jax.jit(init)(key, dummy)


TORCH_SUFFIXES = (".pth", ".pt", ".bin")

_LEAVES = weights_io.TORCH_LEAVES


def _torch_key(path: tuple[str, ...]) -> str:
  """('params', 'layer3_22', 'downsample_bn', 'scale') -> 'layer3.22.downsample.1.weight'."""
  *modules, leaf = path[1:]
  parts = []
  for module in modules:
    if module.startswith("layer"):
      parts += module.split("_")
    elif module.startswith("downsample_"):
      parts += ["downsample", "0" if module == "downsample_conv" else "1"]
    else:
      parts.append(module)
  return ".".join(parts + [_LEAVES[leaf][0]])


def from_torch_state_dict(state: dict[str, np.ndarray], name: str, *,
                          source: str = "state dict") -> dict:
  """A torchvision-layout ResNet state dict as this module's variables, by name.

  Args:
    state: `{"conv1.weight": array, ...}` (e.g. from `torch_reader.read`); a `module.` prefix
      (DataParallel) is dropped and `num_batches_tracked` entries are ignored.
    name: the architecture, one of `_ARCHS` ("resnet101").
    source: names the file in error messages.

  Returns:
    `{"params", "batch_stats"}` of `ResNet(head="logits", embed_dim=0)` with the checkpoint's
    classifier width, float32 numpy arrays.

  Raises:
    rrjax.errors.UserError: naming the first tensor (in sorted order) that is missing, not part
      of the architecture, or of the wrong shape: the sign of weights of another architecture.
  """
  state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()
           if not k.endswith(".num_batches_tracked")}
  num_classes = (weights_io.shaped(state, "fc.bias", 1, source=source).shape[0]
                 if "fc.bias" in state else 1000)
  stage_sizes, block = _ARCHS[name]
  module = ResNet(stage_sizes, block, resolution=32, embed_dim=0, num_classes=num_classes,
                  head="logits")
  shapes = jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  flat = {path: leaf.shape for path, leaf in traverse_util.flatten_dict(shapes).items()}
  return weights_io.match_state_dict(
      state, flat, _torch_key, weights_io.torch_to_flax, source=source,
      arch=f"torchvision's {name}")


@functools.lru_cache(maxsize=2)
def _converted(path: str, name: str) -> dict:
  # Host arrays, read and converted once per file for the life of the process (each baseline
  # of a run starts from them); every caller gets its own device buffers.
  return jax.tree.map(np.asarray, from_torch_state_dict(torch_reader.read(path), name,
                                                        source=path))


def _from_torch_file(module: "ResNet", name: str, path: str) -> dict:
  """The variables of `module` (torchvision's encoder) from a state-dict file: the checkpoint's
  classifier, a new zero-initialised one of another width, or none for `head="embed"`."""
  variables = jax.tree.map(jnp.array, _converted(os.path.abspath(path), name))
  classifier = variables["params"].pop("fc")
  if module.head == "logits":
    if classifier["bias"].shape[0] != module.num_classes:
      # A new head for fine-tuning starts at zero, as `rrjax.models.efficientnet`'s does.
      width = module.features
      classifier = {"kernel": jnp.zeros((width, module.num_classes), jnp.float32),
                    "bias": jnp.zeros((module.num_classes,), jnp.float32)}
    variables["params"]["fc"] = classifier
  return variables


for _name, (_, _block) in _ARCHS.items():
  register(_name, native_resolution=224, embed_dim=512 * _block.expansion,
           has_pretrained=False)(functools.partial(_build, _name))
