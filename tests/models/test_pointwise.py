"""PointwiseConv against flax.linen.Conv with a 1x1 kernel: same parameters, values, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax.models.pointwise import PointwiseConv


@pytest.mark.parametrize("use_bias", [False, True])
def test_matches_a_1x1_conv_forward_and_gradients(use_bias):
  x = jax.random.normal(jax.random.key(0), (4, 6, 5, 12))
  ours = PointwiseConv(7, use_bias=use_bias, bias_init=nn.initializers.normal(1.0))
  conv = nn.Conv(7, (1, 1), use_bias=use_bias, bias_init=nn.initializers.normal(1.0))
  variables = ours.init(jax.random.key(1), x)
  # The same parameter tree and shapes as the conv: checkpoints convert unchanged.
  assert (jax.tree.map(jnp.shape, variables)
          == jax.tree.map(jnp.shape, conv.init(jax.random.key(1), x)))
  np.testing.assert_allclose(ours.apply(variables, x), conv.apply(variables, x),
                             rtol=1e-5, atol=1e-5)
  # Independent reference: the 1x1 conv as a float64 numpy matrix product.
  kernel = np.asarray(variables["params"]["kernel"], np.float64)[0, 0]
  expected = np.asarray(x, np.float64) @ kernel
  if use_bias:
    expected = expected + np.asarray(variables["params"]["bias"], np.float64)
  np.testing.assert_allclose(ours.apply(variables, x), expected, rtol=1e-5, atol=1e-5)

  def loss(module, v, inputs):
    return jnp.sum(jnp.sin(module.apply(v, inputs)))

  g_ours = jax.grad(loss, argnums=(1, 2))(ours, variables, x)
  g_conv = jax.grad(loss, argnums=(1, 2))(conv, variables, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_conv)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_compute_dtype_promotes_inputs_and_parameters_like_conv():
  x = jnp.ones((2, 3, 3, 4), jnp.float32)
  ours = PointwiseConv(5, dtype=jnp.bfloat16)
  variables = ours.init(jax.random.key(0), x)
  assert variables["params"]["kernel"].dtype == jnp.float32
  y = ours.apply(variables, x)
  conv = nn.Conv(5, (1, 1), use_bias=False, dtype=jnp.bfloat16)
  assert y.dtype == conv.apply(variables, x).dtype
  assert y.dtype == jnp.bfloat16
