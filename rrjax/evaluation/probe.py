"""Linear probe on frozen features: label subsets, training, hyperparameter selection.

    idx = probe.label_fraction_indices(labels, 0.1, num_classes=100, seed=0)
    draws = [encoder.features(images[idx], A, jax.random.fold_in(key, e)) for e in range(10)]
    p = probe.fit(draws, labels[idx], num_classes=100)      # Adam, lr 1e-3, 10 epochs
    top1 = scoring.top1(probe.logits(p, test_features), test_labels)    # percent

The paper trains a linear layer with Adam (lr 1e-3, 10 epochs) on features of corrupted training
images, with a fresh corruption each epoch: `fit` takes the draws as a function, epoch e -> its
features (`rrjax.evaluation.features.Draws`, which computes each draw once), or as a list of
arrays, draw `e % len(draws)` in epoch e. Features are standardised with the
training features' per-dimension mean and std before the linear layer; that is an affine
reparametrisation of the same linear classifier, which only improves Adam's conditioning.
"""

import inspect
import itertools
import json
import math
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from rrjax import errors
from rrjax.evaluation import scoring
from rrjax.models import weights_io

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


Features = np.ndarray | Sequence[np.ndarray] | Callable[[int], np.ndarray]


def _draws(features: Features) -> tuple[Callable[[int], np.ndarray], list[np.ndarray]]:
  """`(epoch -> features, the draws the standardisation statistics are taken over)`."""
  if callable(features):
    first = features(0)
    draws, stats = features, [first]
  else:
    stats = [features] if isinstance(features, (np.ndarray, jax.Array)) else list(features)
    if not stats:
      raise ValueError("features: got an empty list of draws")
    draws = lambda e: stats[e % len(stats)]
  shapes = {np.shape(f) for f in stats}
  if len(shapes) != 1 or len(next(iter(shapes))) != 2:
    raise ValueError(f"features must be [N, D], or a list of equally shaped [N, D] arrays, "
                     f"got shapes {sorted(shapes)}")
  return draws, stats


