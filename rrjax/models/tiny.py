"""`tiny_cnn`: a small random-init CNN encoder for tests and `:smoke` configs.

It follows the encoder contract (resize + normalise inside, BatchNorm, `embed` / `logits`
heads) at a size that compiles in about a second, so tests of whole runs exercise every stage
without the cost of a real network. It has no published weights: a config uses it with
`teacher.weights = "random"`.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rrjax.models import register, weights_io
from rrjax.models.preprocess import HALF, prepare


class TinyCNN(nn.Module):
  """Two conv-BN-ReLU layers, global average pool, a Dense embedding (or classifier).

  `dtype` is the convolutions' compute dtype; pooling, the Dense layers and the output are
  float32 (the mixed-precision policy of `rrjax.models`).
  """
  # The normalisation `prepare` applies inside (an exported encoder states it).
  MEAN, STD = HALF, HALF
  resolution: int = 16
  width: int = 16
  embed_dim: int = 32
  head: str = "embed"
  num_classes: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    """`[B, H, W, C]` in [0, 1] -> float32 `[B, embed_dim]` (or `[B, num_classes]` logits)."""
    x = prepare(images, self.resolution, self.MEAN, self.STD).astype(self.dtype)
    conv = functools.partial(nn.Conv, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             dtype=self.dtype)
    x = nn.relu(norm()(conv(self.width, (3, 3))(x)))
    x = nn.relu(norm()(conv(2 * self.width, (3, 3), strides=2)(x)))
    x = nn.Dense(self.embed_dim, name="embed")(x.astype(jnp.float32).mean(axis=(1, 2)))
    if self.head == "logits":
      x = nn.Dense(self.num_classes, name="fc")(nn.relu(x))
    return x


@register("tiny_cnn", native_resolution=16, embed_dim=32, has_pretrained=False)
def build(pretrained, head, weights=None, **kwargs):
  """Random init (seed `kwargs["seed"]`), or `weights`: an .npz of Flax variables."""
  del pretrained
  options = {k: kwargs[k] for k in ("resolution", "embed_dim", "num_classes", "dtype")
             if k in kwargs}
  module = TinyCNN(head=head, **options)
  dummy = jnp.zeros((1, module.resolution, module.resolution, 3), jnp.float32)
  init = jax.jit(functools.partial(module.init, train=False))
  if weights is not None:
    return module, weights_io.load_npz(weights, jax.eval_shape(init, jax.random.key(0), dummy))
  return module, init(jax.random.key(kwargs.get("seed", 0)), dummy)
