"""The shifted-slice depthwise conv equals the grouped lax conv, values and gradients."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax.models import depthwise

CASES = list(itertools.product(
    (3, 5),                                  # kernel
    (1, 2),                                  # stride
    (7, 8),                                  # height (odd, even); width is height + 3
    ("SAME", ((1, 2), (0, 1)))))             # padding: TF rule, explicit


def _inputs(k, h, c=3):
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (2, h, h + 3, c))
  kernel = jax.random.normal(kk, (k, k, 1, c))
  return x, kernel, kg


@pytest.mark.parametrize("k,stride,h,padding", CASES)
def test_shifted_matches_lax(k, stride, h, padding):
  x, kernel, kg = _inputs(k, h)
  out_shape = depthwise.depthwise_conv_lax(x, kernel, stride, padding).shape
  # A random cotangent so that every output position weighs differently in the gradient.
  cot = jax.random.normal(kg, out_shape)

  @jax.jit  # One compilation per case for the three formulations and their gradients.
  def outputs_and_grads(a, w):
    results = {}
    for impl in ("lax", "shifted", "auto"):
      out, vjp = jax.vjp(lambda a, w, impl=impl: depthwise.depthwise_conv(
          a, w, stride, padding, impl), a, w)
      results[impl] = (out, *vjp(cot))
    return results

  results = outputs_and_grads(x, kernel)
  if padding == "SAME":
    assert out_shape == (2, -(-h // stride), -(-(h + 3) // stride), 3)
  for impl in ("shifted", "auto"):
    out, dx, dkernel = results[impl]
    np.testing.assert_allclose(out, results["lax"][0], atol=1e-5)
    np.testing.assert_allclose(dx, results["lax"][1], atol=1e-4)
    np.testing.assert_allclose(dkernel, results["lax"][2], atol=1e-4)


@pytest.mark.parametrize("size,k,stride,expected", [
    (8, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (224, 3, 2, (0, 1)), (112, 5, 2, (1, 2)),
    (14, 5, 1, (2, 2)), (1, 3, 2, (1, 1))])
def test_same_padding_is_tensorflow_rule(size, k, stride, expected):
  assert depthwise.same_padding(size, k, stride) == expected


def test_module_auto_matches_lax_and_has_flax_layout():
  x, _, _ = _inputs(5, 8, c=4)
  layer = depthwise.DepthwiseConv(kernel_size=5, strides=2, use_bias=True)
  variables = layer.init(jax.random.key(1), x)
  assert variables["params"]["kernel"].shape == (5, 5, 1, 4)
  assert variables["params"]["bias"].shape == (4,)
  variables = jax.tree.map(lambda v: v + 0.1, variables)  # a non-zero bias
  auto = jax.jit(layer.apply)(variables, x)
  lax = jax.jit(layer.clone(impl="lax").apply)(variables, x)
  assert auto.shape == (2, 4, 6, 4)
  np.testing.assert_allclose(auto, lax, atol=1e-5)


def test_valid_padding():
  x, kernel, _ = _inputs(3, 8)
  out = depthwise.depthwise_conv(x, kernel, 2, "VALID", "shifted")
  assert out.shape == (2, 3, 5, 3)
  np.testing.assert_allclose(out, depthwise.depthwise_conv_lax(x, kernel, 2, "VALID"), atol=1e-5)


def test_bad_arguments_raise():
  x, kernel, _ = _inputs(3, 7)
  with pytest.raises(ValueError, match="kernel"):
    depthwise.depthwise_conv(x, kernel[..., :2], 1, "SAME")
  with pytest.raises(ValueError, match="impl"):
    depthwise.depthwise_conv(x, kernel, 1, "SAME", impl="fast")
  with pytest.raises(ValueError, match="padding"):
    depthwise.depthwise_conv(x, kernel, 1, "same")


def test_bfloat16_kernel_gradient_accumulates_in_float32():
  # 4096 products per tap, 256 of them per pixel: summed in bfloat16 (8-bit mantissa) they
  # would lose several % of the result; accumulated in float32 and rounded once, they stay
  # within bfloat16's rounding.
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (256, 4, 4, 4)).astype(jnp.bfloat16)
  kernel = jax.random.normal(kk, (3, 3, 1, 4)).astype(jnp.bfloat16)
  g = jax.random.normal(kg, (256, 4, 4, 4)).astype(jnp.bfloat16)

  def kernel_grad(impl, dtype):
    conv = lambda w: depthwise.depthwise_conv(x.astype(dtype), w, 1, "SAME", impl)
    return jax.vjp(conv, kernel.astype(dtype))[1](g.astype(dtype))[0]

  got = jax.jit(kernel_grad, static_argnums=(0, 1))("shifted", jnp.bfloat16)
  want = jax.jit(kernel_grad, static_argnums=(0, 1))("lax", jnp.float32)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), want,
                             atol=2**-7 * float(np.abs(want).max()))
