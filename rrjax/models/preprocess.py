"""Input handling shared by every encoder: resize to the encoder's resolution, normalise."""

import jax
import jax.numpy as jnp

# Per-channel statistics of the published checkpoints.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


def prepare(images: jax.Array, resolution: int, mean, std) -> jax.Array:
  """Resizes [0, 1] images to the encoder's input and normalises them.

  Args:
    images: float `[B, H, W, C]` in [0, 1], C in {1, 3}; grey is repeated to 3 channels.
    resolution: the encoder's input size; images of another size are resized bilinearly
      (antialiased when shrinking).
    mean, std: 3-tuples, applied after resizing.

  Returns:
    `[B, resolution, resolution, 3]` float32.
  """
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"expected images [B, H, W, 1|3], got shape {images.shape}")
  images = jnp.asarray(images, jnp.float32)
  if images.shape[-1] == 1:
    images = jnp.repeat(images, 3, axis=-1)
  b, h, w, c = images.shape
  if (h, w) != (resolution, resolution):
    images = jax.image.resize(images, (b, resolution, resolution, c), "bilinear", antialias=True)
  return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
