"""Published CLIP towers by name: open_clip's pretrained tags and Hugging Face repositories.

Any field that names an encoder (`teacher.name`, `baseline.encoder.name`, `student.name`)
takes these names, with the section's `weights`:

    teacher.name = "open_clip:ViT-B-16"   teacher.weights = "laion2b_s34b_b88k"  (a tag)
    teacher.name = "open_clip:RN101"      teacher.weights = "openai"
    teacher.name = "open_clip:ViT-B-16"   teacher.weights = "/path/open_clip_model.safetensors"
    teacher.name = "hf:openai/clip-vit-base-patch16"       teacher.weights = ""
    teacher.name = "hf:chs20/fare2-clip@<commit>"          teacher.weights = ""  (pinned)

  * `open_clip:<model>`: a model of open_clip with a plain CLIP image tower (`_MODELS`:
    ModifiedResNets RN50 ... RN50x64, ViTs ViT-B-32 ... ViT-bigG-14; the `-quickgelu` names
    too). `weights`: one of its pretrained tags (`_TAGS`), whose file is fetched from the
    Hugging Face repository open_clip fetches it from; or a path to an open_clip checkpoint of
    that model; or "random". The activation is the one the weights were trained with
    (QuickGELU for OpenAI's and a few others, `_TAGS`), which open_clip itself gives only
    under the model's `-quickgelu` name; for a path it is the name's (`-quickgelu` or not).
  * `hf:<org>/<repository>[@<revision>]`: a Hugging Face repository in open_clip's layout
    (`open_clip_config.json` and `open_clip_model.safetensors` or
    `open_clip_pytorch_model.bin`, e.g. FARE's robust CLIPs `chs20/fare2-clip`) or in
    transformers' (`config.json` of a CLIP model, e.g. `openai/clip-vit-base-patch16`).
    `weights`: "" (or "random": the repository's architecture, randomly initialised).

Files come through `huggingface_hub` and its cache (`~/.cache/huggingface/hub`, or
`HF_HUB_CACHE`): fetched once, then read from the cache; with `HF_HUB_OFFLINE=1` only the
cache is read. Weight files are data: safetensors after a bounded header check, PyTorch
files through the restricted `torch_reader`; configs as bounded JSON whose every field is
checked. The tower's normalisation is OpenAI's (`preprocess.CLIP_MEAN`/`CLIP_STD`), as every
model here was trained with; a repository whose `open_clip_config.json` states another is
refused.

An open_clip checkpoint's ViT tower (OpenAI's naming) becomes `clip_vit`'s Flax tower through
`openai_layout`, the same table that exports it back; its architecture is the model's
(`_MODELS`, or the repository's config), and each tensor is checked against it.
"""

import dataclasses
import functools
import json
import os
import re
import stat
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rrjax import errors
from rrjax.models import Entry, clip_resnet, openai_layout
from rrjax.models.preprocess import CLIP_MEAN, CLIP_STD


class Arch(NamedTuple):
  """An open_clip `vision_cfg` and `embed_dim`; `layers` a 4-tuple for a ModifiedResNet
  (`patch_size` 0), an int for a ViT."""
  image_size: int
  layers: int | tuple[int, ...]
  width: int
  patch_size: int
  head_width: int
  mlp_ratio: float
  embed_dim: int


