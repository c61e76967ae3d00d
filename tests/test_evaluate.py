"""Tests of rrjax.evaluate: draw keys, the summary statistics and top-1 over draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import corruptions, evaluate

N, CLASSES = 48, 6


@pytest.fixture(scope="module")
def task():
  """A fixed linear classifier on raw pixels and the labels it gives the clean images."""
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (N, 8, 8, 3)).astype(np.float32)
  weights = jnp.asarray(rng.normal(0, 1, (8 * 8 * 3, CLASSES)), jnp.float32)

  def predict_fn(x):
    return x.reshape(x.shape[0], -1) @ weights

  labels = np.asarray(jnp.argmax(predict_fn(images), axis=-1))
  return predict_fn, images, labels


def test_summarize_matches_numpy():
  accuracies = [81.2, 83.0, 82.4, 79.9]
  got = evaluate.summarize(accuracies)
  std = np.std(accuracies, ddof=1)
  assert got["top1_mean"] == pytest.approx(np.mean(accuracies))
  assert got["top1_std"] == pytest.approx(std)
  assert got["top1_stderr"] == pytest.approx(std / 2)
  assert got["draws"] == accuracies


def test_summarize_one_draw():
  assert evaluate.summarize([77.5]) == {"top1_mean": 77.5, "top1_std": 0.0,
                                        "top1_stderr": 0.0, "draws": [77.5]}
  with pytest.raises(ValueError):
    evaluate.summarize([])


def test_draw_keys():
  data = lambda keys: [jax.random.key_data(k).tolist() for k in keys]
  keys = data(evaluate.draw_keys(0, "mask(0.9)", 3))
  assert keys == data(evaluate.draw_keys(0, "mask( 0.90 )", 3))  # Canonical spec.
  assert len({str(k) for k in keys}) == 3
  assert keys[:2] == data(evaluate.draw_keys(0, "mask(0.9)", 2))
  assert keys != data(evaluate.draw_keys(1, "mask(0.9)", 3))
  assert keys != data(evaluate.draw_keys(0, "mask(0.75)", 3))
  with pytest.raises(ValueError, match="draws=0"):
    evaluate.draw_keys(0, "mask(0.9)", 0)


def test_accuracy_over_draws_seeded(task):
  predict_fn, images, labels = task
  op = corruptions.build("mask(0.5)")
  run = lambda seed: evaluate.accuracy_over_draws(predict_fn, images, labels, op, seed=seed,
                                                  draws=4, batch_size=20)
  first = run(0)
  assert len(first["draws"]) == 4
  assert len(set(first["draws"])) > 1  # Each draw masks different pixels.
  assert first == run(0)
  assert first["draws"] != run(1)["draws"]
  assert first["top1_mean"] < 100  # The clean images are all classified correctly.


def test_accuracy_over_draws_matches_direct_evaluation(task):
  predict_fn, images, labels = task
  op = corruptions.build("noise(0.3)")
  got = evaluate.accuracy_over_draws(predict_fn, images, labels, op, seed=2, draws=2,
                                     batch_size=20)
  classify = jax.jit(lambda key, x: jnp.argmax(predict_fn(op(key, x)), -1))
  for key, accuracy in zip(evaluate.draw_keys(2, "noise(0.3)", 2), got["draws"]):
    # Unpadded batches of 20, 20 and 8 images.
    predictions = [classify(jax.random.fold_in(key, b), images[s:s + 20])
                   for b, s in enumerate(range(0, N, 20))]
    assert accuracy == pytest.approx(100 * np.mean(np.concatenate(predictions) == labels))


def test_deterministic_operator_uses_one_draw(task):
  predict_fn, images, labels = task
  got = evaluate.accuracy_over_draws(predict_fn, images, labels, corruptions.build("blur(3,1)"),
                                     seed=0, draws=10, batch_size=20)
  assert len(got["draws"]) == 1
  assert got["top1_std"] == got["top1_stderr"] == 0.0
  clean = evaluate.accuracy_over_draws(predict_fn, images, labels,
                                       corruptions.build("identity"), seed=0, draws=10)
  assert clean["draws"] == [100.0]
