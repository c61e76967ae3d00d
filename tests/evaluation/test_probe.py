"""rrjax.evaluation.probe: label subsets, the linear probe, its hyperparameter selection."""

import math

import numpy as np
import pytest

from rrjax.evaluation import probe, scoring

NUM_CLASSES = 4


def _blobs(n, seed, dim=16, spread=4.0):
  """Linearly separable Gaussian blobs: float32 [n, dim] features, int labels [n]."""
  centres = np.random.default_rng(123).normal(0, spread, (NUM_CLASSES, dim))
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, n)
  # Offset and scaled so that the probe has to standardise them.
  features = 50 + 10 * (centres[labels] + rng.normal(0, 1, (n, dim)))
  return features.astype(np.float32), labels


# Label fractions.


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.5])
def test_label_fraction_counts_per_class(fraction):
  # Unbalanced classes: class 3 has 5 examples, fewer than some fractions ask for.
  labels = np.repeat(np.arange(NUM_CLASSES), [300, 200, 95, 5])
  idx = probe.label_fraction_indices(labels, fraction, NUM_CLASSES, seed=0)
  want = math.ceil(round(labels.size * fraction / NUM_CLASSES, 9))
  counts = np.bincount(labels[idx], minlength=NUM_CLASSES)
  np.testing.assert_array_equal(counts, np.minimum(want, np.bincount(labels)))
  assert np.all(np.diff(idx) > 0)  # Sorted and unique.


def test_label_fraction_exact_ceil_despite_float_error():
  # 5000 * 0.1 / 100 is 5.000000000000001 in floating point: the rule keeps 5.
  labels = np.repeat(np.arange(100), 50)
  idx = probe.label_fraction_indices(labels, 0.1, 100, seed=0)
  np.testing.assert_array_equal(np.bincount(labels[idx]), 5)


def test_label_fraction_seeded():
  labels = np.random.default_rng(0).integers(0, NUM_CLASSES, 1000)
  a = probe.label_fraction_indices(labels, 0.1, NUM_CLASSES, seed=3)
  np.testing.assert_array_equal(a, probe.label_fraction_indices(labels, 0.1, NUM_CLASSES, 3))
  assert not np.array_equal(a, probe.label_fraction_indices(labels, 0.1, NUM_CLASSES, 4))


def test_label_fraction_one_keeps_everything():
  labels = np.repeat(np.arange(NUM_CLASSES), [30, 20, 9, 1])
  np.testing.assert_array_equal(probe.label_fraction_indices(labels, 1.0, NUM_CLASSES, 0),
                                np.arange(labels.size))


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_label_fraction_out_of_range(fraction):
  with pytest.raises(ValueError, match=rf"probe\.label_fractions.*{fraction}"):
    probe.label_fraction_indices(np.zeros(10, int), fraction, NUM_CLASSES, seed=0)


# Training.


def test_fit_separable_blobs():
  x, y = _blobs(400, seed=0)
  x_test, y_test = _blobs(400, seed=1)
  p = probe.fit(x, y, NUM_CLASSES, lr=1e-2, epochs=20, batch_size=32)
  assert scoring.top1(probe.logits(p, x), y) > 95
  assert scoring.top1(probe.logits(p, x_test), y_test) > 90
  assert probe.logits(p, x_test).shape == (400, NUM_CLASSES)
  assert probe.logits(p, x_test).shape == (400, NUM_CLASSES)


def test_fit_random_labels_do_not_generalise():
  x, _ = _blobs(400, seed=0)
  x_test, _ = _blobs(400, seed=1)
  rng = np.random.default_rng(7)
  y, y_test = rng.integers(0, NUM_CLASSES, 400), rng.integers(0, NUM_CLASSES, 400)
  p = probe.fit(x, y, NUM_CLASSES, lr=1e-2, epochs=20, batch_size=32)
  # Chance is 25; separable blobs reach > 90.
  assert scoring.top1(probe.logits(p, x_test), y_test) < 50


