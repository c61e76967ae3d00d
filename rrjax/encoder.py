"""A robust encoder exported by `rrjax.export`, used without its run: no workdir, no config file.

    enc = rrjax.load_encoder("exports/mask90")
    emb = enc.embed(images)                         # float32 [N, D]
    top = enc.classify(images, top_k=3)             # per image [(class name, probability), ...]
    top = enc.classify(images, corrupt="mask(0.9)", seed=0)   # Figure 1 of the paper, in code
    enc.class_names, enc.trained_for, enc.probes    # the labels, its operator, the label fractions

Images, as the run saw them:
  * uint8 pixels (`[H, W]`, `[H, W, 1|3|4]`, `[N, H, W, C]` or a list of images of any sizes)
    and encoded files (`bytes`) go through the run's own eval view (`rrjax.data.views
    .eval_view`: short side resized, centre crop) at the measurement size the student was
    trained at (`enc.measurement_size`, e.g. Fashion-MNIST's 28 px), then to [0, 1];
  * float images in [0, 1] (`[N, H, W, 3]`, one size) are used as they are.
  The operator (`corrupt=`) then acts at that size, as in training, and the encoder resizes to
  its own input (`enc.resolution`) and normalises inside. Corruption draws are those of the
  run's scored evaluation: the key of draw `draw` under `seed`
  (`rrjax.evaluation.scoring.draw_key`), batches of `batch_size` images, batch b corrupted under
  `fold_in(key, b)`, image j of a batch by that key and j alone
  (`rrjax.evaluation.features`). So the first images of a call are corrupted as the first
  images of the run's test split were in its scored draw (`rrjax.outputs.products`' examples);
  the same image elsewhere in a call gets another draw.

A directory that is not an export of this format (a missing or unreadable file, another
version, weights of another shape) is a `rrjax.errors.UserError` naming the file and the problem.
"""

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from PIL import Image

from rrjax import corruptions, errors, models
from rrjax import data as data_lib
from rrjax.data import source as source_lib
from rrjax.data import views
from rrjax.evaluation import features as features_lib
from rrjax.evaluation import probe as probe_lib
from rrjax.evaluation import scoring
from rrjax.models import weights_io
from rrjax.outputs import products

FORMAT = "rrjax-encoder"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_MAX_CONFIG_BYTES = 4 << 20
_MAX_SIZE = 4096  # pixels a side: far beyond any encoder's input

Images = np.ndarray | Sequence[np.ndarray | bytes]