# open_clip 3.3.0's models with a plain CLIP image tower and published weights on the hub
# (open_clip/model_configs/<model>.json). The reference test checks both tables against it.
_MODELS = {
    "RN50": Arch(224, (3, 4, 6, 3), 64, 0, 64, 4.0, 1024),
    "RN101": Arch(224, (3, 4, 23, 3), 64, 0, 64, 4.0, 512),
    "RN50x4": Arch(288, (4, 6, 10, 6), 80, 0, 64, 4.0, 640),
    "RN50x16": Arch(384, (6, 8, 18, 8), 96, 0, 64, 4.0, 768),
    "RN50x64": Arch(448, (3, 15, 36, 10), 128, 0, 64, 4.0, 1024),
    "ViT-B-32": Arch(224, 12, 768, 32, 64, 4.0, 512),
    "ViT-B-32-256": Arch(256, 12, 768, 32, 64, 4.0, 512),
    "ViT-B-16": Arch(224, 12, 768, 16, 64, 4.0, 512),
    "ViT-B-16-plus-240": Arch(240, 12, 896, 16, 64, 4.0, 640),
    "ViT-L-14": Arch(224, 24, 1024, 14, 64, 4.0, 768),
    "ViT-L-14-336": Arch(336, 24, 1024, 14, 64, 4.0, 768),
    "ViT-H-14": Arch(224, 32, 1280, 14, 80, 4.0, 1024),
    "ViT-H-14-378": Arch(378, 32, 1280, 14, 80, 4.0, 1024),
    "ViT-g-14": Arch(224, 40, 1408, 14, 88, 4.3637, 1024),
    "ViT-bigG-14": Arch(224, 48, 1664, 14, 104, 4.9231, 1280),
    "roberta-ViT-B-32": Arch(224, 12, 768, 32, 64, 4.0, 512),
    "xlm-roberta-base-ViT-B-32": Arch(224, 12, 768, 32, 64, 4.0, 512),
    "xlm-roberta-large-ViT-H-14": Arch(224, 32, 1280, 14, 80, 4.0, 1024),
    "nllb-clip-base": Arch(224, 12, 768, 32, 64, 4.0, 512),
    "nllb-clip-large": Arch(224, 32, 1280, 14, 80, 4.0, 1024),
    "ViT-H-14-worldwide": Arch(224, 32, 1280, 14, 80, 4.0, 1024),
    "ViT-H-14-worldwide-378": Arch(378, 32, 1280, 14, 80, 4.0, 1024),
    "ViT-bigG-14-worldwide": Arch(224, 48, 1664, 14, 104, 4.9231, 1280),
    "ViT-bigG-14-worldwide-378": Arch(378, 48, 1664, 14, 104, 4.9231, 1280),
}
# (model, pretrained tag) -> (Hugging Face repository, trained with QuickGELU), from open_clip
# 3.3.0's open_clip/pretrained.py: the tags with OpenAI's normalisation and a hub repository.
_TAGS = {
    "RN50": {
        "openai": ("timm/resnet50_clip.openai", True),
        "yfcc15m": ("timm/resnet50_clip.yfcc15m", True),
        "cc12m": ("timm/resnet50_clip.cc12m", True),
    },
    "RN101": {
        "openai": ("timm/resnet101_clip.openai", True),
        "yfcc15m": ("timm/resnet101_clip.yfcc15m", True),
    },
    "RN50x4": {
        "openai": ("timm/resnet50x4_clip.openai", True),
    },
    "RN50x16": {
        "openai": ("timm/resnet50x16_clip.openai", True),
    },
    "RN50x64": {
        "openai": ("timm/resnet50x64_clip.openai", True),
    },
    "ViT-B-32": {
        "openai": ("timm/vit_base_patch32_clip_224.openai", True),
        "laion400m_e31": ("timm/vit_base_patch32_clip_224.laion400m_e31", True),
        "laion400m_e32": ("timm/vit_base_patch32_clip_224.laion400m_e32", True),
        "laion2b_e16": ("timm/vit_base_patch32_clip_224.laion2b_e16", False),
        "laion2b_s34b_b79k": ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", False),
        "datacomp_xl_s13b_b90k": ("laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K", False),
        "datacomp_m_s128m_b4k": ("laion/CLIP-ViT-B-32-DataComp.M-s128M-b4K", False),
        "commonpool_m_clip_s128m_b4k": ("laion/CLIP-ViT-B-32-CommonPool.M.clip-s128M-b4K", False),
        "commonpool_m_laion_s128m_b4k": ("laion/CLIP-ViT-B-32-CommonPool.M.laion-s128M-b4K", False),
        "commonpool_m_image_s128m_b4k": ("laion/CLIP-ViT-B-32-CommonPool.M.image-s128M-b4K", False),
        "commonpool_m_text_s128m_b4k": ("laion/CLIP-ViT-B-32-CommonPool.M.text-s128M-b4K", False),
        "commonpool_m_basic_s128m_b4k": ("laion/CLIP-ViT-B-32-CommonPool.M.basic-s128M-b4K", False),
        "commonpool_m_s128m_b4k": ("laion/CLIP-ViT-B-32-CommonPool.M-s128M-b4K", False),
        "datacomp_s_s13m_b4k": ("laion/CLIP-ViT-B-32-DataComp.S-s13M-b4K", False),
        "commonpool_s_clip_s13m_b4k": ("laion/CLIP-ViT-B-32-CommonPool.S.clip-s13M-b4K", False),
        "commonpool_s_laion_s13m_b4k": ("laion/CLIP-ViT-B-32-CommonPool.S.laion-s13M-b4K", False),
        "commonpool_s_image_s13m_b4k": ("laion/CLIP-ViT-B-32-CommonPool.S.image-s13M-b4K", False),
        "commonpool_s_text_s13m_b4k": ("laion/CLIP-ViT-B-32-CommonPool.S.text-s13M-b4K", False),
        "commonpool_s_basic_s13m_b4k": ("laion/CLIP-ViT-B-32-CommonPool.S.basic-s13M-b4K", False),
        "commonpool_s_s13m_b4k": ("laion/CLIP-ViT-B-32-CommonPool.S-s13M-b4K", False),
        "metaclip_400m": ("timm/vit_base_patch32_clip_224.metaclip_400m", True),
        "metaclip_fullcc": ("timm/vit_base_patch32_clip_224.metaclip_2pt5b", True),
    },
    "ViT-B-32-256": {
        "datacomp_s34b_b86k": ("laion/CLIP-ViT-B-32-256x256-DataComp-s34B-b86K", False),
    },
    "ViT-B-16": {
        "openai": ("timm/vit_base_patch16_clip_224.openai", True),
        "laion400m_e31": ("timm/vit_base_patch16_clip_224.laion400m_e31", False),
        "laion400m_e32": ("timm/vit_base_patch16_clip_224.laion400m_e32", False),
        "laion2b_s34b_b88k": ("laion/CLIP-ViT-B-16-laion2B-s34B-b88K", False),
        "datacomp_xl_s13b_b90k": ("laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K", False),
        "datacomp_l_s1b_b8k": ("laion/CLIP-ViT-B-16-DataComp.L-s1B-b8K", False),
        "commonpool_l_clip_s1b_b8k": ("laion/CLIP-ViT-B-16-CommonPool.L.clip-s1B-b8K", False),
        "commonpool_l_laion_s1b_b8k": ("laion/CLIP-ViT-B-16-CommonPool.L.laion-s1B-b8K", False),
        "commonpool_l_image_s1b_b8k": ("laion/CLIP-ViT-B-16-CommonPool.L.image-s1B-b8K", False),
        "commonpool_l_text_s1b_b8k": ("laion/CLIP-ViT-B-16-CommonPool.L.text-s1B-b8K", False),
        "commonpool_l_basic_s1b_b8k": ("laion/CLIP-ViT-B-16-CommonPool.L.basic-s1B-b8K", False),
        "commonpool_l_s1b_b8k": ("laion/CLIP-ViT-B-16-CommonPool.L-s1B-b8K", False),
        "dfn2b": ("apple/DFN2B-CLIP-ViT-B-16", True),
        "metaclip_400m": ("timm/vit_base_patch16_clip_224.metaclip_400m", True),
        "metaclip_fullcc": ("timm/vit_base_patch16_clip_224.metaclip_2pt5b", True),
    },
    "ViT-B-16-plus-240": {
        "laion400m_e31": ("timm/vit_base_patch16_plus_clip_240.laion400m_e31", False),
        "laion400m_e32": ("timm/vit_base_patch16_plus_clip_240.laion400m_e31", False),
    },
    "ViT-L-14": {
        "openai": ("timm/vit_large_patch14_clip_224.openai", True),
        "laion400m_e31": ("timm/vit_large_patch14_clip_224.laion400m_e31", False),
        "laion400m_e32": ("timm/vit_large_patch14_clip_224.laion400m_e32", False),
        "datacomp_xl_s13b_b90k": ("laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K", False),
        "commonpool_xl_clip_s13b_b90k": ("laion/CLIP-ViT-L-14-CommonPool.XL.clip-s13B-b90K", False),
        "commonpool_xl_laion_s13b_b90k":
            ("laion/CLIP-ViT-L-14-CommonPool.XL.laion-s13B-b90K", False),
        "commonpool_xl_s13b_b90k": ("laion/CLIP-ViT-L-14-CommonPool.XL-s13B-b90K", False),
        "metaclip_400m": ("timm/vit_large_patch14_clip_224.metaclip_400m", True),
        "metaclip_fullcc": ("timm/vit_large_patch14_clip_224.metaclip_2pt5b", True),
        "dfn2b": ("apple/DFN2B-CLIP-ViT-L-14", True),
        "dfn2b_s39b": ("apple/DFN2B-CLIP-ViT-L-14-39B", False),
    },
    "ViT-L-14-336": {
        "openai": ("timm/vit_large_patch14_clip_336.openai", True),
    },
    "ViT-H-14": {
        "laion2b_s32b_b79k": ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", False),
        "metaclip_fullcc": ("timm/vit_huge_patch14_clip_224.metaclip_2pt5b", True),
        "metaclip_altogether": ("timm/vit_huge_patch14_clip_224.metaclip_altogether", False),
        "dfn5b": ("apple/DFN5B-CLIP-ViT-H-14", True),
    },
    "ViT-H-14-378": {
        "dfn5b": ("apple/DFN5B-CLIP-ViT-H-14-378", True),
    },
    "ViT-g-14": {
        "laion2b_s12b_b42k": ("laion/CLIP-ViT-g-14-laion2B-s12B-b42K", False),
        "laion2b_s34b_b88k": ("laion/CLIP-ViT-g-14-laion2B-s34B-b88K", False),
    },
    "ViT-bigG-14": {
        "laion2b_s39b_b160k": ("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", False),
        "metaclip_fullcc": ("timm/vit_gigantic_patch14_clip_224.metaclip_2pt5b", True),
    },
    "roberta-ViT-B-32": {
        "laion2b_s12b_b32k": ("laion/CLIP-ViT-B-32-roberta-base-laion2B-s12B-b32k", True),
    },
    "xlm-roberta-base-ViT-B-32": {
        "laion5b_s13b_b90k": ("laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k", False),
    },
    "xlm-roberta-large-ViT-H-14": {
        "frozen_laion5b_s13b_b90k":
            ("laion/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k", False),
    },
    "nllb-clip-base": {
        "v1": ("visheratin/nllb-clip-base-oc", False),
    },
    "nllb-clip-large": {
        "v1": ("visheratin/nllb-clip-large-oc", False),
    },
    "ViT-H-14-worldwide": {
        "metaclip2_worldwide": ("timm/vit_huge_patch14_clip_224.metaclip2_worldwide", True),
    },
    "ViT-H-14-worldwide-378": {
        "metaclip2_worldwide": ("timm/vit_huge_patch14_clip_378.metaclip2_worldwide", False),
    },
    "ViT-bigG-14-worldwide": {
        "metaclip2_worldwide": ("timm/vit_gigantic_patch14_clip_224.metaclip2_worldwide", False),
    },
    "ViT-bigG-14-worldwide-378": {
        "metaclip2_worldwide": ("timm/vit_gigantic_patch14_clip_378.metaclip2_worldwide", False),
    },
}
_QUICKGELU = "-quickgelu"
# The weight files of open_clip's layout in a repository, in the order open_clip looks for them.
_OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_OPEN_CLIP_CONFIG = "open_clip_config.json"
# transformers' layout: the config, then one file of weights (sharded ones are not read here).
_HF_CONFIG = "config.json"
_HF_FILES = ("model.safetensors", "flax_model.msgpack", "pytorch_model.bin")
_OPTIONS = ("resolution", "num_classes", "dtype", "seed")
_REPO = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")
_REVISION = re.compile(r"[\w.-]{1,100}")
_MAX_JSON_BYTES = 1 << 20
# open_clip's `CLIPVisionCfg` fields that change the tower, at their defaults: a config that
# sets one otherwise describes a tower these modules are not.
_VISION_DEFAULTS = {
    "ls_init_value": None, "attentional_pool": False, "no_ln_pre": False,
    "pos_embed_type": "learnable", "final_ln_after_pool": False, "pool_type": "tok",
    "output_tokens": False, "act_kwargs": None, "norm_kwargs": None, "block_type": None,
    "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
    "scale_attn_inner": False, "scale_attn": False, "scale_fc": False, "timm_model_name": None,
    "global_average_pool": False, "input_patchnorm": False,
}
# Fields that do not change the tower at inference: training-time patch dropout, and the
# settings of an attentional pool or a timm trunk, which a plain tower does not have.
_VISION_FIELDS = ("image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio")
_VISION_IGNORED = ("patch_dropout", "attn_pooler_queries", "attn_pooler_heads",
                   "timm_model_pretrained", "timm_pool", "timm_proj", "timm_proj_bias",
                   "timm_drop", "timm_drop_path")


