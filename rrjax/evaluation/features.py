"""Frozen encoders over many images: features in batches, optionally corrupted on device.

    encoder = Encoder(module, variables, batch_size=256, mesh=mesh)
    features = encoder.features(source, corruption=A, key=key)       # float32 [N, D]

The images are a `rrjax.data.Source`, streamed in eval batches (`rrjax.data.batches`: this
process reads its slice of each batch, uint8, made float on device), or an array in memory.
Batch b is corrupted with `A(fold_in(key, b), batch)` on device, so each image's corruption is
independent of the others and reproducible for the same key, batch size and device count.

A probe trains on a fresh corruption draw every epoch (METHOD.md): `Draws` computes draw e of a
split's features when an epoch first asks for it and holds it for the other fits that read it
(the hyperparameter grid, the label fractions, which take `draws.subset(indices)`):

    draws = Draws(encoder, source, A, key)          # draws(e): float32 [N, D], key fold_in(key, e)
    probe.fit(draws.subset(idx), labels[idx], ...)  # epoch e reads draws(e)[idx]
"""

import dataclasses
import functools
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding

from rrjax import data
from rrjax.corruptions import Operator
from rrjax.parallel import preemption, sharding


@dataclasses.dataclass(frozen=True, eq=False)
class Encoder:
  """A frozen encoder as evaluation runs it: a module, its variables, a batch size, a mesh.

  The module maps images `[B, H, W, C]` in [0, 1] to `[B, D]`: an embedding, or the logits of
  a classifier (the fine-tuned baseline), which are scored the same way.
  """
  module: nn.Module
  variables: Any
  batch_size: int = 256
  mesh: Mesh | None = None
  num_workers: int = -1

  def features(self, images: "data.Source | np.ndarray", corruption: Operator | None = None,
               key: jax.Array | None = None) -> np.ndarray:
    """float32 `[N, D]` of `images` (a source, or `[N, H, W, C]`), corrupted by `corruption`
    under `key`."""
    return extract_features(self.module, self.variables, images, corruption=corruption,
                            key=key, batch_size=self.batch_size, mesh=self.mesh,
                            num_workers=self.num_workers)


class Draws:
  """Corruption draws of an encoder's features of a split, computed on first use and held.

  `draws(e)` is float32 `[N, D]`: the features of `source` corrupted under `fold_in(key, e)`; a
  deterministic operator has one draw, returned for every e. Held draws cost N * D * 4 bytes
  each (ImageNet-100 with a 512-d embedding: 260 MB a draw).
  """

  def __init__(self, encoder: Encoder, source: "data.Source", corruption: Operator,
               key: jax.Array, *, _parent: "Draws | None" = None,
               _index: np.ndarray | None = None):
    self.encoder, self.source, self.corruption, self.key = encoder, source, corruption, key
    self._parent, self._index = _parent, _index
    self._held: dict[int, np.ndarray] = {}

  def __call__(self, e: int) -> np.ndarray:
    e = e if self.corruption.random else 0
    if e not in self._held:
      parent = self._parent
      if parent is not None and e in parent._held:  # pylint: disable=protected-access
        return parent._held[e][self._index]  # pylint: disable=protected-access
      self._held[e] = self.encoder.features(self.source, self.corruption,
                                            jax.random.fold_in(self.key, e))
    return self._held[e]

  def subset(self, index: np.ndarray) -> "Draws":
    """The draws of `source[index]`: rows of the draws held here, computed for the subset
    alone (its own images, under the same keys) where this holds none."""
    index = np.asarray(index)
    return Draws(self.encoder, data.subset(self.source, index), self.corruption, self.key,
                 _parent=self, _index=index)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _encode(module: nn.Module, corruption: Operator | None, out_sharding: NamedSharding | None,
            variables: Any, images: jax.Array, key: jax.Array | None,
            index: jax.Array) -> jax.Array:
  """`[B, H, W, C]` images of batch `index` -> float32 features `[B, D]`."""
  images = data.to_float(images)
  if corruption is not None:
    images = corruption(jax.random.fold_in(key, index), images)
  features = module.apply(variables, images, train=False).astype(jnp.float32)
  if out_sharding is not None:
    # Replicated, so that every process can read all features back.
    features = jax.lax.with_sharding_constraint(features, out_sharding)
  return features


