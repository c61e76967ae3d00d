"""rrjax.training.baseline: the encoder behind the fine-tuned head, the step budget."""

import numpy as np
import pytest

import rrjax.data
from rrjax import models
from rrjax.config import embedded
from rrjax.training import baseline
from tests.data.data_util import ArraySource


def test_baseline_backbone_is_the_fine_tuned_encoder_without_head():
  model, variables = models.load("tiny_cnn", pretrained=False, head="logits", num_classes=5)
  images = np.random.default_rng(0).uniform(size=(3, 16, 16, 3)).astype(np.float32)
  encoder = baseline.backbone(model)
  feats = encoder.apply(variables, images)
  logits = model.apply(variables, images)
  # tiny_cnn's classifier is Dense(relu(embedding)): recompute the logits from the features.
  fc = variables["params"]["fc"]
  np.testing.assert_allclose(np.maximum(np.asarray(feats), 0) @ fc["kernel"] + fc["bias"],
                             logits, rtol=1e-5, atol=1e-5)
  with pytest.raises(TypeError, match="head"):
    baseline.backbone(encoder)


def _config(**fields):
  c = embedded.base()
  for path, value in fields.items():
    section, name = path.split("__")
    c[section][name] = value
  return c


def test_baseline_trains_the_protocol_epochs_and_at_least_the_students_images():
  c = _config(train__steps=1000, train__batch_size=64, baseline__batch_size=64,
              baseline__epochs=25, baseline__select=True)
  # 6,000 labelled images: 93 steps an epoch, 25 epochs = 2,325 steps > the student's 1,000.
  assert baseline.steps_for(c, 6000) == 25 * 93
  # 640 labelled images: 25 epochs are 250 steps; the student's 64,000 images win.
  assert baseline.steps_for(c, 640) == 1000
  # 40 labelled images still make batches of 64 views (the stream runs on across epochs):
  # 1,000 of them are the student's 64,000 images, not the 1,600 that batches of 40 would be.
  assert baseline.steps_for(c, 40) == 1000
  c.baseline.batch_size = 128  # The same images in half the steps.
  assert baseline.steps_for(c, 640) == 500
  c.baseline.max_steps = 7
  assert baseline.steps_for(c, 6000) == 7
  # Without selection on validation (the paper's fixed protocol), the epochs alone.
  c.baseline.update(select=False, max_steps=10**9, batch_size=64)
  assert baseline.steps_for(c, 640) == 250


def test_learning_rates_tried_are_the_grid_only_under_select():
  c = _config(baseline__lr=1e-3, baseline__lr_grid=(1e-4, 1e-3), baseline__select=False)
  assert baseline.learning_rates(c) == (1e-3,)
  c.baseline.select = True
  assert baseline.learning_rates(c) == (1e-4, 1e-3)
  c.baseline.lr_grid = ()
  assert baseline.learning_rates(c) == (1e-3,)


def test_fewer_labelled_images_than_a_batch_still_fill_every_batch():
  # What steps_for counts on: the baseline's stream (drop_remainder=False when the labelled
  # images are fewer than a batch) yields full batches of real views, running across epochs.
  batches = list(rrjax.data.batches(ArraySource(5), 8, train=True, seed=0, image_size=8,
                                    num_steps=5, drop_remainder=False))
  assert [b["image"].shape[0] for b in batches] == [8] * 5
  assert all(b["mask"].all() for b in batches)
  seen = np.concatenate([b["index"] for b in batches])
  assert np.bincount(seen, minlength=5).tolist() == [8] * 5  # 40 views: 8 epochs of 5.