@dataclasses.dataclass(frozen=True)
class Name:
  """A parsed hub name: `open_clip:<model>` (`model`, `quick_gelu` from a `-quickgelu` name)
  or `hf:<repo>[@<revision>]`."""
  name: str
  model: str | None = None
  quick_gelu: bool = False
  repo: str | None = None
  revision: str | None = None


def parse(name: str) -> Name:
  """Parses a hub name; a `UserError` naming what is allowed for a bad one."""
  if name.startswith("open_clip:"):
    model = name[len("open_clip:"):]
    quick_gelu = model.endswith(_QUICKGELU)
    base = model[:-len(_QUICKGELU)] if quick_gelu else model
    if model.startswith("hf-hub:"):
      raise errors.UserError(f"{name!r}: name a Hugging Face repository as "
                             f"'hf:{model[len('hf-hub:'):]}'")
    if base not in _MODELS:
      raise errors.UserError(f"{errors.quote(name)}: not an open_clip model with a plain CLIP "
                             f"image tower; known: {', '.join(_MODELS)} (each also with "
                             f"{_QUICKGELU!r})")
    return Name(name, model=base, quick_gelu=quick_gelu)
  if name.startswith("hf:"):
    repo, _, revision = name[len("hf:"):].partition("@")
    if not _REPO.fullmatch(repo) or ".." in repo or (revision and not _REVISION.fullmatch(
        revision)) or name.endswith("@"):
      raise errors.UserError(f"{errors.quote(name)}: not a Hugging Face repository name; "
                             "spell it hf:<org>/<repository>, optionally @<revision> (a "
                             "branch, tag or commit)")
    return Name(name, repo=repo, revision=revision or None)
  raise errors.UserError(f"{errors.quote(name)}: hub names start with open_clip: or hf:")


