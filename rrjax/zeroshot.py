"""Zero-shot classification with CLIP: class prompts through the text tower as a linear head.

    classifier = text_classifier("/path/to/clip-vit-base-patch32", ["cat", "dog"])   # [D, C]
    logits = zeroshot_logits(image_embeddings, classifier)                          # [B, C]

`image_embeddings` are the image tower's projected embeddings, e.g. those of the `clip_vit_*`
encoders of the same checkpoint (or of a student trained to recover them).
"""

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from transformers import CLIPTokenizer, FlaxCLIPModel

from rrjax.models import clip_vit


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
  if isinstance(clip_weights, FlaxCLIPModel):
    # Flax models do not record the directory they were loaded from.
    if tokenizer is None:
      raise ValueError("text_classifier of a FlaxCLIPModel object needs tokenizer=")
    model, params = clip_weights, clip_weights.params
  else:
    model, params = clip_vit.load_pretrained(FlaxCLIPModel, os.fspath(clip_weights))
    tokenizer = tokenizer or CLIPTokenizer.from_pretrained(os.fspath(clip_weights))
  templates = [template] if isinstance(template, str) else list(template)
  if not class_names or not templates:
    raise ValueError(f"need at least one class name and one template, got {len(class_names)} "
                     f"and {len(templates)}")

  features = jax.jit(lambda p, ids, mask: model.get_text_features(ids, mask, params=p))
  total = 0.0
  for t in templates:
    tokens = tokenizer([t.format(name) for name in class_names], padding=True, truncation=True,
                       max_length=model.config.text_config.max_position_embeddings,
                       return_tensors="np")
    total += _normalise(features(params, tokens["input_ids"], tokens["attention_mask"]))
  return np.asarray(_normalise(total).T, np.float32)


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
