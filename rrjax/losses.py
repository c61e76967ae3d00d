"""Representation-recovery losses between student and teacher embeddings.

Every loss has the signature `loss(s, t, temperature=0.1) -> scalar` with

  s: `[N, D]` student embeddings S(A(x_i)) of the corrupted images, L2-normalised;
  t: `[N, D]` teacher embeddings R(x_i) of the clean images, L2-normalised;

and averages over the batch of N. Row i of `s` and row i of `t` form the positive pair; every
other row is a negative. Inputs are cast up to float32 first so bf16 embeddings still give a
float32 loss (the log-sum-exp over the batch is where low precision hurts); float64 is kept.

The losses are plain functions of the *global* batch: under `jit` with batch-sharded `s` and `t`,
the `s @ t.T` similarity matrix makes XLA gather the other devices' rows, so the negatives come
from the whole batch rather than from each device's shard. Do not call them per shard (e.g. inside
`shard_map`) unless per-shard negatives are what you want.

Paper: Ravula, Smyrnis, Jordan, Dimakis, "Inverse problems leveraging pre-trained contrastive
representations", NeurIPS 2021. `st` is its eq. 2 and `mse` its eq. 1; the others are the
ablations (`ss`, `sum`) and the standard SimCLR / CLIP objectives for comparison.
"""

from typing import Callable

import jax
import jax.numpy as jnp

Loss = Callable[..., jax.Array]


def normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  """L2-normalises the last axis: `x / max(||x||, eps)`; `[..., D] -> [..., D]`.

  The clamp keeps all-zero rows finite (they map to zero) instead of producing NaNs.
  """
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.maximum(norm, eps)


def _prepare(s: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
  if s.ndim != 2 or s.shape != t.shape:
    raise ValueError(f"expected s and t of the same shape [N, D], got {s.shape} and {t.shape}")
  # At least float32: bf16 is cast up, float64 (gradient checks under x64) is kept.
  dtype = jnp.promote_types(jnp.result_type(s, t), jnp.float32)
  return jnp.asarray(s, dtype), jnp.asarray(t, dtype)


def _positives(s: jax.Array, t: jax.Array) -> jax.Array:
  """`[N]` positive similarities s_i . t_i."""
  return jnp.sum(s * t, axis=-1)


def _off_diagonal_mask(n: int) -> jax.Array:
  """`[n, n]` bool, False on the diagonal."""
  return ~jnp.eye(n, dtype=bool)


def st(s: jax.Array, t: jax.Array, temperature: float = 0.1) -> jax.Array:
  """Student-teacher contrastive loss, the paper's eq. 2.

    L = 1/N sum_i [ -s_i.t_i / tau + log sum_{j=1..N} exp(s_i.t_j / tau) ]

  i.e. cross-entropy of each student row against all teacher rows, the matching teacher row
  being the target (the positive stays in the denominator).
  """
  s, t = _prepare(s, t)
  logits = s @ t.T / temperature
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits))


def mse(s: jax.Array, t: jax.Array, temperature: float = 0.1) -> jax.Array:
  """Negative cosine similarity, the paper's eq. 1.

    L = 1/N sum_i [ -s_i.t_i ]

  For unit vectors this is ||s_i - t_i||^2 / 2 - 1, hence the name. No negatives and no
  temperature; `temperature` is accepted only to keep the common signature.
  """
  del temperature  # Unused: eq. 1 has no temperature.
  s, t = _prepare(s, t)
  return -jnp.mean(_positives(s, t))


def ss(s: jax.Array, t: jax.Array, temperature: float = 0.1) -> jax.Array:
  """Student-student ablation: the negatives are the other students.

    L = 1/N sum_i [ -s_i.t_i / tau + log sum_{j != i} exp(s_i.s_j / tau) ]

  The positive is not in the denominator, so unlike `st` this is not a cross-entropy and can be
  negative; it pulls each student towards its teacher while pushing the students apart.

  Raises:
    ValueError: for N < 2, where the denominator is an empty sum (the loss would be -inf).
  """
  s, t = _prepare(s, t)
  n = s.shape[0]
  if n < 2:
    raise ValueError(f"loss 'ss' needs a batch of at least 2 (its negatives are the other "
                     f"students), got N={n}")
  logits_ss = jnp.where(_off_diagonal_mask(n), s @ s.T / temperature, -jnp.inf)
  return jnp.mean(jax.nn.logsumexp(logits_ss, axis=-1) - _positives(s, t) / temperature)


def sum_(s: jax.Array, t: jax.Array, temperature: float = 0.1) -> jax.Array:
  """Student-teacher plus student-student negatives in one denominator.

    L = 1/N sum_i [ -s_i.t_i / tau
                    + log( sum_j exp(s_i.t_j / tau) + sum_{j != i} exp(s_i.s_j / tau) ) ]

  i.e. `st` with the denominator running over all columns of [T; S] except s_i.s_i. At N = 1
  only the positive is left and the loss is exactly 0.
  """
  s, t = _prepare(s, t)
  n = s.shape[0]
  logits_st = s @ t.T / temperature
  logits_ss = jnp.where(_off_diagonal_mask(n), s @ s.T / temperature, -jnp.inf)
  logits = jnp.concatenate([logits_st, logits_ss], axis=-1)
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits_st))


def ntxent(s: jax.Array, t: jax.Array, temperature: float = 0.1) -> jax.Array:
  """SimCLR's NT-Xent over the 2N vectors z = [t; s] (Chen et al., 2020).

    L = 1/(2N) sum_{k=1..2N} [ -z_k.z_p(k) / tau + log sum_{l != k} exp(z_k.z_l / tau) ]

  with p(k) = k + N for k < N and k - N otherwise, so both directions (teacher -> student and
  student -> teacher) are averaged. At N = 1 each row's only candidate is its positive and the
  loss is exactly 0.
  """
  s, t = _prepare(s, t)
  n = s.shape[0]
  z = jnp.concatenate([t, s], axis=0)
  logits = jnp.where(_off_diagonal_mask(2 * n), z @ z.T / temperature, -jnp.inf)
  positive = jnp.concatenate([_positives(t, s), _positives(s, t)]) / temperature
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - positive)


def clip(s: jax.Array, t: jax.Array, temperature: float = 0.1) -> jax.Array:
  """CLIP's symmetric cross-entropy (Radford et al., 2021) on logits S T^T / tau.

    L = 1/2 [ CE(S T^T / tau, diag) + CE(T S^T / tau, diag) ]

  The first term is exactly `st`; the second also classifies each teacher among the students.
  """
  s, t = _prepare(s, t)
  logits = s @ t.T / temperature
  positive = jnp.diagonal(logits)
  student_to_teacher = jnp.mean(jax.nn.logsumexp(logits, axis=1) - positive)
  teacher_to_student = jnp.mean(jax.nn.logsumexp(logits, axis=0) - positive)
  return 0.5 * (student_to_teacher + teacher_to_student)


_REGISTRY: dict[str, Loss] = {
    "st": st,
    "mse": mse,
    "ss": ss,
    "sum": sum_,
    "ntxent": ntxent,
    "clip": clip,
}


def names() -> list[str]:
  """All loss names accepted by `get`."""
  return list(_REGISTRY)


def get(name: str) -> Loss:
  """The loss `name`: `fn(s, t, temperature=0.1) -> scalar`; see the module docstring."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown loss {name!r}; known: {', '.join(_REGISTRY)}")
  return _REGISTRY[name]