def entry(name: str) -> Entry:
  """The `rrjax.models.Entry` of hub name `name` (parsed only: nothing is read)."""
  parsed = parse(name)
  arch = _MODELS.get(parsed.model)
  return Entry(name, functools.partial(build, name),
               native_resolution=arch and arch.image_size, embed_dim=arch and arch.embed_dim,
               has_pretrained=True)


def build(name: str, pretrained: bool, head: str, weights: str | None = None, **kwargs):
  """Builds the tower named `name`; see the module docstring and `rrjax.models.load`.

  Args:
    name: `open_clip:<model>` or `hf:<repo>[@<revision>]`.
    pretrained: load the published weights; otherwise a random initialisation from `seed`.
    head: "embed", or "logits" with `num_classes` (a fresh classifier on the embedding).
    weights: for `open_clip:` names a pretrained tag or a path (loaded whenever given);
      None for `hf:` names.
    **kwargs: `resolution` (default: the tower's), `num_classes`, `dtype`, `seed`.

  Returns:
    `(module, variables)`: a `clip_resnet.ModifiedResNet` or a `clip_vit.CLIPVisionEncoder`.
  """
  unknown = sorted(set(kwargs) - set(_OPTIONS))
  if unknown:
    raise errors.UserError(f"unknown option(s) {unknown} for {name!r}; allowed: "
                           f"{', '.join(_OPTIONS)}")
  parsed = parse(name)
  if parsed.model is not None:
    arch = _MODELS[parsed.model]
    if not pretrained and weights is None:
      return _tower(name, arch, parsed.quick_gelu, None, head, kwargs)
    if weights is not None and _is_path(weights):
      path, quick_gelu = os.path.expanduser(weights), parsed.quick_gelu
    else:
      repo, quick_gelu = _tag(parsed, weights)
      path = _fetch_one(Name(name, repo=repo), _OPEN_CLIP_FILES)
    return _tower(name, arch, quick_gelu, path, head, kwargs)
  if weights is not None:
    raise errors.UserError(f"{name}: takes no weights ({weights!r}): the repository holds them "
                           "(pin a revision as hf:<org>/<repository>@<revision>)")
  files = _repository(parsed, pretrained)
  if files[0] == "open_clip":
    _, arch, quick_gelu, path = files
    return _tower(name, arch, quick_gelu, path, head, kwargs)
  from rrjax.models import clip_vit  # pylint: disable=import-outside-toplevel  # transformers
  config, params = clip_vit.load_vision_tower(files[1])
  return clip_vit.encoder(config, params if pretrained else None, head, **kwargs)


