"""rrjax.evaluation.features: an encoder's features in batches, corrupted on device, compiled
once."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from rrjax import corruptions, models
from rrjax.evaluation.features import Encoder, extract_features
from rrjax.parallel import sharding
from tests import helpers


class _Tiny(nn.Module):
  """Dense on flattened pixels; counts its traces to expose recompilations."""
  features: int = 5
  traces = [0]  # Class-level, so it survives Flax's module cloning.

  @nn.compact
  def __call__(self, images, train=False):
    self.traces[0] += 1
    return nn.Dense(self.features)(images.reshape(images.shape[0], -1))


@pytest.fixture(scope="module")
def tiny():
  module = _Tiny()
  variables = module.init(jax.random.key(1), np.zeros((1, 6, 6, 3), np.float32))
  images = np.random.default_rng(0).uniform(0.1, 1, (10, 6, 6, 3)).astype(np.float32)
  return module, variables, images


def _reference(module, variables, images, op, key, batch_size):
  """Direct `module.apply` on each batch corrupted with `fold_in(key, batch_index)`."""
  out = []
  for b, start in enumerate(range(0, images.shape[0], batch_size)):
    batch = images[start:start + batch_size]
    if op is not None:
      batch = op(jax.random.fold_in(key, b), batch)
    out.append(module.apply(variables, batch, train=False))
  return np.concatenate(out)


@pytest.mark.parametrize("batch_size", [4, 16])  # Last batch padded; one batch of all 10.
def test_extract_features_matches_direct_apply(tiny, key, batch_size):
  module, variables, images = tiny
  op = corruptions.build("mask(0.5)")
  _Tiny.traces[0] = 0
  got = extract_features(module, variables, images, corruption=op, key=key,
                               batch_size=batch_size)
  assert _Tiny.traces[0] == 1  # The padded last batch does not recompile.
  assert got.shape == (10, 5) and got.dtype == np.float32
  want = _reference(module, variables, images, op, key, batch_size)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  clean = extract_features(module, variables, images, batch_size=batch_size)
  np.testing.assert_allclose(clean, module.apply(variables, images), rtol=1e-5, atol=1e-6)
  assert not np.allclose(got, clean)


def test_extract_features_key_determines_draw(tiny, key):
  module, variables, images = tiny
  op = corruptions.build("noise(0.2)")
  run = lambda k: extract_features(module, variables, images, corruption=op, key=k,
                                         batch_size=4)
  np.testing.assert_array_equal(run(key), run(key))
  assert not np.allclose(run(key), run(jax.random.fold_in(key, 1)))


def test_extract_features_on_mesh(tiny, key):
  module, variables, images = tiny
  op = corruptions.build("mask(0.5)")
  kwargs = dict(corruption=op, key=key, batch_size=4)
  np.testing.assert_allclose(
      extract_features(module, variables, images, mesh=sharding.make_mesh(), **kwargs),
      extract_features(module, variables, images, **kwargs), rtol=1e-6)


def test_extract_features_random_corruption_needs_key(tiny):
  module, variables, images = tiny
  with pytest.raises(ValueError, match="mask.*key"):
    extract_features(module, variables, images, corruption=corruptions.build("mask(0.5)"))
  blurred = extract_features(module, variables, images,
                                   corruption=corruptions.build("blur(3,1)"))
  assert blurred.shape == (10, 5)


def test_extract_features_compiles_once(key):
  module, variables = models.load("tiny_cnn", pretrained=False, seed=3)
  # 20 images in batches of 8: the last batch is padded, so one shape in all.
  images = np.random.default_rng(1).uniform(size=(20, 13, 13, 3)).astype(np.float32)
  corruption = corruptions.build("noise(0.2)")
  per_call = []
  for draw in range(2):
    with helpers.count_compiles() as counts:
      features = extract_features(module, variables, images, corruption=corruption,
                                        key=jax.random.fold_in(key, draw), batch_size=8)
    per_call.append(counts["jit(_encode)"])
    assert features.shape[0] == 20
  assert per_call == [1, 0], f"compilations of the encoder per call: {per_call}"


def test_encoder_features_are_extract_features(tiny, key):
  module, variables, images = tiny
  op = corruptions.build("noise(0.2)")
  encoder = Encoder(module, variables, batch_size=4)
  np.testing.assert_array_equal(
      encoder.features(images, op, key),
      extract_features(module, variables, images, corruption=op, key=key, batch_size=4))


class _CountingEncoder:
  """Stands in for an `Encoder`: features = each image's label and a key-dependent offset."""

  def __init__(self):
    self.calls = []

  def features(self, images, corruption, key):
    self.calls.append(len(images))
    offset = float(jax.random.uniform(key))
    return np.stack([images.labels().astype(np.float32), np.full(len(images), offset)], 1)


def test_draws_are_computed_once_and_subsets_read_the_held_rows(tmp_path):
  from rrjax import data
  from rrjax.evaluation.features import Draws
  source = data.load(f"imagefolder:{helpers.make_folder(tmp_path, classes=2, per_class=5)}",
                     "train")
  encoder = _CountingEncoder()
  draws = Draws(encoder, source, corruptions.build("mask(0.5)"), jax.random.key(0))
  first, again = draws(3), draws(3)
  assert first is again and encoder.calls == [10]
  assert not np.array_equal(draws(4), first)  # Another key: another draw.
  idx = np.array([1, 4, 7])
  sub = draws.subset(idx)
  np.testing.assert_array_equal(sub(3), first[idx])  # Held rows, nothing computed.
  assert encoder.calls == [10, 10]
  sub(9)  # Not held: computed for the 3 images alone, once.
  sub(9)
  assert encoder.calls == [10, 10, 3]
  # A deterministic operator has one draw, whatever the epoch.
  fixed = Draws(encoder, source, corruptions.build("blur(3,1)"), jax.random.key(0))
  assert fixed(0) is fixed(5)