def extract_features(module: nn.Module, variables: Any, images: "data.Source | np.ndarray", *,
                     corruption: Operator | None = None, key: jax.Array | None = None,
                     batch_size: int = 256, mesh: Mesh | None = None,
                     num_workers: int = -1) -> np.ndarray:
  """Runs the frozen encoder (train=False) over `images`, optionally corrupted.

  Batch b is corrupted with `A(fold_in(key, b), batch)` on device, so each image's corruption
  is independent of the others and reproducible for the same key, batch size and device count.
  The last batch is padded to the full batch size: one compilation per call shape.

  The features are not normalised; `fit` standardises them.

  Args:
    module, variables: an encoder (see `rrjax.models`); its output is `[B, D]`.
    images: a `rrjax.data.Source` (its eval views, streamed), or an array `[N, H, W, C]`,
      uint8 or float32 in [0, 1], read one batch at a time.
    corruption: the operator A, or None for clean images.
    key: the corruption key; needed when `corruption.random`.
    batch_size: images per batch (at most N), rounded up to a multiple of the mesh's devices.
    mesh: when given, each batch is split over its data axis and the variables replicated.
    num_workers: worker processes decoding a source (`rrjax.data.batches`; -1: automatic).

  Returns:
    float32 `[N, D]`.
  """
  n = len(images)
  if n == 0 or batch_size < 1:
    raise ValueError(f"need images and batch_size >= 1, got N={n}, batch_size={batch_size}")
  if corruption is not None and key is None:
    if corruption.random:
      raise ValueError(f"corruption {corruption} is random: pass a key")
    key = jax.random.key(0)  # The output does not depend on it.
  if mesh is None:
    mesh = sharding.make_mesh()
  devices = mesh.devices.size
  batch_size = -(-min(batch_size, n) // devices) * devices
  out_sharding = sharding.replicated(mesh)
  variables = sharding.replicate(variables, mesh)
  num_batches = -(-n // batch_size)
  if isinstance(images, np.ndarray):
    local = _array_batches(images, batch_size)
  else:
    local = (b["image"] for b in data.batches(images, batch_size, train=False, seed=0,
                                               num_workers=num_workers))

  with preemption.deferred():
    return _run_batches(module, corruption, mesh, out_sharding, variables, local, key, n,
                        batch_size, num_batches)


def _run_batches(module, corruption, mesh, out_sharding, variables, local, key, n, batch_size,
                 num_batches) -> np.ndarray:
  """The batches of `extract_features` through `_encode`, the previous fetched while the next
  runs; float32 `[n, D]`."""
  log_every = max(1, num_batches // 10)
  features, pending = [], None
  start_time = time.perf_counter()
  for b, batch in enumerate(local):
    batch = sharding.global_batch({"image": batch}, mesh)["image"]
    out = _encode(module, corruption, out_sharding, variables, batch, key, np.int32(b))
    preemption.check("a feature pass")
    # Fetching the previous batch while this one runs keeps the device busy.
    if pending is not None:
      features.append(np.asarray(pending))
    pending = out
    if (b + 1) % log_every == 0 or b + 1 == num_batches:
      pending.block_until_ready()
      done = min((b + 1) * batch_size, n)
      logging.info("extract_features: %d/%d images (%.0f%%), %.1f images/s", done, n,
                   100 * done / n, done / (time.perf_counter() - start_time))
  features.append(np.asarray(pending))
  return np.concatenate(features)[:n]


def _array_batches(images: np.ndarray, batch_size: int):
  """This process's slice of each batch of an in-memory array, the last batch zero-padded."""
  local = batch_size // jax.process_count()
  first = jax.process_index() * local
  for start in range(0, images.shape[0], batch_size):
    batch = np.asarray(images[start:start + batch_size])
    if batch.shape[0] < batch_size:
      pad = np.zeros((batch_size - batch.shape[0],) + batch.shape[1:], batch.dtype)
      batch = np.concatenate([batch, pad])
    yield batch[first:first + local]
