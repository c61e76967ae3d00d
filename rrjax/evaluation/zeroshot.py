"""Zero-shot classification with CLIP: class prompts through the text tower as a linear head.

    classifier = classifier_for_teacher("clip_rn101", "/path/to/RN101.pt", ["cat", "dog"])
    classifier = text_classifier("/path/to/clip-vit-base-patch32", ["cat", "dog"])   # [D, C]
    logits = zeroshot_logits(image_embeddings, classifier)                          # [B, C]

`image_embeddings` are the image tower's projected embeddings, e.g. those of the teacher
encoder of the same checkpoint (or of a student trained to recover them).

Text towers: for the `clip_vit_*` teachers transformers' Flax CLIP (`text_classifier`); for
`clip_rn50` / `clip_rn101` the text tower stored next to the image tower in OpenAI's `.pt` or
an open_clip checkpoint (`rrjax.models.clip_text`), fed by transformers' `CLIPTokenizer`, which
has OpenAI's BPE vocabulary (its text clean-up differs from OpenAI's only on unusual text:
accents, HTML entities, without the `ftfy` package).
"""

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from transformers import CLIPTokenizer, FlaxCLIPModel

from rrjax import errors
from rrjax.models import clip_resnet, clip_text, clip_vit

# Teachers with a zero-shot head (`classifier_for_teacher`).
TEACHERS = tuple(sorted(clip_vit.HUB_NAMES)) + tuple(sorted(clip_resnet.ARCHS))
# OpenAI's BPE vocabulary, for the text towers of checkpoints that hold no tokenizer files.
DEFAULT_TOKENIZER = "openai/clip-vit-base-patch32"


def _normalise(x, axis=-1):
  # The floor keeps an all-zero embedding finite (zero logits) instead of NaN.
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def text_classifier(clip_weights: str | os.PathLike | FlaxCLIPModel, class_names: Sequence[str],
                    template: str | Sequence[str] = "a photo of a {}.", *,
                    tokenizer: CLIPTokenizer | None = None) -> np.ndarray:
  """Normalised text embeddings of one prompt per class, the columns of a zero-shot head.

  Args:
    clip_weights: a local HF CLIP directory (or hub name) holding the model and its tokenizer
      files, or a loaded `FlaxCLIPModel`.
    class_names: the C class names, substituted for `{}` in `template`.
    template: a prompt template, or several whose normalised embeddings are averaged (CLIP's
      prompt ensembling).
    tokenizer: defaults to the `CLIPTokenizer` of `clip_weights`' directory; required with a
      `FlaxCLIPModel`.

  Returns:
    float32 `[D, C]`, unit-norm columns, D the CLIP projection width.
  """
  templates = _templates(class_names, template)
  if isinstance(clip_weights, FlaxCLIPModel):
    # Flax models do not record the directory they were loaded from.
    if tokenizer is None:
      raise ValueError("text_classifier of a FlaxCLIPModel object needs tokenizer=")
    model, params = clip_weights, clip_weights.params
  else:
    model, params = clip_vit.load_pretrained(FlaxCLIPModel, os.fspath(clip_weights))
    tokenizer = tokenizer or _load_tokenizer(os.fspath(clip_weights))
  max_length = model.config.text_config.max_position_embeddings
  features = jax.jit(lambda p, ids, mask: model.get_text_features(ids, mask, params=p))

  def embed(prompts):
    tokens = tokenizer(prompts, padding=True, truncation=True, max_length=max_length,
                       return_tensors="np")
    return features(params, tokens["input_ids"], tokens["attention_mask"])

  return _prompt_ensemble(embed, class_names, templates)


def _templates(class_names: Sequence[str], template: str | Sequence[str]) -> list[str]:
  """`template` as a list, checked (with `class_names`) before any weights are loaded."""
  templates = [template] if isinstance(template, str) else list(template)
  if not class_names or not templates:
    raise ValueError(f"need at least one class name and one template, got {len(class_names)} "
                     f"and {len(templates)}")
  return templates


def _prompt_ensemble(embed, class_names: Sequence[str], templates: list[str]) -> np.ndarray:
  """`[D, C]` unit-norm columns: per class the normalised mean of its normalised prompts.

  Args:
    embed: `list[str]` of C prompts -> text features `[C, D]`.
    class_names: the C class names.
    templates: prompt templates with a `{}` for the class name.
  """
  total = 0.0
  for t in templates:
    total += _normalise(embed([t.format(name) for name in class_names]))
  return np.asarray(_normalise(total).T, np.float32)


def _load_tokenizer(source: str) -> CLIPTokenizer:
  clip_vit.check_local_source(source)
  try:
    return CLIPTokenizer.from_pretrained(source, trust_remote_code=False)
  except Exception as e:  # Missing files, no network: the same advice.
    reason = errors.one_line(f"{type(e).__name__}: {e}", 200)
    raise errors.UserError(f"could not load the CLIP tokenizer {source!r} ({reason}); pass "
                           "tokenizer=<local HF directory with vocab.json and merges.txt, e.g. "
                           f"a copy of {DEFAULT_TOKENIZER}>") from e


