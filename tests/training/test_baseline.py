"""rrjax.training.baseline: the encoder behind the fine-tuned head, the step budget."""

import numpy as np
import pytest

from rrjax import models
from rrjax.training import baseline


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