def test_fit_standardises_with_training_statistics():
  x, y = _blobs(200, seed=0)
  p = probe.fit(x, y, NUM_CLASSES, epochs=2, batch_size=64)
  np.testing.assert_allclose(p.mean, x.mean(0), rtol=1e-5)
  np.testing.assert_allclose(p.std, x.std(0), rtol=1e-4)
  z = (x - x.mean(0)) / x.std(0)
  want = z @ np.asarray(p.params["kernel"]) + np.asarray(p.params["bias"])
  np.testing.assert_allclose(probe.logits(p, x), want, rtol=1e-4, atol=1e-4)
  # Standardised inputs make training invariant to a per-dimension affine map of the features.
  scale = np.linspace(0.01, 100, x.shape[1]).astype(np.float32)
  q = probe.fit(x * scale - 7, y, NUM_CLASSES, epochs=2, batch_size=64)
  np.testing.assert_allclose(q.params["kernel"], p.params["kernel"], atol=1e-4)


def test_fit_multiple_draws():
  x, y = _blobs(200, seed=0)
  noise = np.random.default_rng(2).normal(0, 5, (3,) + x.shape).astype(np.float32)
  draws = list(x + noise)
  p = probe.fit(draws, y, NUM_CLASSES, lr=1e-2, epochs=6, batch_size=32)
  stacked = np.concatenate(draws)
  np.testing.assert_allclose(p.mean, stacked.mean(0), rtol=1e-5)
  np.testing.assert_allclose(p.std, stacked.std(0), rtol=1e-4)
  assert scoring.top1(probe.logits(p, x), y) > 90
  # A one-draw list is the array itself; a second draw changes training.
  one = probe.fit([draws[0]], y, NUM_CLASSES, epochs=2)
  np.testing.assert_array_equal(one.params["kernel"],
                                probe.fit(draws[0], y, NUM_CLASSES, epochs=2).params["kernel"])
  two = probe.fit(draws[:2], y, NUM_CLASSES, epochs=2)
  assert not np.allclose(one.params["kernel"], two.params["kernel"])


def test_fit_asks_a_function_of_draws_for_a_fresh_draw_every_epoch():
  x, y = _blobs(200, seed=0)
  noise = np.random.default_rng(3).normal(0, 5, (8,) + x.shape).astype(np.float32)
  asked = []
  draw = lambda e: asked.append(e) or x + noise[e]
  p = probe.fit(draw, y, NUM_CLASSES, lr=1e-2, epochs=8, batch_size=32)
  assert asked == [0] + list(range(8))  # Epoch 0's draw gives the statistics, then each epoch.
  np.testing.assert_allclose(p.mean, (x + noise[0]).mean(0), rtol=1e-5)
  # The same draws as a list (epoch e reads draw e) train the same layer.
  q = probe.fit(list(x + noise), y, NUM_CLASSES, lr=1e-2, epochs=8, batch_size=32)
  z = lambda m: (np.asarray(m.params["kernel"]) / np.asarray(m.std)[:, None])
  assert np.allclose(z(p), z(q), atol=0.1)
  # A function returning one array every epoch is that array.
  np.testing.assert_array_equal(
      probe.fit(lambda e: x, y, NUM_CLASSES, epochs=2).params["kernel"],
      probe.fit(x, y, NUM_CLASSES, epochs=2).params["kernel"])
  with pytest.raises(ValueError, match="epoch 1 have shape"):
    probe.fit(lambda e: x[:100 + e], y[:100], NUM_CLASSES, epochs=2)


def test_fit_rejects_bad_labels():
  x, _ = _blobs(20, seed=0)
  with pytest.raises(ValueError, match=r"labels range \[0, 4\] not in \[0, 3\]"):
    probe.fit(x, np.arange(20) % 5, NUM_CLASSES)