def checkpoint_text_classifier(weights: str | os.PathLike, class_names: Sequence[str],
                               template: str | Sequence[str] = "a photo of a {}.", *,
                               tokenizer: CLIPTokenizer) -> np.ndarray:
  """`text_classifier` for the text tower of an OpenAI `.pt` or open_clip checkpoint file.

  Args:
    weights: the checkpoint file (see `clip_text.load_weights`).
    class_names, template: as for `text_classifier`.
    tokenizer: a `CLIPTokenizer` of the checkpoint's vocabulary (OpenAI's for their models).

  Returns:
    float32 `[D, C]`, unit-norm columns, D the width of `text_projection`.

  Raises:
    ValueError: the tokenizer does not fit the checkpoint's text tower (ids beyond its
      vocabulary, or an end-of-text token that is not the largest id of a prompt, where the
      tower pools).
  """
  templates = _templates(class_names, template)
  module, variables = clip_text.load_weights(weights)
  features = jax.jit(module.apply)

  def embed(prompts):
    ids = tokenizer(prompts, padding=True, truncation=True, max_length=module.context_length,
                    return_tensors="np")["input_ids"]
    if ids.max() >= module.vocab_size:
      raise errors.UserError(f"the tokenizer gives token id {ids.max()}, but the text tower of "
                             f"{os.fspath(weights)} has a vocabulary of {module.vocab_size}; pass "
                             "the tokenizer of this checkpoint")
    pooled = ids[np.arange(len(ids)), ids.argmax(axis=1)]
    if (pooled != tokenizer.eos_token_id).any():
      raise errors.UserError("CLIP pools at the largest token id, which must be the end-of-text "
                             f"token ({tokenizer.eos_token_id}), but this tokenizer gives "
                             f"{sorted(set(pooled.tolist()))[:5]}; pass the tokenizer of this "
                             "checkpoint")
    return features(variables, ids)

  return _prompt_ensemble(embed, class_names, templates)


def classifier_for_teacher(name: str, weights: str, class_names: Sequence[str],
                           template: str | Sequence[str] = "a photo of a {}.", *,
                           tokenizer: str | None = None) -> np.ndarray:
  """The zero-shot head of teacher `name`, from the text tower of its CLIP checkpoint.

  Args:
    name: one of `TEACHERS`: `clip_vit_b32`, `clip_vit_b16`, `clip_vit_l14` (transformers'
      CLIP, see `text_classifier`), `clip_rn50`, `clip_rn101` (the text tower of an OpenAI
      `.pt` or open_clip checkpoint, see `checkpoint_text_classifier`).
    weights: for the ViTs a local HF directory or hub name, "" for the published checkpoint
      (`clip_vit.HUB_NAMES`); for the ResNets a checkpoint file, "" for OpenAI's file in
      `clip.load`'s cache (`~/.cache/clip/RN50.pt`, `RN101.pt`), where the image tower is
      loaded from too.
    class_names: the C class names, substituted for `{}` in `template`.
    template: a prompt template, or several whose normalised embeddings are averaged.
    tokenizer: a local HF directory or hub name of a `CLIPTokenizer`. Default: for the ViTs the
      one in `weights`, for the ResNets `DEFAULT_TOKENIZER` (OpenAI's vocabulary).

  Returns:
    float32 `[D, C]`, unit-norm columns, D the teacher's embedding width.

  Raises:
    ValueError: `name` has no text tower here, or the weights do not fit.
    FileNotFoundError: `weights` is "" for a ResNet and OpenAI's file is not in the cache.
    OSError: the weights or the tokenizer could not be loaded.
  """
  if name in clip_vit.HUB_NAMES:
    return text_classifier(weights or clip_vit.HUB_NAMES[name], class_names, template,
                           tokenizer=_load_tokenizer(tokenizer) if tokenizer else None)
  if name in clip_resnet.ARCHS:
    path = weights or clip_resnet.default_weights_path(clip_resnet.ARCHS[name])
    return checkpoint_text_classifier(path, class_names, template,
                                      tokenizer=_load_tokenizer(tokenizer or DEFAULT_TOKENIZER))
  raise errors.UserError(f"no zero-shot classifier for teacher {name!r}: only CLIP teachers have "
                         f"a text tower ({', '.join(TEACHERS)})")


def zeroshot_logits(image_embeddings: jax.Array, classifier: jax.Array,
                    scale: float = 100.0) -> jax.Array:
  """Scaled cosine similarities: `[B, D]` embeddings, `[D, C]` classifier -> `[B, C]`.

  The embeddings are normalised here; `classifier`'s columns are expected unit-norm (as
  `text_classifier` returns them). 100 is CLIP's learnt (and clipped) logit scale.
  """
  if image_embeddings.ndim != 2 or classifier.ndim != 2 or (
      image_embeddings.shape[1] != classifier.shape[0]):
    raise ValueError(f"expected embeddings [B, D] and classifier [D, C], got "
                     f"{image_embeddings.shape} and {classifier.shape}")
  return scale * _normalise(image_embeddings) @ classifier
