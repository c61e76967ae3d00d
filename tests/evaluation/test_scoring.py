"""rrjax.evaluation.scoring: draw keys, top-1, and the evaluation over corruption draws."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import corruptions
from rrjax.evaluation import scoring
from rrjax.evaluation.features import Encoder

N, CLASSES = 48, 6


class _Pixels:
  """A module-like linear classifier on raw pixels: `apply(variables, x, train) -> logits`."""

  def apply(self, variables, images, train=False):
    del train
    return images.reshape(images.shape[0], -1) @ variables["w"]


@pytest.fixture(scope="module")
def task():
  """A fixed linear classifier on raw pixels and the labels it gives the clean images."""
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (N, 8, 8, 3)).astype(np.float32)
  weights = {"w": jnp.asarray(rng.normal(0, 1, (8 * 8 * 3, CLASSES)), jnp.float32)}
  labels = np.asarray(jnp.argmax(_Pixels().apply(weights, images), axis=-1))
  return Encoder(_Pixels(), weights, batch_size=20), images, labels


def _identity(x):
  return x


def test_draw_keys():
  data = lambda keys: [jax.random.key_data(k).tolist() for k in keys]
  keys = data(scoring.draw_keys(0, "mask(0.9)", 3))
  assert keys == data(scoring.draw_keys(0, "mask( 0.90 )", 3))  # Canonical spec.
  assert len({str(k) for k in keys}) == 3
  assert keys[:2] == data(scoring.draw_keys(0, "mask(0.9)", 2))
  assert keys != data(scoring.draw_keys(1, "mask(0.9)", 3))
  assert keys != data(scoring.draw_keys(0, "mask(0.75)", 3))
  with pytest.raises(ValueError, match="draws=0"):
    scoring.draw_keys(0, "mask(0.9)", 0)


def test_top1_in_percent():
  logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.5, 0.4]])
  assert scoring.top1(logits, np.array([1, 0, 0, 0])) == 75.0
  assert scoring.top1(jnp.asarray(logits), [1, 0, 1, 0]) == 100.0


def test_accuracy_over_draws_seeded(task):
  encoder, images, labels = task
  op = corruptions.build("mask(0.5)")
  run = lambda seed: scoring.accuracy_over_draws(
      functools.partial(encoder.features, images, op), {"head": _identity}, labels, op,
      seed=seed, draws=4)["head"]
  first = run(0)
  assert len(first) == 4
  assert len(set(first)) > 1  # Each draw masks different pixels.
  assert first == run(0)
  assert first != run(1)
  assert max(first) < 100  # The clean images are all classified correctly.


def test_accuracy_over_draws_matches_direct_evaluation(task):
  """Every head scored on the same features of each draw, recomputed by hand."""
  encoder, images, labels = task
  op = corruptions.build("noise(0.3)")
  heads = {"raw": _identity, "negated": lambda x: -x}
  got = scoring.accuracy_over_draws(functools.partial(encoder.features, images, op), heads,
                                    labels, op, seed=2, draws=2)
  weights = encoder.variables["w"]
  for d, key in enumerate(scoring.draw_keys(2, "noise(0.3)", 2)):
    # Batches of 20, 20 and 8 images, batch b corrupted with fold_in(key, b).
    logits = np.concatenate([
        np.asarray(op(jax.random.fold_in(key, b), images[s:s + 20]).reshape(-1, 192) @ weights)
        for b, s in enumerate(range(0, N, 20))])
    assert got["raw"][d] == pytest.approx(100 * np.mean(logits.argmax(-1) == labels))
    assert got["negated"][d] == pytest.approx(100 * np.mean(logits.argmin(-1) == labels))


def test_deterministic_operator_uses_one_draw(task):
  encoder, images, labels = task
  blur = corruptions.build("blur(3,1)")
  got = scoring.accuracy_over_draws(functools.partial(encoder.features, images, blur),
                                    {"head": _identity}, labels, blur, seed=0, draws=10)
  assert len(got["head"]) == 1
  clean = corruptions.build("identity")
  calls = []
  got = scoring.accuracy_over_draws(lambda key: calls.append(key) or encoder.features(images),
                                    {"head": _identity}, labels, clean, seed=0, draws=10)
  assert got == {"head": [100.0]} and len(calls) == 1