@dataclasses.dataclass(frozen=True, eq=False)
class RobustEncoder:
  """An exported encoder: the student's module and variables, its probes, its description.

  Attributes:
    directory: where it was loaded from.
    config: the export's `config.json`, as a dict.
    module, variables: the Flax encoder (`rrjax.models` contract) and its trained variables.
    probes: label fraction -> `rrjax.evaluation.probe.Probe`, fitted by the run on the
      student's features of corrupted training images.
    class_names: label i's name.
  """
  directory: str
  config: dict
  module: Any
  variables: Any
  probes: dict[float, probe_lib.Probe]
  class_names: list[str]

  @property
  def measurement_size(self) -> int:
    return int(self.config["measurement_size"])

  @property
  def resolution(self) -> int:
    return int(self.module.resolution)

  @property
  def trained_for(self) -> str:
    """The operator spec the student was trained for, e.g. "mask(0.9)"."""
    return self.config["trained_for"]["operator"]

  def images(self, images: Images) -> np.ndarray:
    """`images` (module docstring) as the encoder's input: uint8 `[N, S, S, 3]` at the
    measurement size, or the float `[N, H, W, 3]` given."""
    return as_batch(images, self.measurement_size)

  def embed(self, images: Images, *, corrupt: str | None = None, seed: int = 0, draw: int = 0,
            batch_size: int = 64) -> np.ndarray:
    """float32 `[N, D]` embeddings of `images`, optionally corrupted first by the operator spec
    `corrupt`, as in the run's scored draw `draw` under `seed` (module docstring)."""
    op = corruptions.build(corrupt) if corrupt else None
    key = scoring.draw_key(seed, str(op), draw) if op is not None else None
    return features_lib.extract_features(self.module, self.variables, self.images(images),
                                         corruption=op, key=key, batch_size=batch_size)

  def corrupt(self, images: Images, spec: str, *, seed: int = 0, draw: int = 0,
              batch_size: int = 64) -> np.ndarray:
    """float32 `[N, S, S, 3]`: `images` corrupted by the operator `spec`, exactly as `embed`
    (same `seed`, `draw` and `batch_size`) feeds them to the encoder."""
    op = corruptions.build(spec)
    x = np.asarray(data_lib.to_float(self.images(images)))
    key = scoring.draw_key(seed, str(op), draw)
    return np.concatenate([np.asarray(op(jax.random.fold_in(key, b), x[start:start + batch_size]))
                           for b, start in enumerate(range(0, len(x), batch_size))])

  def logits(self, images: Images, *, fraction: float | None = None, **kwargs) -> np.ndarray:
    """float32 `[N, C]` logits of the probe fitted with label fraction `fraction` (default:
    the largest); `kwargs` as for `embed`."""
    return np.asarray(probe_lib.logits(self.probe(fraction), self.embed(images, **kwargs)))

  def classify(self, images: Images, top_k: int = 5, **kwargs) -> list[list[tuple[str, float]]]:
    """Per image, the `top_k` most probable `(class name, probability)`, most probable first;
    `kwargs` as for `logits`."""
    if top_k < 1:
      raise errors.UserError(f"top_k must be >= 1, got {top_k}")
    ranked = products.top_k(self.logits(images, **kwargs), self.class_names,
                            min(top_k, len(self.class_names)))
    return [[(name, prob) for name, prob in row] for row in ranked]

  def probe(self, fraction: float | None = None) -> probe_lib.Probe:
    """The probe fitted with label fraction `fraction` (default: the largest)."""
    if not self.probes:
      raise errors.UserError(f"{self.directory}: this export has no probe (its run fitted "
                             "none): it embeds but does not classify")
    if fraction is None:
      return self.probes[max(self.probes)]
    if float(fraction) not in self.probes:
      raise errors.UserError(f"{self.directory}: no probe for label fraction {fraction:g}; "
                             f"it has {', '.join(f'{f:g}' for f in sorted(self.probes))}")
    return self.probes[float(fraction)]


def as_batch(images: Images, measurement_size: int) -> np.ndarray:
  """uint8 `[N, S, S, 3]` (S = `measurement_size`) of uint8 images or encoded files, through
  the run's eval view; float images in [0, 1], one size, as float32 `[N, H, W, 3]`."""
  if isinstance(images, np.ndarray) and np.issubdtype(images.dtype, np.floating):
    if images.ndim == 3:
      images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or 0 in images.shape:
      raise errors.UserError(f"float images must be [N, H, W, 3] in [0, 1], N, H, W >= 1, got "
                             f"shape {images.shape}")
    if images.size and not (np.isfinite(images).all() and images.min() >= 0
                            and images.max() <= 1):
      raise errors.UserError("float images must be in [0, 1] (uint8 images are divided by 255)")
    return images.astype(np.float32)
  if isinstance(images, np.ndarray):
    images = [images] if images.ndim in (2, 3) else list(images)
  if len(images) == 0:
    raise errors.UserError("no images given")
  out = []
  for i, image in enumerate(images):
    if not isinstance(image, (bytes, bytearray)):
      image = np.asarray(image)
      if image.dtype != np.uint8:
        raise errors.UserError(f"image {i}: uint8 pixels, encoded bytes or a float batch in "
                               f"[0, 1] expected, got {image.dtype}")
      if (image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4))
          or 0 in image.shape[:2]):
        raise errors.UserError(f"image {i}: expected [H, W] or [H, W, 1|3|4] with H, W >= 1, "
                               f"got shape {image.shape}")
      image = source_lib.to_rgb(image)
    try:
      out.append(views.eval_view(image, measurement_size))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      # PIL's messages name its in-memory file object, which says nothing to the user.
      detail = "" if "BytesIO" in str(e) else f" ({errors.one_line(str(e), 100)})"
      raise errors.UserError(f"image {i}: not an image PIL can decode{detail}") from None
  return np.stack(out)


