"""Linear probe on frozen features: label subsets, feature extraction, training, selection.

    idx = probe.label_fraction_indices(labels, 0.1, num_classes=100, seed=0)
    draws = [probe.extract_features(module, variables, images[idx], corruption=A,
                                    key=jax.random.fold_in(key, e)) for e in range(10)]
    p = probe.fit(draws, labels[idx], num_classes=100)      # Adam, lr 1e-3, 10 epochs
    top1 = probe.accuracy(p, test_features, test_labels)    # percent

The paper trains a linear layer with Adam (lr 1e-3, 10 epochs) on features of corrupted training
images, with a fresh corruption each epoch: `fit` takes a list of feature arrays, one per
corruption draw, and uses draw `e % len(draws)` in epoch e. Features are standardised with the
training features' per-dimension mean and std before the linear layer; that is an affine
reparametrisation of the same linear classifier, which only improves Adam's conditioning.
"""

import functools
import inspect
import itertools
import math
import time
from typing import Any, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding

from rrjax import sharding
from rrjax.corruptions import Operator

# Keeps the division finite for a constant feature dimension (e.g. a dead ReLU unit).
_MIN_STD = 1e-6


def label_fraction_indices(labels: np.ndarray, fraction: float, num_classes: int,
                           seed: int) -> np.ndarray:
  """The sorted indices of a class-balanced subset with a `fraction` of the labels.

  Each class keeps ceil(N * fraction / C) of its examples (the paper's rule), drawn without
  replacement and capped at the class size; fraction 1.0 keeps every example.

  Args:
    labels: int `[N]` in [0, num_classes).
    fraction: the label ratio, in (0, 1].
    num_classes: C.
    seed: seeds `np.random.default_rng`; the same seed gives the same subset.

  Returns:
    int64 `[M]`, sorted and unique.
  """
  labels = np.asarray(labels)
  if not 0 < fraction <= 1:
    raise ValueError(f"probe.label_fractions: fraction {fraction} not in (0, 1]")
  _check_labels(labels, num_classes)
  n = labels.shape[0]
  if fraction == 1:
    return np.arange(n, dtype=np.int64)
  # Rounded first so that e.g. 5000 * 0.1 / 100 = 5.000000000000001 keeps 5, not 6.
  per_class = math.ceil(round(n * fraction / num_classes, 9))
  rng = np.random.default_rng(seed)
  chosen = []
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    chosen.append(rng.choice(members, min(per_class, members.size), replace=False))
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def _check_labels(labels: np.ndarray, num_classes: int) -> None:
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be int [N], got {labels.dtype} {labels.shape}")
  if labels.size and not (0 <= labels.min() and labels.max() < num_classes):
    raise ValueError(f"labels range [{labels.min()}, {labels.max()}] not in "
                     f"[0, {num_classes - 1}] (num_classes={num_classes})")


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _encode(module: nn.Module, corruption: Operator | None, out_sharding: NamedSharding | None,
            variables: Any, images: jax.Array, key: jax.Array | None,
            index: jax.Array) -> jax.Array:
  """`[B, H, W, C]` images of batch `index` -> float32 features `[B, D]`."""
  if corruption is not None:
    images = corruption(jax.random.fold_in(key, index), images)
  features = module.apply(variables, images, train=False).astype(jnp.float32)
  if out_sharding is not None:
    # Replicated, so that every process can read all features back.
    features = jax.lax.with_sharding_constraint(features, out_sharding)
  return features