def standalone_name(name: str, weights: str | None) -> str:
  """The name that rebuilds the tower of `name` with `weights` from no file
  (`build(..., pretrained=False)`, an exported encoder's architecture).

  An open_clip model whose tag was trained with QuickGELU gets its `-quickgelu` name, whose
  random tower has that activation. An `hf:` repository (its config read from the Hugging Face
  cache, where the run that calls this found it) gets the `open_clip:` name of the model whose
  tower it is (`_MODELS`, with the repository's activation), e.g. FARE's `chs20/fare2-clip` ->
  `open_clip:ViT-B-32-quickgelu`, `openai/clip-vit-base-patch16` ->
  `open_clip:ViT-B-16-quickgelu`; a repository whose tower is none of them keeps its name, and
  rebuilding it needs the repository's config from the hub or its cache. Other names are their
  own."""
  parsed = parse(name)
  if parsed.repo is not None:
    known = _known_model(parsed)
    return name if known is None else f"open_clip:{known}"
  if (parsed.quick_gelu or not weights or weights == "random" or _is_path(weights)):
    return name
  return name + _QUICKGELU if _tag(parsed, weights)[1] else name


def _known_model(parsed: Name) -> str | None:
  """The open_clip model (`-quickgelu` where the tower has QuickGELU) whose random tower
  computes as the `hf:` repository's does, or None."""
  files = _repository_config(parsed)
  if files[0] == "open_clip":
    _, arch, quick_gelu = files
    for model, known in _MODELS.items():
      if known == arch:
        return model + _QUICKGELU if quick_gelu and not isinstance(arch.layers, tuple) else model
    return None
  from rrjax.models import clip_vit  # pylint: disable=import-outside-toplevel  # transformers
  vision = clip_vit.arch_of(files[1])
  for model, known in _MODELS.items():
    if isinstance(known.layers, tuple):
      continue
    for quick_gelu in (False, True):
      if clip_vit.arch_of(_vit_config(known, quick_gelu)) == vision:
        return model + _QUICKGELU if quick_gelu else model
  return None