def fit(features: Features, labels: np.ndarray, num_classes: int, *,
        lr: float = 1e-3, epochs: int = 10, batch_size: int = 256, weight_decay: float = 0.0,
        seed: int = 0, min_steps: int = 0) -> Probe:
  """Trains a linear probe with Adam on softmax cross-entropy.

  Minibatches are reshuffled every epoch (seeded); the last one is smaller when batch_size does
  not divide N (padded and masked, so the epoch compiles once).

  Args:
    features: the corruption draws of the same images, float `[N, D]` each: a function, epoch
      e -> its draw (a fresh corruption each epoch; `features.Draws`), or a list, draw
      `e % len(features)` in epoch e, or one array for every epoch.
    labels: int `[N]` in [0, num_classes).
    num_classes: C.
    lr: Adam learning rate.
    epochs: passes over the data, >= 1.
    batch_size: examples per minibatch (at most N).
    weight_decay: decoupled (AdamW) weight decay on all parameters; 0 is plain Adam.
    seed: seeds the initialisation and the shuffling.
    min_steps: a floor on optimiser steps: `epochs` is raised to reach it. Epoch counts chosen
      on the full training set would give a 1%-label probe only a handful of updates; the
      floor keeps small label fractions from being under-trained.

  Returns:
    The trained `Probe`, standardising with the mean and std over the draws of a list, or of
    epoch 0's draw of a function.
  """
  draw_at, draws = _draws(features)
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
  epochs = max(epochs, -(-min_steps // steps))
  rng = np.random.default_rng(seed)
  labels_device = jnp.asarray(labels, jnp.int32)
  for epoch in range(epochs):
    # One draw on device at a time; a draw already on device is not copied.
    x = jnp.asarray(draw_at(epoch), jnp.float32)
    if x.shape != (n, d):
      raise ValueError(f"features of epoch {epoch} have shape {x.shape}, epoch 0's {(n, d)}")
    order = np.full(steps * batch_size, -1, np.int32)
    order[:n] = rng.permutation(n)
    params, opt_state, loss = _epoch(params, opt_state, x, labels_device,
                                     order.reshape(steps, batch_size), mean, std)
    logging.log_every_n_seconds(logging.INFO, "fit: epoch %d/%d, loss %.4f", 10, epoch + 1,
                                epochs, loss)
  return Probe(params=params, mean=mean, std=std)


def configured(pc) -> dict[str, Any]:
  """The hyperparameters `{"lr", "epochs", "weight_decay"}` of a config's `probe` section."""
  return {"lr": pc.lr, "epochs": pc.epochs, "weight_decay": pc.weight_decay}


_GRID_KEYS = ("lr", "weight_decay", "epochs")


def select(train_features: Features, train_labels: np.ndarray,
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
    val_accuracy = scoring.top1(logits(probe, val_features), val_labels)
    logging.info("select: %s -> val top-1 %.2f", point, val_accuracy)
    if val_accuracy > best_accuracy:
      best, best_accuracy = point, val_accuracy
  return best, best_accuracy


# ----------------------------------------------------------------------------- saved probes

PROBE_FORMAT = "rrjax-probe"


def save(path: str, probe: Probe, class_names: Sequence[str], **metadata) -> None:
  """Writes `probe` to a `.safetensors` file: `kernel` `[D, C]`, `bias` `[C]`, `mean` and
  `std` `[D]`, with the class names (label i is `class_names[i]`) and `metadata` (strings or
  JSON-able values, e.g. the label fraction and hyperparameters) in its header. Atomic."""
  tensors = {"kernel": probe.params["kernel"], "bias": probe.params["bias"],
             "mean": probe.mean, "std": probe.std}
  if len(class_names) != np.shape(probe.params["bias"])[-1]:
    raise ValueError(f"{len(class_names)} class names for a probe of "
                     f"{np.shape(probe.params['bias'])[-1]} classes")
  header = {"format": PROBE_FORMAT, "class_names": json.dumps(list(class_names)),
            **{k: json.dumps(v) for k, v in metadata.items()}}
  weights_io.save_safetensors(path, {k: np.asarray(v, np.float32) for k, v in tensors.items()},
                              metadata=header)


def load(path: str) -> tuple[Probe, list[str], dict[str, Any]]:
  """`(probe, class names, metadata)` of a file written by `save`, read as data.

  Raises:
    rrjax.errors.UserError: naming the file, when it is not a readable probe file (missing,
      foreign, or with tensors of inconsistent shapes).
  """
  tensors, header = weights_io.read_safetensors(path, max_header_bytes=1 << 20)

  def bad(problem: str):
    return errors.UserError(f"{path}: not a probe written by rrjax ({problem})")

  if header.get("format") != PROBE_FORMAT:
    raise bad(f"its header's format is {errors.quote(header.get('format'))}, "
              f"not {PROBE_FORMAT!r}")
  try:
    decoded = {k: json.loads(v) for k, v in header.items() if k != "format"}
  except ValueError as e:
    raise bad(f"a header value is not JSON: {e}") from None
  names = decoded.pop("class_names", None)
  if sorted(tensors) != ["bias", "kernel", "mean", "std"]:
    raise bad(f"tensors {sorted(tensors)[:6]}, expected bias, kernel, mean, std")
  kernel, bias, mean, std = (np.asarray(tensors[k]) for k in ("kernel", "bias", "mean", "std"))
  if (kernel.ndim != 2 or bias.shape != kernel.shape[1:] or mean.shape != kernel.shape[:1]
      or std.shape != mean.shape or any(t.dtype.kind != "f" for t in (kernel, bias, mean, std))
      or not all(np.isfinite(t).all() for t in (kernel, bias, mean, std)) or (std <= 0).any()):
    raise bad(f"inconsistent tensors: kernel {kernel.shape}, bias {bias.shape}, "
              f"mean {mean.shape}, std {std.shape}")
  if not (isinstance(names, list) and len(names) == bias.shape[0]
          and all(isinstance(n, str) for n in names)):
    raise bad(f"its header lacks the {bias.shape[0]} class names")
  probe = Probe(params={"kernel": jnp.asarray(kernel, jnp.float32),
                        "bias": jnp.asarray(bias, jnp.float32)},
                mean=jnp.asarray(mean, jnp.float32), std=jnp.asarray(std, jnp.float32))
  return probe, names, decoded