def test_select_returns_grid_point():
  x, y = _blobs(200, seed=0)
  x_val, y_val = _blobs(200, seed=1)
  grid = {"lr": [1e-2, 1e-6], "weight_decay": [0.0, 1e-4], "epochs": [5]}
  best, val_accuracy = probe.select(x, y, x_val, y_val, NUM_CLASSES, grid=grid, seed=0,
                                    batch_size=32)
  assert best["lr"] == 1e-2  # 5 epochs at lr 1e-6 barely move the random initialisation.
  assert best["weight_decay"] in grid["weight_decay"] and best["epochs"] == 5
  fitted = probe.fit(x, y, NUM_CLASSES, batch_size=32, seed=0, **best)
  assert val_accuracy == scoring.top1(probe.logits(fitted, x_val), y_val) > 90
  with pytest.raises(ValueError, match="momentum"):
    probe.select(x, y, x_val, y_val, NUM_CLASSES, grid={"momentum": [0.9]}, seed=0)


def test_fit_min_steps_raises_the_epochs_to_reach_it():
  x, y = _blobs(40, seed=5)  # 40 examples in batches of 16: 3 steps an epoch.
  floored = probe.fit(x, y, NUM_CLASSES, epochs=1, batch_size=16, min_steps=10, seed=0)
  # ceil(10 / 3) = 4 epochs: the same probe as asking for them.
  four = probe.fit(x, y, NUM_CLASSES, epochs=4, batch_size=16, seed=0)
  np.testing.assert_array_equal(floored.params["kernel"], four.params["kernel"])
  three = probe.fit(x, y, NUM_CLASSES, epochs=3, batch_size=16, seed=0)
  assert not np.array_equal(floored.params["kernel"], three.params["kernel"])
  # A floor below the epochs asked for changes nothing.
  np.testing.assert_array_equal(
      probe.fit(x, y, NUM_CLASSES, epochs=4, batch_size=16, min_steps=5, seed=0).params["kernel"],
      four.params["kernel"])


def test_configured_hyperparameters_of_a_probe_section():
  from rrjax.config import schema  # pylint: disable=g-import-not-at-top
  pc = schema.base().probe
  assert probe.configured(pc) == {"lr": 1e-3, "epochs": 10, "weight_decay": 0.0}


def test_a_saved_probe_loads_back_with_its_class_names_and_metadata(tmp_path):
  rng = np.random.default_rng(0)
  fitted = probe.fit(rng.normal(size=(40, 6)).astype(np.float32), np.arange(40) % 3, 3,
                     epochs=2)
  path = str(tmp_path / "p.safetensors")
  probe.save(path, fitted, ["a", "b", "c"], label_fraction=0.1, hparams={"lr": 1e-3})
  loaded, names, meta = probe.load(path)
  assert names == ["a", "b", "c"] and meta == {"label_fraction": 0.1, "hparams": {"lr": 1e-3}}
  x = rng.normal(size=(5, 6)).astype(np.float32)
  np.testing.assert_array_equal(probe.logits(loaded, x), probe.logits(fitted, x))
  with pytest.raises(ValueError, match="2 class names for a probe of 3 classes"):
    probe.save(path, fitted, ["a", "b"])


def test_a_file_that_is_no_probe_is_named(tmp_path):
  from rrjax import errors  # pylint: disable=import-outside-toplevel
  from rrjax.models import weights_io  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / "w.safetensors")
  weights_io.save_safetensors(path, {"kernel": np.zeros((2, 3), np.float32)})
  with pytest.raises(errors.UserError, match="not a probe written by rrjax"):
    probe.load(path)
  weights_io.save_safetensors(
      path, {"kernel": np.zeros((2, 3), np.float32), "bias": np.zeros(4, np.float32),
             "mean": np.zeros(2, np.float32), "std": np.ones(2, np.float32)},
      metadata={"format": probe.PROBE_FORMAT, "class_names": '["a", "b", "c"]'})
  with pytest.raises(errors.UserError, match=r"inconsistent tensors: kernel \(2, 3\), bias \(4,\)"):
    probe.load(path)
  (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
  with pytest.raises(errors.UserError, match="header of .* bytes, more than"):
    probe.load(str(tmp_path / "junk.safetensors"))
