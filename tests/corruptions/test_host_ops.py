"""rrjax.corruptions.host_ops: the ImageNet-C corruptions as operators, and the eval grid."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import corruptions
from rrjax.corruptions import host_ops, imagenet_c


def _images(shape=(4, 16, 16, 3)):
  return jnp.asarray(np.random.default_rng(0).uniform(0.0, 1.0, shape), jnp.float32)


def test_spec_round_trip_and_severity_checks():
  assert str(corruptions.build("fog(3)")) == "fog(3)"
  assert str(corruptions.build(" gaussian_noise ( 5.0 ) ")) == "gaussian_noise(5)"
  assert set(host_ops.OPERATORS) == set(imagenet_c.NAMES) <= set(corruptions.OPERATORS)
  for bad in ("fog(0)", "fog(6)", "fog(2.5)", "fog", "fog(1,2)"):
    with pytest.raises(corruptions.SpecError, match="fog"):
      corruptions.build(bad)
  with pytest.raises(corruptions.SpecError, match="grid of ImageNet-C specs"):
    corruptions.build("imagenet_c")


def test_operator_is_the_numpy_corruption_with_per_image_seeds(key):
  op = corruptions.build("impulse_noise(2)")
  x = _images()
  y = np.asarray(op(key, x))
  seeds = np.asarray(op.sample(key, x.shape)["seed"])
  assert seeds.dtype == np.uint32 and len(set(seeds.tolist())) == 4
  for i in range(4):
    want = imagenet_c.corrupt("impulse_noise", 2, np.asarray(x[i]),
                              np.random.default_rng(int(seeds[i])))
    np.testing.assert_array_equal(y[i], want)
  # Image i's corruption does not depend on the batch it is in; jit gives the same.
  np.testing.assert_array_equal(np.asarray(op(key, x[:2])), y[:2])
  np.testing.assert_array_equal(np.asarray(jax.jit(op)(key, x)), y)
  assert op.random and not np.array_equal(np.asarray(op(jax.random.key(7), x)), y)


def test_deterministic_corruptions_ignore_the_key(key):
  op = corruptions.build("contrast(4)")
  x = _images()
  assert not op.random
  np.testing.assert_array_equal(op(key, x), op(jax.random.key(3), x))


def test_inputs_are_clipped_and_outputs_in_range(key):
  x = _images() * 3.0 - 1.0  # Unclipped, as after noise.
  op = corruptions.build("brightness(1)")
  y = np.asarray(op(key, x))
  np.testing.assert_array_equal(y, np.asarray(op(key, jnp.clip(x, 0, 1))))
  assert 0.0 <= y.min() and y.max() <= 1.0


def test_composes_and_mixes_with_jnp_operators(key):
  x = _images()
  op = corruptions.build("oneof(mask(0.5);snow(2))|contrast(1)")
  y = op(key, x)
  assert y.shape == x.shape and y.dtype == x.dtype
  np.testing.assert_array_equal(y, op(key, x))


def test_refuses_images_that_are_not_rgb_or_too_small_before_any_compute(key):
  with pytest.raises(ValueError, match="RGB"):
    corruptions.build("fog(1)")(key, _images((2, 16, 16, 1)))
  with pytest.raises(ValueError, match="at least 8 x 8"):
    corruptions.build("fog(1)")(key, _images((2, 6, 16, 3)))


def test_grid_and_expand():
  every = host_ops.grid()
  assert len(every) == 75 and every[0] == "gaussian_noise(1)" and every[-1] == "jpeg_compression(5)"
  assert host_ops.grid("imagenet_c(3)") == tuple(f"{n}(3)" for n in imagenet_c.NAMES)
  assert host_ops.expand(("mask(0.9)", "imagenet_c (2)")) == (
      ("mask(0.9)",) + tuple(f"{n}(2)" for n in imagenet_c.NAMES))
  for bad in ("imagenet_c(0)", "imagenet_c(x)", "imagenet_c(1,2)"):
    with pytest.raises(ValueError, match="imagenet_c"):
      host_ops.grid(bad)
  assert host_ops.grid("imagenet_c(3.0)") == host_ops.grid("imagenet_c(3)")
  assert not host_ops.is_grid("mask(0.9)") and host_ops.is_grid("imagenet_c")
  # A composition holding the token is no grid: build refuses it as one spec.
  assert not host_ops.is_grid("imagenet_c(3)|mask(0.5)")
  with pytest.raises(corruptions.SpecError, match="grid of ImageNet-C specs"):
    corruptions.build("imagenet_c(3)|mask(0.5)")
