"""Image encoders behind one contract, looked up by name.

    module, variables = rrjax.models.load("efficientnet_lite0", pretrained=True, head="embed")
    emb = module.apply(variables, images, train=False)   # images [B, H, W, 3] in [0, 1] -> [B, D]

Every encoder module:
  * takes float images in [0, 1], NHWC, at any resolution, resizes them to `module.resolution`
    and applies its own mean/std normalisation inside (corruptions act before, in pixel space);
  * returns `[B, module.embed_dim]` (not normalised) with `head="embed"`, or
    `[B, num_classes]` with `head="logits"` where the checkpoint has a classifier;
  * with `train=True` and `mutable=["batch_stats"]` updates its BatchNorm statistics;
  * has a `dtype` field, its compute dtype (see "Mixed precision" below).

Mixed precision. `dtype=jnp.bfloat16` (`load(..., dtype="bfloat16")` or `with_dtype`) runs the
convolutions, matmuls and activations in bfloat16 while the parameters stay float32 (cast to
bfloat16 where used, so their gradients, and the optimiser state, are float32). BatchNorm and
LayerNorm compute their statistics in float32 (BatchNorm's running averages are float32 too),
the CLIP ResNet attention pool's softmax is float32 (the ViT tower's attention is transformers'
Flax CLIP, bfloat16 throughout), and global pooling, the output layer (embedding projection or
classifier) and the returned `[B, D]` are float32. The dtype changes no parameter, so one set
of variables serves both precisions.

Builders register themselves with `@register(name, native_resolution=..., embed_dim=...)`; the
registry stays open for later families (CLIP towers).

Published CLIP towers are also named by where they are published (`rrjax.models.hub`), for any
field that names an encoder (`teacher.name`, `baseline.encoder.name`, ...):

    load("open_clip:ViT-B-16", weights="laion2b_s34b_b88k")   # open_clip's pretrained tag
    load("hf:openai/clip-vit-base-patch16")                    # a Hugging Face repository
"""

import dataclasses
import importlib
from typing import Any, Callable

import jax.numpy as jnp

from rrjax import errors

# Compute dtypes an encoder may run in (`config.train.compute_dtype`).
COMPUTE_DTYPES = ("float32", "bfloat16")

_REGISTRY: dict[str, "Entry"] = {}


@dataclasses.dataclass(frozen=True)
class Entry:
  """A registered encoder: `builder(pretrained, head, weights, **kw) -> (module, variables)`.

  `native_resolution` and `embed_dim` are None where only the weights tell (a Hugging Face
  repository named by `hf:`).
  """
  name: str
  builder: Callable[..., tuple[Any, Any]]
  native_resolution: int | None
  embed_dim: int | None
  has_pretrained: bool


def register(name: str, *, native_resolution: int, embed_dim: int, has_pretrained: bool):
  """Decorator adding `builder` to the registry under `name`."""
  def deco(builder):
    if name in _REGISTRY:
      raise ValueError(f"encoder {name!r} registered twice")
    _REGISTRY[name] = Entry(name, builder, native_resolution, embed_dim, has_pretrained)
    return builder
  return deco


# Families whose import is heavy (transformers) are imported when one of their names is used.
_LAZY = {"clip_vit_b32": "clip_vit", "clip_vit_b16": "clip_vit", "clip_vit_l14": "clip_vit",
         "clip_rn50": "clip_resnet", "clip_rn101": "clip_resnet"}
# Encoders whose checkpoints hold a CLIP text tower (`rrjax.evaluation.zeroshot`'s teachers).
WITH_TEXT_TOWER = tuple(sorted(_LAZY))
# Names of published towers, `<prefix><where>` (`rrjax.models.hub`): not registered, parsed.
HUB_PREFIXES = ("open_clip:", "hf:")


def is_hub_name(name) -> bool:
  """Whether `name` names a published tower by where it is published (`rrjax.models.hub`)."""
  return isinstance(name, str) and name.startswith(HUB_PREFIXES)


def names() -> list[str]:
  """All registered encoder names, sorted."""
  _import_builtin()
  return sorted(set(_REGISTRY) | set(_LAZY))