def _tag(parsed: Name, weights: str | None) -> tuple[str, bool]:
  """`(repository, trained with QuickGELU)` of the pretrained tag `weights` of
  `open_clip:<model>` (a `-quickgelu` name has only the tags trained with it, as in open_clip)."""
  tags = {tag: value for tag, value in _TAGS[parsed.model].items()
          if value[1] or not parsed.quick_gelu}
  if weights not in tags:
    what = "needs" if weights is None else f"has no pretrained tag {errors.quote(weights)}:"
    raise errors.UserError(f"{parsed.name} {what} weights = one of open_clip's tags "
                           f"{', '.join(tags)}, or a path to an open_clip checkpoint")
  return tags[weights]


def _is_path(weights: str) -> bool:
  # Tags are plain words: anything with a folder or a weights file's suffix is a path.
  return ("/" in weights or os.sep in weights or weights.startswith("~")
          or weights.endswith((".safetensors", ".bin", ".pt", ".pth")))


def _tower(name: str, arch: Arch, quick_gelu: bool, path: str | None, head: str, kwargs: dict):
  """The tower `arch` with the open_clip checkpoint at `path` (None: random)."""
  if isinstance(arch.layers, tuple):
    resnet = clip_resnet.Arch(name, arch.layers, arch.width, arch.embed_dim,
                              arch.width * 32 // arch.head_width)
    return clip_resnet.build(resnet, pretrained=path is not None, head=head, weights=path,
                             **{"resolution": arch.image_size, **kwargs})
  from rrjax.models import clip_vit  # pylint: disable=import-outside-toplevel  # transformers
  config = _vit_config(arch, quick_gelu)
  params = None
  if path is not None:
    params = jax.tree.map(jnp.asarray, _vit_params(os.path.abspath(path),
                                                   clip_vit.arch_of(config)))
  return clip_vit.encoder(config, params, head, **kwargs)


def _vit_config(arch: Arch, quick_gelu: bool):
  from transformers import CLIPVisionConfig  # pylint: disable=import-outside-toplevel
  return CLIPVisionConfig(
      hidden_size=arch.width, intermediate_size=int(arch.width * arch.mlp_ratio),
      num_hidden_layers=arch.layers, num_attention_heads=arch.width // arch.head_width,
      image_size=arch.image_size, patch_size=arch.patch_size, projection_dim=arch.embed_dim,
      hidden_act="quick_gelu" if quick_gelu else "gelu", layer_norm_eps=1e-5)


@functools.lru_cache(maxsize=4)
def _vit_params(path: str, arch: tuple) -> dict:
  # Reading and converting a ViT-L takes seconds, repeated by every stage that builds the
  # teacher; cached per file and architecture for the process's life, as host arrays.
  from transformers import CLIPVisionConfig  # pylint: disable=import-outside-toplevel
  from rrjax.models import clip_vit  # pylint: disable=import-outside-toplevel
  visual = clip_resnet.visual_tensors(clip_resnet.read_state_dict(path), path)
  shapes = clip_vit.param_shapes(CLIPVisionConfig(**dict(arch)))
  return openai_layout.vit_from_state_dict(visual, shapes, source=path)


# --- the hub -------------------------------------------------------------------------------------

def _repository(parsed: Name, weights: bool) -> tuple:
  """The files of an `hf:` repository: `("open_clip", Arch, quick_gelu, weights path or None
  unless `weights`)` or `("transformers", snapshot directory)` (whose config and weights
  transformers reads together)."""
  config = _repository_config(parsed)
  if config[0] == "open_clip":
    return (*config, _fetch_one(parsed, _OPEN_CLIP_FILES) if weights else None)
  return "transformers", os.path.dirname(_fetch_one(parsed, _HF_FILES))


def _repository_config(parsed: Name) -> tuple:
  """The architecture of an `hf:` repository, no weights read: `("open_clip", Arch,
  quick_gelu)` or `("transformers", CLIPVisionConfig)`."""
  config = _fetch(parsed, (_OPEN_CLIP_CONFIG,))
  if config is not None:
    return ("open_clip", *read_open_clip_config(config))
  path = _fetch(parsed, (_HF_CONFIG,))
  if path is None:
    raise errors.UserError(f"{parsed.name}: {_missing(parsed, (_OPEN_CLIP_CONFIG, _HF_CONFIG))}"
                           " (open_clip's layout, or transformers')")
  from rrjax.models import clip_vit  # pylint: disable=import-outside-toplevel  # transformers
  return "transformers", clip_vit.read_vision_config(os.path.dirname(path))


def _fetch_one(parsed: Name, filenames: tuple[str, ...]) -> str:
  path = _fetch(parsed, filenames)
  if path is None:
    raise errors.UserError(f"{parsed.name}: {_missing(parsed, filenames)}")
  return path


def _missing(parsed: Name, filenames: tuple[str, ...]) -> str:
  from huggingface_hub import constants  # pylint: disable=import-outside-toplevel
  where = f"{parsed.repo}@{parsed.revision}" if parsed.revision else parsed.repo
  return (f"none of {', '.join(filenames)} in the Hugging Face repository {where}, or not in "
          f"the cache {constants.HF_HUB_CACHE} while the hub is off (HF_HUB_OFFLINE) or "
          f"unreachable: `huggingface-cli download {parsed.repo}` where it can be reached")


def _fetch(parsed: Name, filenames: tuple[str, ...]) -> str | None:
  """The cached path of the first of `filenames` the repository has (downloaded if the hub is
  on and it is not cached yet); None if none is there."""
  import huggingface_hub  # pylint: disable=import-outside-toplevel
  from huggingface_hub import errors as hub_errors  # pylint: disable=import-outside-toplevel
  for filename in filenames:
    try:
      return huggingface_hub.hf_hub_download(parsed.repo, filename, revision=parsed.revision)
    except hub_errors.EntryNotFoundError:  # not in the repository, or (Local...) not cached
      continue
    except (hub_errors.HfHubHTTPError, OSError, ValueError) as e:  # no such repository, ...
      raise errors.UserError(f"{parsed.name}: cannot fetch {filename} "
                             f"({errors.one_line(f'{type(e).__name__}: {e}', 200)})") from None
  return None


def read_open_clip_config(path: str) -> tuple[Arch, bool]:
  """`(Arch, quick_gelu)` of an `open_clip_config.json`, every field it uses checked.

  Raises:
    rrjax.errors.UserError: naming the file and the field, for a file that is not such a
      config, describes a tower other than a plain CLIP one, or normalises otherwise.
  """
  def refuse(problem: str):
    raise errors.UserError(f"{path}: {problem}")

  try:
    regular = stat.S_ISREG(os.stat(path).st_mode)
  except OSError as e:
    refuse(f"cannot be read ({e.strerror or e})")
  if not regular:  # a FIFO or a device would block or flood
    refuse("not a regular file")
  try:
    with open(path, "rb") as f:
      raw = f.read(_MAX_JSON_BYTES + 1)
    content = json.loads(raw) if len(raw) <= _MAX_JSON_BYTES else None
  except (OSError, ValueError, RecursionError) as e:
    refuse(f"not readable JSON ({errors.one_line(f'{type(e).__name__}: {e}', 120)})")
  if len(raw) > _MAX_JSON_BYTES:
    refuse(f"larger than {_MAX_JSON_BYTES} bytes; not an open_clip config")
  if not isinstance(content, dict):
    refuse("not a JSON object")
  model = content.get("model_cfg", content)
  vision = model.get("vision_cfg") if isinstance(model, dict) else None
  if not isinstance(vision, dict):
    refuse("no model_cfg.vision_cfg object (not an open_clip config)")
  for field in ("mean", "std"):
    value = (content.get("preprocess_cfg") or {}).get(field)
    want = CLIP_MEAN if field == "mean" else CLIP_STD
    if value is not None and not (isinstance(value, list) and len(value) == 3 and all(
        isinstance(v, (int, float)) and abs(v - w) < 1e-6 for v, w in zip(value, want))):
      refuse(f"preprocess_cfg.{field} {errors.one_line(repr(value), 80)} is not OpenAI's "
             f"{list(want)}, with which rrjax's CLIP towers normalise")
  for field, value in vision.items():
    if field in _VISION_DEFAULTS and value != _VISION_DEFAULTS[field]:
      refuse(f"vision_cfg.{field} = {errors.one_line(repr(value), 60)}: not a plain CLIP image "
             f"tower (which has {field} = {_VISION_DEFAULTS[field]!r})")
    if field not in _VISION_DEFAULTS and field not in _VISION_IGNORED + _VISION_FIELDS:
      refuse(f"vision_cfg.{errors.quote(field, 40)}: not a field of a plain CLIP image tower")

  def count(value, field, limit=1 << 16):
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
      refuse(f"{field} = {errors.one_line(repr(value), 60)}: not a whole number in "
             f"[1, {limit}]")
    return value

  size = vision.get("image_size", 224)
  if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
    size = size[0]
  layers = vision.get("layers", 12)
  if isinstance(layers, list):
    if len(layers) != 4:
      refuse(f"vision_cfg.layers = {errors.one_line(repr(layers), 60)}: a ModifiedResNet has "
             "four stages")
    layers = tuple(count(n, "vision_cfg.layers[]") for n in layers)
  else:
    layers = count(layers, "vision_cfg.layers")
  ratio = vision.get("mlp_ratio", 4.0)
  if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < ratio <= 64:
    refuse(f"vision_cfg.mlp_ratio = {errors.one_line(repr(ratio), 60)}: not a number in (0, 64]")
  patch = vision.get("patch_size", 16)
  arch = Arch(count(size, "vision_cfg.image_size"), layers,
              count(vision.get("width", 768), "vision_cfg.width"),
              0 if isinstance(layers, tuple) else count(patch, "vision_cfg.patch_size"),
              count(vision.get("head_width", 64), "vision_cfg.head_width"), float(ratio),
              count(model.get("embed_dim"), "model_cfg.embed_dim"))
  quick_gelu = model.get("quick_gelu", False)
  if not isinstance(quick_gelu, bool):
    refuse(f"model_cfg.quick_gelu = {errors.one_line(repr(quick_gelu), 60)}: not true or false")
  return arch, quick_gelu


def problem(name: str, weights: str) -> str | None:
  """Why hub name `name` with config `weights` cannot load, found before any compute (its
  spelling; a local checkpoint that is not there; while the hub is off, files missing from the
  cache); None if it may load."""
  import huggingface_hub  # pylint: disable=import-outside-toplevel
  from huggingface_hub import constants  # pylint: disable=import-outside-toplevel
  try:
    parsed = parse(name)
    if parsed.model is not None and weights == "random":
      return None
    if parsed.model is not None and weights and _is_path(weights):
      path = os.path.expanduser(weights)
      return None if os.path.isfile(path) else f"{weights}: no such file"
    if parsed.model is not None:
      parsed, needed = Name(name, repo=_tag(parsed, weights or None)[0]), [_OPEN_CLIP_FILES]
    elif weights not in ("", "random"):
      return f"{name}: takes no weights ({weights!r}): the repository holds them"
    else:
      needed = [(_OPEN_CLIP_CONFIG,)] + ([_OPEN_CLIP_FILES] if weights != "random" else [])
  except errors.UserError as e:
    return str(e)
  if not constants.HF_HUB_OFFLINE:
    return None

  def cached(filenames):
    return any(isinstance(huggingface_hub.try_to_load_from_cache(
        parsed.repo, f, revision=parsed.revision), str) for f in filenames)

  if parsed.model is None and not cached(needed[0]):
    needed = [(_HF_CONFIG,), _HF_FILES]
  missing = [files for files in needed if not cached(files)]
  return f"{name}: {_missing(parsed, missing[0])}" if missing else None
