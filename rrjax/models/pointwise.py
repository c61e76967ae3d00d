"""1x1 convolution as a matrix product over the channel axis.

`PointwiseConv` is a drop-in for `flax.linen.Conv(features, kernel_size=(1, 1), strides=1)`:
the same parameter (`kernel`, `[1, 1, Cin, Cout]`, so checkpoints convert unchanged), the same
function, but lowered as one `dot_general` contracting the channel axis instead of a
convolution. The forward is the same GEMM either way; the difference is the kernel gradient.
XLA's CPU backend builds a 1x1 convolution's weight gradient as a convolution whose window is
the whole feature map, over transposed `[C, H, W, B]` copies of the activations; as a
`dot_general` it is a plain `[B*H*W, Cin]^T @ [B*H*W, Cout]` GEMM on the NHWC buffers, with no
transposes. On GPU and TPU both forms become the same matrix multiplications.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


class PointwiseConv(nn.Module):
  """`[..., Cin] -> [..., features]`: `x @ kernel[0, 0] (+ bias)`, kernel `[1, 1, Cin, features]`.

  Attributes:
    features: output channels.
    use_bias: add a `bias` parameter `[features]`.
    dtype: compute dtype (inputs and parameters are cast to it, as `nn.Conv` does); None keeps
      the promoted dtype of input and parameters.
    param_dtype: dtype of the parameters.
    kernel_init, bias_init: initialisers, with `nn.Conv`'s shapes.
  """
  features: int
  use_bias: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.linear.default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (1, 1, x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = jax.lax.dot_general(x, kernel[0, 0], (((x.ndim - 1,), (0,)), ((), ())))
    if bias is not None:
      y = y + bias
    return y
