"""Top-1 accuracy under K independent, seeded corruption draws (paper: K = 10).

    accs = scoring.accuracy_over_draws(
        lambda key: encoder.features(test_images, A, key), {"probe": head}, test_labels,
        A, seed=0, draws=10)                       # {"probe": [top-1 of draw 0, ..., draw 9]}

Every row of a run is scored here: the features of the test images under each draw (computed
once per draw, whatever the number of heads), each head's logits on them, top-1 in percent.

Draw d of operator A under seed s corrupts with `fold_in(fold_in(key(s), crc32(str(A))), d)`
(batch b then folds in b), so the draws are the same in every run and every process, differ
from each other, and differ between corruptions. A deterministic operator (blur with a fixed
sigma, identity) gives the same images every draw, so it is evaluated once.
"""

import zlib
from collections.abc import Callable, Hashable, Mapping

import jax
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


def draw_key(seed: int, spec: str, draw: int = 0) -> jax.Array:
  """Key `draw` of `draw_keys(seed, spec, ...)`: the run's scored corruption draw `draw`."""
  if draw < 0:
    raise ValueError(f"draw={draw} must be >= 0")
  return draw_keys(seed, spec, draw + 1)[draw]


def top1(logits: np.ndarray | jax.Array, labels: np.ndarray) -> float:
  """Top-1 accuracy in percent of logits `[N, C]` against int labels `[N]`."""
  return float(100 * np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(labels)))


def accuracy_over_draws(features: Callable[[jax.Array], np.ndarray],
                        heads: Mapping[Hashable, Callable[[np.ndarray], np.ndarray]],
                        labels: np.ndarray, corruption: Operator, *, seed: int,
                        draws: int) -> dict[Hashable, list[float]]:
  """Top-1 of every head under `draws` seeded draws of `corruption` (one if deterministic).

  Args:
    features: draw key -> features `[N, D]` of the test images corrupted with that key, e.g.
      `lambda key: encoder.features(images, A, key)`; it may ignore the key (clean features).
    heads: name -> (features `[N, D]` -> logits `[N, C]`), e.g. a probe per label fraction, or
      the identity when the features are a classifier's logits.
    labels: int `[N]`.
    corruption: the operator A whose draws are scored; it names the keys (`draw_keys`).
    seed: the evaluation seed.
    draws: K, the number of independent draws of a random operator.

  Returns:
    name -> the K per-draw top-1 accuracies in percent (one for a deterministic operator).
  """
  accuracies = {name: [] for name in heads}
  for key in draw_keys(seed, str(corruption), draws if corruption.random else 1):
    x = features(key)
    for name, head in heads.items():
      accuracies[name].append(top1(head(x), labels))
  return accuracies
