"""Top-1 accuracy under K independent, seeded corruption draws (paper: K = 10).

    result = evaluate.accuracy_over_draws(predict_fn, images, labels, build("mask(0.9)"),
                                          seed=0, draws=10)
    result["top1_mean"], result["top1_std"], result["top1_stderr"], result["draws"]

Draw d of operator A under seed s corrupts with `fold_in(fold_in(key(s), crc32(str(A))), d)`
(batch b then folds in b), so the draws are the same in every run and every process, differ
from each other, and differ between corruptions. A deterministic operator (blur with a fixed
sigma, identity) gives the same images every draw, so it is evaluated once: std and stderr 0.
"""

import functools
import math
import zlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rrjax import corruptions
from rrjax.corruptions import Operator


def draw_keys(seed: int, spec: str, draws: int) -> list[jax.Array]:
  """The `draws` corruption keys of the evaluation of `spec` under `seed`.

  The spec enters through the CRC-32 of its canonical form (`str(build(spec))`), which unlike
  Python's `hash` is the same in every process.
  """
  if draws < 1:
    raise ValueError(f"eval draws={draws} must be >= 1")
  canonical = str(corruptions.build(spec))
  base = jax.random.fold_in(jax.random.key(seed), np.uint32(zlib.crc32(canonical.encode())))
  return [jax.random.fold_in(base, d) for d in range(draws)]


def summarize(accuracies: list[float]) -> dict:
  """Per-draw top-1 (percent) -> mean, std (ddof=1; 0 for one draw), stderr = std / sqrt(K)."""
  if not accuracies:
    raise ValueError("summarize: no accuracies")
  values = np.asarray(accuracies, np.float64)
  std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
  return {"top1_mean": float(values.mean()), "top1_std": std,
          "top1_stderr": std / math.sqrt(values.size), "draws": [float(v) for v in values]}


def _count_correct(predict_fn: Callable[[jax.Array], jax.Array], corruption: Operator,
                   images: jax.Array, labels: jax.Array, valid: jax.Array, key: jax.Array,
                   index: jax.Array) -> jax.Array:
  """Correct predictions among the `valid` `[B]` rows of batch `index` corrupted with `key`."""
  corrupted = corruption(jax.random.fold_in(key, index), images)
  hits = jnp.argmax(predict_fn(corrupted), axis=-1) == labels
  return jnp.sum(hits & valid)


def accuracy_over_draws(predict_fn: Callable[[jax.Array], jax.Array], images: np.ndarray,
                        labels: np.ndarray, corruption: Operator, *, seed: int, draws: int,
                        batch_size: int = 256) -> dict:
  """Top-1 of `predict_fn` on `images` corrupted by `draws` independent draws of `corruption`.

  Args:
    predict_fn: float images `[B, H, W, C]` in [0, 1] (on device) -> logits `[B, classes]`;
      traced once per call. Arrays it closes over are compiled in as constants.
    images: float32 `[N, H, W, C]` in [0, 1] (host array, read one batch at a time).
    labels: int `[N]`.
    corruption: the operator A; a deterministic one (`not A.random`) is evaluated once.
    seed: the evaluation seed (see `draw_keys`).
    draws: K, the number of independent corruption draws.
    batch_size: images per batch (at most N); the last batch is padded to it.

  Returns:
    `summarize` of the K per-draw accuracies in percent.
  """
  n = images.shape[0]
  labels = np.asarray(labels)
  if n == 0 or labels.shape != (n,):
    raise ValueError(f"need N >= 1 images and labels [N], got {n} images, labels "
                     f"{labels.shape}")
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1")
  keys = draw_keys(seed, str(corruption), draws if corruption.random else 1)
  batch_size = min(batch_size, n)
  count = jax.jit(functools.partial(_count_correct, predict_fn, corruption))

  accuracies = []
  for key in keys:
    correct = []
    for b in range(-(-n // batch_size)):
      batch = np.asarray(images[b * batch_size:(b + 1) * batch_size], np.float32)
      batch_labels = labels[b * batch_size:(b + 1) * batch_size]
      pad = batch_size - batch.shape[0]
      valid = np.arange(batch_size) < batch.shape[0]
      batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)])
      batch_labels = np.concatenate([batch_labels, np.zeros(pad, batch_labels.dtype)])
      correct.append(count(batch, batch_labels, valid, key, np.int32(b)))
    accuracies.append(100 * int(sum(jax.device_get(correct))) / n)
  return summarize(accuracies)
