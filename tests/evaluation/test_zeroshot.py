"""rrjax.evaluation.zeroshot: text-prompt heads from the CLIP text towers, and their logits.

The towers and checkpoints are the tiny random ones of tests/models/test_clip_text.py (OpenAI's
naming, a ModifiedResNet image tower) and tests/models/test_clip_vit.py (an HF directory).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from transformers import CLIPTokenizer

from rrjax import errors
from rrjax.evaluation import zeroshot
from rrjax.models import clip_resnet
# The fixtures clip_dir, hf_clip, tiny_ckpt and tokenizer_dir, and the towers' helpers.
from tests.models.test_clip_resnet import TINY, _torch_tree
from tests.models.test_clip_text import (CLASSES, _clip_state, _np_text_features,  # noqa: F401
                                         _openai_tokens, _unit, _write_tokenizer, tiny_ckpt,
                                         tokenizer_dir)
from tests.models.test_clip_vit import _VOCAB, PROJ, clip_dir, hf_clip  # noqa: F401
from tests.models.test_torch_reader import write_zip


def test_text_classifier_matches_manual(clip_dir, hf_clip):
  classifier = zeroshot.text_classifier(clip_dir, CLASSES)
  tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
  tokens = tokenizer([f"a photo of a {c}." for c in CLASSES], padding=True, return_tensors="np")
  want = hf_clip.get_text_features(tokens["input_ids"], tokens["attention_mask"])
  want = want / jnp.linalg.norm(want, axis=-1, keepdims=True)
  assert classifier.shape == (PROJ, len(CLASSES)) and classifier.dtype == np.float32
  np.testing.assert_allclose(classifier, want.T, atol=1e-5)
  # A loaded model works too; two templates average their normalised embeddings.
  one = zeroshot.text_classifier(hf_clip, CLASSES, "a {}.", tokenizer=tokenizer)
  both = zeroshot.text_classifier(hf_clip, CLASSES, ["a photo of a {}.", "a {}."],
                                  tokenizer=tokenizer)
  with pytest.raises(ValueError, match="tokenizer="):
    zeroshot.text_classifier(hf_clip, CLASSES)
  mean = (classifier + one) / 2
  np.testing.assert_allclose(both, mean / np.linalg.norm(mean, axis=0), atol=1e-5)


def test_zeroshot_logits_pick_matching_class():
  classifier = np.linalg.qr(np.random.default_rng(0).normal(size=(PROJ, 4)))[0]  # [D, C]
  order = np.array([2, 0, 3, 1, 2])
  # Image b's embedding is (a positive multiple of) class order[b]'s text embedding.
  embeddings = classifier.T[order] * np.arange(1, 6)[:, None]
  logits = zeroshot.zeroshot_logits(jnp.asarray(embeddings), jnp.asarray(classifier))
  assert logits.shape == (5, 4)
  np.testing.assert_array_equal(np.argmax(logits, axis=1), order)
  np.testing.assert_allclose(logits[np.arange(5), order], 100.0, rtol=1e-5)
  with pytest.raises(ValueError, match=r"\[B, D\]"):
    zeroshot.zeroshot_logits(jnp.ones((2, PROJ + 1)), jnp.asarray(classifier))


def test_classifier_for_teacher(tiny_ckpt, tokenizer_dir):
  state, path = tiny_ckpt
  tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
  templates = ["a photo of a {}.", "a {}."]
  per_template = [_unit(_np_text_features(
      _openai_tokens(tokenizer, [t.format(c) for c in CLASSES], 16), state, heads=2), axis=1)
      for t in templates]

  one = zeroshot.classifier_for_teacher("clip_rn101", str(path), CLASSES,
                                        tokenizer=tokenizer_dir)
  assert one.shape == (TINY.embed_dim, len(CLASSES)) and one.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(one, axis=0), 1.0, rtol=1e-6)
  print(f"max abs diff vs numpy {np.abs(one - per_template[0].T).max():.2e}")
  np.testing.assert_allclose(one, per_template[0].T, atol=1e-5)
  both = zeroshot.classifier_for_teacher("clip_rn50", str(path), CLASSES, templates,
                                         tokenizer=tokenizer_dir)
  np.testing.assert_allclose(both, _unit(sum(per_template), axis=1).T, atol=1e-5)

  # With the image tower of the same file: a zero-shot head over its embeddings.
  module, variables = clip_resnet.build(TINY, pretrained=True, head="embed", weights=str(path),
                                        resolution=64)
  images = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))
  logits = zeroshot.zeroshot_logits(module.apply(variables, images), one)
  assert logits.shape == (2, len(CLASSES)) and np.abs(np.asarray(logits)).max() <= 100 + 1e-3


def test_classifier_for_vit_teacher_is_text_classifier(clip_dir):  # noqa: F811
  want = zeroshot.text_classifier(clip_dir, CLASSES)
  got = zeroshot.classifier_for_teacher("clip_vit_b16", clip_dir, CLASSES)
  np.testing.assert_array_equal(got, want)
  # A tokenizer named apart from the weights (here the same files).
  got = zeroshot.classifier_for_teacher("clip_vit_l14", clip_dir, CLASSES, tokenizer=clip_dir)
  np.testing.assert_array_equal(got, want)


def test_long_prompts_are_truncated_to_the_context(tiny_ckpt, tokenizer_dir):
  _, path = tiny_ckpt
  classifier = zeroshot.classifier_for_teacher("clip_rn101", str(path), ["cat", "abcdefghijk"],
                                               "a photo of a {} in the park.",
                                               tokenizer=tokenizer_dir)
  assert classifier.shape == (TINY.embed_dim, 2) and np.isfinite(classifier).all()


def test_teacher_and_tokenizer_errors(tiny_ckpt, tokenizer_dir, tmp_path, monkeypatch):
  state, path = tiny_ckpt
  with pytest.raises(ValueError, match=r"teacher 'resnet50'.*\(clip_vit_b16, clip_vit_b32, "
                                       r"clip_vit_l14, clip_rn101, clip_rn50\)"):
    zeroshot.classifier_for_teacher("resnet50", "", CLASSES, tokenizer=tokenizer_dir)
  with pytest.raises(ValueError, match="at least one class name"):
    zeroshot.classifier_for_teacher("clip_rn101", str(path), [], tokenizer=tokenizer_dir)
  with pytest.raises(errors.UserError,
                     match=r"could not load the CLIP tokenizer .*pass tokenizer="):
    zeroshot.classifier_for_teacher("clip_rn101", str(path), CLASSES, tokenizer=str(tmp_path))
  # A tokenizer of another vocabulary: ids past the tower's embedding rows.
  small = tmp_path / "small.pt"
  write_zip(small, _torch_tree(_clip_state(vocab_size=40)))
  with pytest.raises(ValueError, match=r"token id 5\d.*vocabulary of 40"):
    zeroshot.classifier_for_teacher("clip_rn101", str(small), CLASSES, tokenizer=tokenizer_dir)
  # One whose end-of-text token is not its largest id: CLIP would pool at the wrong token.
  reordered = [t for t in _VOCAB if t != "cat</w>"] + ["cat</w>"]
  other = _write_tokenizer(tmp_path / "reordered", reordered)
  with pytest.raises(ValueError, match=r"largest token id.*end-of-text token \(56\)"):
    zeroshot.classifier_for_teacher("clip_rn101", str(path), CLASSES, tokenizer=other)
  # "" is OpenAI's file in clip.load's cache, which is not there.
  monkeypatch.setenv("HOME", str(tmp_path))
  with pytest.raises(errors.UserError, match=r"RN50\.pt"):
    zeroshot.classifier_for_teacher("clip_rn50", "", CLASSES, tokenizer=tokenizer_dir)
  assert zeroshot.TEACHERS == ("clip_vit_b16", "clip_vit_b32", "clip_vit_l14", "clip_rn101",
                               "clip_rn50")


def test_the_teachers_are_the_encoders_with_a_text_tower():
  from rrjax import models  # pylint: disable=g-import-not-at-top
  assert sorted(zeroshot.TEACHERS) == list(models.WITH_TEXT_TOWER)