def extract_features(module: nn.Module, variables: Any, images: np.ndarray, *,
                     corruption: Operator | None = None, key: jax.Array | None = None,
                     batch_size: int = 256, mesh: Mesh | None = None) -> np.ndarray:
  """Runs the frozen encoder (train=False) over `images`, optionally corrupted.

  Batch b is corrupted with `A(fold_in(key, b), batch)` on device, so each image's corruption
  is independent of the others and reproducible for the same key, batch size and device count.
  The last batch is padded to the full batch size: one compilation per call shape.

  The features are not normalised; `fit` standardises them.

  Args:
    module, variables: an encoder (see `rrjax.models`); its output is `[B, D]`.
    images: float32 `[N, H, W, C]` in [0, 1] (host array, read one batch at a time).
    corruption: the operator A, or None for clean images.
    key: the corruption key; needed when `corruption.random`.
    batch_size: images per batch (at most N), rounded up to a multiple of the mesh's devices.
    mesh: when given, each batch is split over its data axis and the variables replicated.

  Returns:
    float32 `[N, D]`.
  """
  n = images.shape[0]
  if n == 0 or batch_size < 1:
    raise ValueError(f"need images and batch_size >= 1, got N={n}, batch_size={batch_size}")
  if corruption is not None and key is None:
    if corruption.random:
      raise ValueError(f"corruption {corruption} is random: pass a key")
    key = jax.random.key(0)  # The output does not depend on it.
  batch_size = min(batch_size, n)
  batch_put = out_sharding = None
  if mesh is not None:
    batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
    batch_put, out_sharding = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    variables = sharding.replicate(variables, mesh)
  num_batches = -(-n // batch_size)
  log_every = max(1, num_batches // 10)

  features, pending = [], None
  start_time = time.perf_counter()
  for b in range(num_batches):
    batch = np.asarray(images[b * batch_size:(b + 1) * batch_size], np.float32)
    if batch.shape[0] < batch_size:
      pad = np.zeros((batch_size - batch.shape[0],) + batch.shape[1:], batch.dtype)
      batch = np.concatenate([batch, pad])
    out = _encode(module, corruption, out_sharding, variables,
                  jax.device_put(batch, batch_put), key, np.int32(b))
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


@flax.struct.dataclass
class Probe:
  """A trained linear probe: `logits = Dense((features - mean) / std)`.

  Attributes:
    params: the Dense parameters `{"kernel": [D, C], "bias": [C]}`.
    mean, std: float32 `[D]`, the training features' per-dimension statistics.
  """
  params: Any
  mean: jax.Array
  std: jax.Array


def _linear(params: Any, features: jax.Array) -> jax.Array:
  return nn.Dense(params["bias"].shape[-1]).apply({"params": params}, features)


def logits(probe: Probe, features: jax.Array) -> jax.Array:
  """Features `[N, D]` -> logits `[N, C]`; pure, so it can be used inside `jax.jit`."""
  return _linear(probe.params, (features - probe.mean) / probe.std)


def predict(probe: Probe, features: jax.Array) -> jax.Array:
  """Features `[N, D]` -> predicted classes int `[N]`."""
  return jnp.argmax(logits(probe, features), axis=-1)


def accuracy(probe: Probe, features: jax.Array, labels: np.ndarray) -> float:
  """Top-1 accuracy in percent of `probe` on features `[N, D]` with int labels `[N]`."""
  return float(100 * np.mean(np.asarray(predict(probe, features)) == np.asarray(labels)))


# Hyperparameters live in the optimiser state, so one compiled epoch serves every grid point.
_TX = optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, weight_decay=0.0)


@jax.jit
def _epoch(params, opt_state, features, labels, order, mean, std):
  """One pass over the minibatches `order` `[S, B]` (indices; -1 pads the last one)."""

  def step(carry, idx):
    params, opt_state = carry
    weight = (idx >= 0).astype(jnp.float32)
    idx = jnp.maximum(idx, 0)
    x = (features[idx] - mean) / std

    def loss_fn(params):
      ce = optax.softmax_cross_entropy_with_integer_labels(_linear(params, x), labels[idx])
      return jnp.sum(weight * ce) / jnp.sum(weight)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = _TX.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
  return params, opt_state, losses.mean()


def _draw_list(features: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
  draws = [features] if isinstance(features, (np.ndarray, jax.Array)) else list(features)
  if not draws:
    raise ValueError("features: got an empty list of draws")
  shapes = {np.shape(f) for f in draws}
  if len(shapes) != 1 or len(next(iter(shapes))) != 2:
    raise ValueError(f"features must be [N, D], or a list of equally shaped [N, D] arrays, "
                     f"got shapes {sorted(shapes)}")
  return draws


def fit(features: np.ndarray | Sequence[np.ndarray], labels: np.ndarray, num_classes: int, *,
        lr: float = 1e-3, epochs: int = 10, batch_size: int = 256, weight_decay: float = 0.0,
        seed: int = 0) -> Probe:
  """Trains a linear probe with Adam on softmax cross-entropy.

  Minibatches are reshuffled every epoch (seeded); the last one is smaller when batch_size does
  not divide N (padded and masked, so the epoch compiles once).

  Args:
    features: float `[N, D]`, or a list of them, one per corruption draw of the same images;
      epoch e uses draw `e % len(features)` (a fresh corruption each epoch).
    labels: int `[N]` in [0, num_classes).
    num_classes: C.
    lr: Adam learning rate.
    epochs: passes over the data, >= 1.
    batch_size: examples per minibatch (at most N).
    weight_decay: decoupled (AdamW) weight decay on all parameters; 0 is plain Adam.
    seed: seeds the initialisation and the shuffling.

  Returns:
    The trained `Probe`, standardising with the mean and std over all draws.
  """
  draws = _draw_list(features)
  labels = np.asarray(labels)
  _check_labels(labels, num_classes)
  n, d = draws[0].shape
  if labels.shape[0] != n:
    raise ValueError(f"labels have {labels.shape[0]} entries for {n} feature rows")
  if epochs < 1 or batch_size < 1:
    raise ValueError(f"epochs={epochs} and batch_size={batch_size} must be >= 1")

  # Statistics over all draws, combined per draw (law of total variance) to spare a copy.
  means = [np.mean(f, axis=0, dtype=np.float64) for f in draws]
  mean = np.mean(means, axis=0)
  var = np.mean([np.var(f, axis=0, dtype=np.float64) + (m - mean)**2
                 for f, m in zip(draws, means)], axis=0)
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(np.maximum(np.sqrt(var), _MIN_STD), jnp.float32)

  params = nn.Dense(num_classes).init(jax.random.key(seed), jnp.zeros((1, d)))["params"]
  opt_state = _TX.init(params)
  opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
  opt_state.hyperparams["weight_decay"] = jnp.asarray(weight_decay, jnp.float32)

  batch_size = min(batch_size, n)
  steps = -(-n // batch_size)
  rng = np.random.default_rng(seed)
  labels_device = jnp.asarray(labels, jnp.int32)
  for epoch in range(epochs):
    # One draw on device at a time; a draw already on device is not copied.
    x = jnp.asarray(draws[epoch % len(draws)], jnp.float32)
    order = np.full(steps * batch_size, -1, np.int32)
    order[:n] = rng.permutation(n)
    params, opt_state, loss = _epoch(params, opt_state, x, labels_device,
                                     order.reshape(steps, batch_size), mean, std)
    logging.log_every_n_seconds(logging.INFO, "fit: epoch %d/%d, loss %.4f", 10, epoch + 1,
                                epochs, loss)
  return Probe(params=params, mean=mean, std=std)


_GRID_KEYS = ("lr", "weight_decay", "epochs")


def select(train_features: np.ndarray | Sequence[np.ndarray], train_labels: np.ndarray,
           val_features: np.ndarray, val_labels: np.ndarray, num_classes: int, *,
           grid: dict[str, Sequence[Any]], seed: int = 0,
           batch_size: int = 256) -> tuple[dict[str, Any], float]:
  """Grid search of `fit` hyperparameters by accuracy on a validation split (never test).

  Args:
    train_features, train_labels: as for `fit`.
    val_features, val_labels: float `[M, D]` and int `[M]`, held out from training.
    num_classes: C.
    grid: lists of values for any of "lr", "weight_decay", "epochs"; a missing key keeps
      `fit`'s default.
    seed: passed to every `fit`.
    batch_size: passed to every `fit`.

  Returns:
    `(best, val_accuracy)`: the grid point with the highest validation top-1 (the first in grid
    order on ties), as a dict with all three keys, and that accuracy in percent.
  """
  unknown = set(grid) - set(_GRID_KEYS)
  if unknown:
    raise ValueError(f"probe grid keys {sorted(unknown)} unknown; allowed: {list(_GRID_KEYS)}")
  defaults = {k: inspect.signature(fit).parameters[k].default for k in _GRID_KEYS}
  axes = {k: list(grid.get(k, [defaults[k]])) for k in _GRID_KEYS}
  empty = [k for k, values in axes.items() if not values]
  if empty:
    raise ValueError(f"probe grid {empty} has no values")
  best, best_accuracy = None, -1.0
  for values in itertools.product(*axes.values()):
    point = dict(zip(axes, values))
    probe = fit(train_features, train_labels, num_classes, batch_size=batch_size, seed=seed,
                **point)
    val_accuracy = accuracy(probe, val_features, val_labels)
    logging.info("select: %s -> val top-1 %.2f", point, val_accuracy)
    if val_accuracy > best_accuracy:
      best, best_accuracy = point, val_accuracy
  return best, best_accuracy