def info(name: str) -> Entry:
  """The registry entry (native resolution, embedding size) of `name`.

  A hub name (`is_hub_name`) is parsed, not looked up: its spelling errors raise here, before
  anything is read or downloaded.
  """
  if is_hub_name(name):
    from rrjax.models import hub  # pylint: disable=import-outside-toplevel
    return hub.entry(name)
  _import_builtin()
  if name not in _REGISTRY and name in _LAZY:
    importlib.import_module(f"rrjax.models.{_LAZY[name]}")
  if name not in _REGISTRY:
    raise errors.UserError(f"unknown encoder {name!r}; known: {', '.join(names())}, or "
                           "open_clip:<model> / hf:<org>/<repository>")
  return _REGISTRY[name]


def load(name: str, pretrained: bool = True, head: str = "embed", *, weights: str | None = None,
         **kwargs):
  """Builds encoder `name` and its variables.

  Args:
    name: a registered encoder name (see `names()`), or a hub name (`rrjax.models.hub`).
    pretrained: load the packaged or published weights (or `weights` when given); otherwise a
      random initialisation (seeded by `kwargs["seed"]`, default 0).
    head: "embed" for the `[B, D]` embedding, "logits" for the checkpoint's classifier output.
    weights: optional path to a weights file or directory overriding the default source.
    **kwargs: encoder options, e.g. `resolution=64` (input size the encoder resizes to),
      `embed_dim=128` and `num_classes=10` for the ResNet family, `seed=0`, `dtype="bfloat16"`
      (compute dtype, one of `COMPUTE_DTYPES`; parameters stay float32).

  Returns:
    `(module, variables)`: a Flax module and its variables `{"params", "batch_stats"?}`.
  """
  if head not in ("embed", "logits"):
    raise ValueError(f"head must be 'embed' or 'logits', got {head!r}")
  entry = info(name)
  if "dtype" in kwargs:
    kwargs["dtype"] = compute_dtype(kwargs["dtype"])
  if pretrained and not entry.has_pretrained and weights is None:
    raise errors.UserError(f"encoder {name!r} has no published weights: use pretrained=False or "
                           "pass weights=<path>")
  return entry.builder(pretrained=pretrained, head=head, weights=weights, **kwargs)


def compute_dtype(name, field: str = "compute dtype") -> jnp.dtype:
  """The compute dtype named `name` ("float32" or "bfloat16", or such a dtype).

  Raises:
    ValueError: `"<field>: 'float16' not one of float32, bfloat16"`.
  """
  try:
    dtype = jnp.dtype(name)
  except TypeError:
    dtype = None
  if dtype is None or dtype.name not in COMPUTE_DTYPES:
    raise errors.UserError(f"{field}: {name!r} not one of {', '.join(COMPUTE_DTYPES)}")
  return dtype


def with_dtype(module, dtype):
  """`module` computing in `dtype` (see `compute_dtype`); the same object if it already does.

  Variables are shared between the two: the compute dtype changes no parameter.
  """
  dtype = compute_dtype(dtype)
  if jnp.dtype(module.dtype) == dtype:
    return module
  return module.clone(dtype=dtype)


def _import_builtin():
  # Importing the family modules runs their @register decorators.
  from rrjax.models import efficientnet, resnet, tiny  # noqa: F401


def load_from_config(section, head: str = "embed", **kwargs):
  """The encoder of a config section with fields `name`, `weights`, `resolution`.

  `weights`: "" for the packaged or published weights, "random" for a random initialisation
  (tests and smoke runs), else a path to a weights file or directory (for `open_clip:` names
  also a pretrained tag, `rrjax.models.hub`). `kwargs` go to `load`,
  e.g. `dtype=config.train.compute_dtype`.
  """
  if section.resolution:
    kwargs.setdefault("resolution", section.resolution)
  if section.weights == "random":
    return load(section.name, pretrained=False, head=head, **kwargs)
  return load(section.name, pretrained=True, head=head, weights=section.weights or None,
              **kwargs)
