"""Operators computed on the host by NumPy: the 15 ImageNet-C corruptions at severities 1 to 5.

    A = rrjax.corruptions.build("fog(3)")        # or "gaussian_noise(1)", "elastic_transform(5)"
    y = A(key, images)                           # float [B, H, W, 3] -> same shape and dtype
    grid("imagenet_c")                           # the 75 specs: every name at severities 1..5
    expand(("mask(0.9)", "imagenet_c(3)"))       # ("mask(0.9)", "gaussian_noise(3)", ...)

The corruptions themselves are `rrjax.corruptions.imagenet_c` (NumPy, SciPy and PIL, written
from Hendrycks & Dietterich's definitions, ICLR 2019). Several are not jnp functions and would
not be the same corruption as jnp (the reference's own interpolations, JPEG's rounding, PIL's
resampling), so here they run where their definition runs: on the host, inside the jitted
program through `jax.pure_callback`. On an accelerator each batch goes to the host and back;
they are evaluation operators (the ImageNet-C protocol corrupts test images), usable in
training too but at host speed.

Randomness follows the other operators' convention: `sample(key, shape)` draws one uint32 seed
per image from `image_keys(key, 0, B)`, and image i is corrupted with
`np.random.default_rng(seed_i)`, so image i's corruption does not depend on the batch size and
is the same for the same key. Inputs are clipped to [0, 1] first (ImageNet-C corrupts images,
and a composition may hand it an unclipped noisy one); outputs are in [0, 1].
"""

import dataclasses
import functools
import math
import re
from collections.abc import Iterable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from rrjax.corruptions import imagenet_c, kernels
from rrjax.corruptions.operators import Operator

GRID = "imagenet_c"  # the token `expand` replaces: imagenet_c (all 75) or imagenet_c(s)
MIN_SIZE = 8  # `imagenet_c.corrupt`'s smallest image side.
# The corruptions whose output does not depend on the key (ImageNet-C's deterministic ones).
DETERMINISTIC = frozenset({"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate",
                           "jpeg_compression"})


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ImageNetC(Operator):
  """One ImageNet-C corruption (`corruption`) at `severity` in 1..5; a subclass per name."""

  corruption: ClassVar[str]
  severity: int

  def __post_init__(self):
    value = self.severity
    if not (float(value).is_integer() and 1 <= value <= 5):
      raise ValueError(f"{self.name} severity {value!r} not an integer in 1..5")
    object.__setattr__(self, "severity", int(value))

  def __str__(self) -> str:
    return f"{self.name}({self.severity})"

  @property
  def random(self) -> bool:
    return self.corruption not in DETERMINISTIC

  def sample(self, key, shape):
    """`{"seed": [B] uint32}`: each image's NumPy generator seed."""
    keys = kernels.image_keys(key, 0, shape[0])
    return {"seed": jax.vmap(lambda k: jax.random.bits(k, (), jnp.uint32))(keys)}

  def apply(self, key, params, images):
    if images.ndim != 4 or images.shape[-1] != 3 or min(images.shape[1:3]) < MIN_SIZE:
      raise ValueError(f"{self}: ImageNet-C corrupts RGB images [B, H, W, 3] of at least "
                       f"{MIN_SIZE} x {MIN_SIZE} pixels, got {images.shape}")
    out = jax.ShapeDtypeStruct(images.shape, images.dtype)
    host = functools.partial(_corrupt_batch, self.corruption, self.severity)
    return jax.pure_callback(host, out, params["seed"], images, vmap_method="sequential")


def _corrupt_batch(name: str, severity: int, seeds: np.ndarray, images: np.ndarray) -> np.ndarray:
  """Host side: `images` float `[B, H, W, 3]`, `seeds` uint32 `[B]` -> corrupted, same dtype."""
  images = np.asarray(images)
  out = np.empty(images.shape, images.dtype)
  for i, (seed, image) in enumerate(zip(np.asarray(seeds), images)):
    clean = np.clip(image.astype(np.float32), 0.0, 1.0)
    out[i] = imagenet_c.corrupt(name, severity, clean, np.random.default_rng(int(seed)))
  return out


def _operator_class(name: str) -> type[ImageNetC]:
  cls = type(_class_name(name), (ImageNetC,), {
      "__doc__": f"ImageNet-C's {name} at a severity in 1..5 (`rrjax.corruptions.imagenet_c`).",
      "__module__": __name__,
      "name": name, "corruption": name, "forms": (f"{name}(s)",)})
  return dataclasses.dataclass(frozen=True, eq=False, repr=False)(cls)


def _class_name(name: str) -> str:
  return "".join(part.title() for part in name.split("_"))


# The 15 operator classes, by spec name, in ImageNet-C's order.
OPERATORS: dict[str, type[ImageNetC]] = {name: _operator_class(name) for name in imagenet_c.NAMES}


def grid(token: str = GRID) -> tuple[str, ...]:
  """The specs of `imagenet_c` (every corruption at severities 1..5, corruption-major: 75) or
  `imagenet_c(s)` (every corruption at severity s: 15).

  Raises:
    ValueError: for anything else, naming the forms allowed.
  """
  match = _GRID.fullmatch(token) if isinstance(token, str) else None
  if match is None:
    raise ValueError(f"{token!r} is not {GRID} or {GRID}(s) with s in 1..5")
  if match.group(1) is None:
    severities = imagenet_c.SEVERITIES
  else:
    try:
      value = float(match.group(1))
    except ValueError:
      value = math.nan
    if value not in imagenet_c.SEVERITIES:
      raise ValueError(f"{token!r}: the severity s of {GRID}(s) is one of 1..5")
    severities = (int(value),)
  return tuple(f"{name}({s})" for name in imagenet_c.NAMES for s in severities)


# `imagenet_c` or `imagenet_c(...)`, whole: a composition holding it is no grid (build refuses it).
_GRID = re.compile(rf"\s*{GRID}\s*(?:\(([^()|;:]*)\))?\s*")


def is_grid(spec: str) -> bool:
  """Whether `spec` is a grid token (`imagenet_c`, `imagenet_c(s)`; `grid` checks s)."""
  return isinstance(spec, str) and _GRID.fullmatch(spec) is not None


def expand(specs: Iterable[str]) -> tuple[str, ...]:
  """`specs` with each grid token replaced by its specs (`grid`), the rest as given."""
  out = []
  for spec in specs:
    out.extend(grid(spec) if is_grid(spec) else (spec,))
  return tuple(out)