def read_config(directory: str) -> dict:
  """The checked `config.json` of an export directory.

  Raises:
    rrjax.errors.UserError: naming the file when it is missing, not JSON, of another format or
      version, or lacks a field.
  """
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isdir(directory):
    raise errors.UserError(f"{directory}: no such export directory")
  try:
    if os.path.getsize(path) > _MAX_CONFIG_BYTES:
      raise errors.UserError(f"{path}: larger than {_MAX_CONFIG_BYTES} bytes; not an rrjax "
                             "export")
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  except OSError as e:
    raise errors.UserError(f"{path}: cannot read it ({e.strerror or e}); is {directory} an "
                           "export of `python -m rrjax.export`?") from None
  except ValueError as e:
    raise errors.UserError(f"{path}: not JSON ({errors.one_line(str(e), 100)})") from None
  if not isinstance(config, dict) or config.get("format") != FORMAT:
    found = config.get("format") if isinstance(config, dict) else type(config).__name__
    raise errors.UserError(f"{path}: format {errors.quote(found)}, not {FORMAT!r}: not an rrjax "
                           "encoder export (a run's workdir is exported by `python -m "
                           "rrjax.export --workdir=... --out=...`)")
  if config.get("version") != VERSION:
    raise errors.UserError(f"{path}: version {errors.quote(config.get('version'))}; this rrjax "
                           f"reads version {VERSION}")
  try:
    encoder = config["encoder"]
    checks = [isinstance(encoder["name"], str), isinstance(encoder["kwargs"], dict),
              isinstance(config["measurement_size"], int) and config["measurement_size"] > 0,
              isinstance(config["trained_for"]["operator"], str),
              isinstance(config["class_names"], list),
              isinstance(config["probes"], dict) and all(map(_is_fraction, config["probes"]))
              and all(isinstance(v, str) and os.path.basename(v) == v and v.endswith(
                  ".safetensors") for v in config["probes"].values())]
  except (KeyError, TypeError) as e:
    raise errors.UserError(f"{path}: lacks the field {errors.quote(str(e))}") from None
  if not all(checks):
    raise errors.UserError(f"{path}: a field of the wrong type (encoder, measurement_size, "
                           "trained_for, class_names or probes)")
  sizes = (encoder["kwargs"].get("resolution", 1), config["measurement_size"])
  if not all(isinstance(v, int) and 1 <= v <= _MAX_SIZE for v in sizes):
    raise errors.UserError(f"{path}: resolution or measurement_size not an integer in "
                           f"[1, {_MAX_SIZE}]")
  return config


def _is_fraction(text: str) -> bool:
  try:
    return 0 < float(text) <= 1
  except ValueError:
    return False


def load_encoder(directory: str | os.PathLike) -> RobustEncoder:
  """The encoder exported to `directory` by `rrjax.export` (module docstring)."""
  directory = os.fspath(directory)
  config = read_config(directory)
  name, kwargs = config["encoder"]["name"], config["encoder"]["kwargs"]
  try:
    module, reference = models.load(name, pretrained=False, head="embed", **kwargs)
  except (TypeError, ValueError) as e:
    raise errors.UserError(f"{os.path.join(directory, CONFIG_FILE)}: cannot build encoder "
                           f"{name!r} with {kwargs} ({errors.one_line(str(e), 160)})") from None
  variables = weights_io.load_safetensors(os.path.join(directory, WEIGHTS_FILE), reference)
  probes = {}
  for fraction, file in config["probes"].items():
    fitted, names, _ = probe_lib.load(os.path.join(directory, "probes", file))
    if names != config["class_names"]:
      raise errors.UserError(f"{os.path.join(directory, 'probes', file)}: its class names are "
                             f"not those of {CONFIG_FILE}")
    if fitted.mean.shape[0] != module_embed_dim(module, variables, config):
      raise errors.UserError(f"{os.path.join(directory, 'probes', file)}: a probe of "
                             f"{fitted.mean.shape[0]} features for an encoder of another width")
    probes[float(fraction)] = fitted
  return RobustEncoder(directory, config, module, variables, probes, list(config["class_names"]))


def module_embed_dim(module, variables, config: dict) -> int:
  """The width D of the encoder's `[B, D]` output (abstractly evaluated, nothing computed)."""
  size = config["measurement_size"]
  out = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables,
                       jax.ShapeDtypeStruct((1, size, size, 3), np.float32))
  return int(out.shape[-1])
