"""The training skeleton shared by the student and the supervised baseline.

    variables = loop.train(state, advance, batches_from, workdir=rundir, name="student", ...)

`train` restores the newest checkpoint of `<workdir>/checkpoints`, runs `fit` from its step and
returns the final variables; `fit` feeds global batches to a jitted step, logs progress
(step/total, loss, images/s, ETA) and metrics lines (`<workdir>/metrics.jsonl`), guards against
non-finite losses and parameters, and checkpoints every N steps and at the end, so rerunning
the same command resumes from the last checkpoint.

SIGTERM (how cluster and TPU preemption arrives) ends training cleanly: the step in flight
completes, its state is checkpointed and `Preempted` is raised; `rrjax.main` turns that into
exit status 143, and the same command resumes from that checkpoint. In a multi-process run the
notice may reach the processes at different steps, or only some of them; JAX's preemption
service names one step at which all of them checkpoint together and stop
(`rrjax.parallel.preemption`, which the other stages share).
"""

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
from absl import logging
from jax.sharding import Mesh

from rrjax import errors
from rrjax.io.metrics import MetricsLog
from rrjax.parallel import preemption, sharding
from rrjax.training.checkpoint import Checkpointer
from rrjax.training.state import TrainState


class NonFiniteLossError(errors.UserError):
  """Training produced a NaN or Inf loss or parameter; the last good checkpoint is kept."""


# SIGTERM during training: the step's state is checkpointed, then this is raised.
Preempted = preemption.Preempted


@dataclasses.dataclass
class Validation:
  """Model selection during training: `score(variables)` (higher is better; the same in every
  process) every `every` steps and at the last one, each logged as `val_top1`; the best-scoring
  state is what `train` returns (the first best on ties, so the fewest steps). After `train`,
  `best_step` and `best_score` say which it was.

  The best state is held (a copy on the devices) until training checkpoints, and written under
  `<workdir>/best` just before each checkpoint of `<workdir>/checkpoints`: a resumed run finds
  the best of the steps it does not redo, and redoes (and rescores) the others. Validation does
  not checkpoint by itself (an Orbax save of EfficientNet-Lite0's state takes about 0.5 s on 2
  CPU cores, against 4 s of training between the demo baseline's validations)."""
  every: int
  score: Callable[[dict], float]
  best_step: int | None = None
  best_score: float | None = None


def train(state: TrainState, advance: Callable, batches_from: Callable[[int], Iterator[dict]],
          *, workdir: str, name: str, total_steps: int, batch_size: int, mesh: Mesh,
          lr_at: Callable[[int], float], log_every: int, checkpoint_every: int,
          fields: tuple[str, ...], validation: Validation | None = None) -> dict:
  """Trains `state` to `total_steps`, resuming from `<workdir>/checkpoints`; host variables.

  Args:
    state: the initial state (host arrays), used when `workdir` holds no checkpoint.
    advance: `(state, global_batch) -> (state, metrics)`, the jitted step.
    batches_from: `start_step -> this process's batches from that step on`.
    workdir: where the checkpoints and metrics.jsonl of this training go.
    name, total_steps, batch_size, mesh, lr_at, log_every, checkpoint_every, fields: as `fit`.
    validation: when given, the state returned is the best on it (`Validation`), not the last.

  Returns:
    The trained Flax variables `{"params", "batch_stats"?}` as host arrays.
  """
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  best = _Best(os.path.join(workdir, "best"), validation, name) if validation else None
  try:
    template = state
    state = sharding.replicate(checkpointer.restore_or(state, name), mesh)
    start = int(jax.device_get(state.step))
    if best is not None:
      best.resume(template)
    with MetricsLog(os.path.join(workdir, "metrics.jsonl"), resume_step=start) as metrics:
      state = fit(state, advance, batches_from(start), name=name, total_steps=total_steps,
                  batch_size=batch_size, mesh=mesh, checkpointer=checkpointer, metrics=metrics,
                  lr_at=lr_at, log_every=log_every, checkpoint_every=checkpoint_every,
                  fields=fields, best=best)
    if best is not None:
      if best.step is None:  # Nothing was scored (no steps to train): the state is the best.
        best.offer(state, int(jax.device_get(state.step)), metrics=None)
        best.persist()
      logging.info("%s: best on validation at step %d/%d (top-1 %.2f)", name, best.step,
                   total_steps, best.score)
      validation.best_step, validation.best_score = best.step, best.score
      return best.variables(template)
  finally:
    # Also when training stops (an error, SIGTERM): Orbax's threads end before the process.
    checkpointer.close()
    if best is not None:
      best.close()
  return jax.device_get(state.variables())


class _Best:
  """The best state on a `Validation` so far, checkpointed under its own directory."""

  def __init__(self, directory: str, validation: Validation, name: str):
    self.validation, self.name = validation, name
    self.checkpointer = Checkpointer(directory, max_to_keep=1)
    self.step, self.score = None, -math.inf
    self.pending = None  # The best state while it is not yet written (`persist`).

  def resume(self, template: TrainState) -> None:
    """Reads the best state of an interrupted run back, and rescores it."""
    restored = self.checkpointer.restore_latest(template)
    if restored is not None:
      self.step = int(restored.step)
      self.score = float(self.validation.score(restored.variables()))

  def offer(self, state: TrainState, step: int, metrics: MetricsLog | None) -> None:
    """Scores `state` (at `step`), logs it, and keeps it if it beats the best so far."""
    score = float(self.validation.score(jax.device_get(state.variables())))
    if metrics is not None:
      metrics.write(run=self.name, step=step, val_top1=score)
    logging.info("%s step %d: validation top-1 %.2f (best %.2f)", self.name, step, score,
                 max(score, self.score))
    if score > self.score:
      # A copy: the training step donates the state's buffers.
      self.pending = jax.tree.map(lambda x: x.copy(), state)
      self.step, self.score = step, score

  def persist(self) -> None:
    """Writes the best state held since the last checkpoint, if any (before that checkpoint)."""
    if self.pending is not None:
      _save(self.checkpointer, self.pending, self.name, self.step)
      self.pending = None

  def variables(self, template: TrainState) -> dict:
    return jax.device_get(self.checkpointer.restore_latest(template).variables())

  def close(self) -> None:
    self.checkpointer.close()


def fit(state: TrainState, advance: Callable, batches: Iterator[dict], *, name: str,
        total_steps: int, batch_size: int, mesh: Mesh, checkpointer: Checkpointer,
        metrics: MetricsLog, lr_at: Callable[[int], float], log_every: int,
        checkpoint_every: int, fields: tuple[str, ...] = ("image", "label"),
        best: "_Best | None" = None) -> TrainState:
  """Runs `advance(state, global_batch) -> (state, metrics)` until `total_steps`.

  Args:
    state: the (possibly restored) state; training continues from `state.step`.
    advance: the jitted step with everything but the state and batch bound.
    batches: this process's batches from `state.step` on (`rrjax.data.batches`).
    name: the run's name in logs and metrics lines.
    total_steps, batch_size: for progress and images/s (global batch size).
    checkpointer, metrics: where checkpoints and metrics lines go.
    lr_at: the learning rate at a step, for the metrics lines.
    log_every, checkpoint_every: in steps (checkpoint_every 0: only at the end).
    fields: the batch entries the step consumes.
    best: scores the state every `best.validation.every` steps and at the last one, keeping
      the best (`train`'s `validation`).

  Raises:
    NonFiniteLossError: a logged loss, or the state about to be checkpointed, is not finite.
    Preempted: SIGTERM arrived; the current state was checkpointed first.
  """
  step = int(jax.device_get(state.step))
  if step >= total_steps:
    return state
  window_start, window_step = time.perf_counter(), step
  with preemption.watch(), preemption.deferred():
    for batch in batches:
      batch = sharding.global_batch({k: batch[k] for k in fields}, mesh)
      state, out = advance(state, batch)
      step += 1
      if step % log_every == 0 or step == total_steps:
        out = jax.device_get(out)
        loss = float(out["loss"])
        if not math.isfinite(loss):
          raise _non_finite(name, f"loss is {loss}", step, checkpointer)
        now = time.perf_counter()
        speed = (step - window_step) * batch_size / max(now - window_start, 1e-9)
        eta = (total_steps - step) * batch_size / max(speed, 1e-9)
        logging.info("%s step %d/%d  loss %.4f  %.1f img/s  ETA %.0fs", name, step,
                     total_steps, loss, speed, eta)
        extra = {"grad_norm": float(out["grad_norm"])} if "grad_norm" in out else {}
        metrics.write(run=name, step=step, loss=loss, lr=float(lr_at(step)), images_per_s=speed,
                      **extra)
        window_start, window_step = now, step
      if best is not None and (step % best.validation.every == 0 or step >= total_steps):
        # Before a checkpoint of this step: the resumed run starts after it. A SIGTERM during
        # the validation pass stops after it, below, with this step checkpointed.
        with preemption.postponed():
          best.offer(state, step, metrics)
      if preemption.requested():
        _checkpoint(checkpointer, state, name, step, best)
        logging.warning("%s: SIGTERM at step %d/%d; checkpoint saved, stopping", name, step,
                        total_steps)
        raise Preempted(name, step)
      if checkpoint_every and step % checkpoint_every == 0:
        _checkpoint(checkpointer, state, name, step, best)
      if step >= total_steps:
        break
  _checkpoint(checkpointer, state, name, step, best)
  return state


def _checkpoint(checkpointer: Checkpointer, state: TrainState, name: str, step: int,
                best: "_Best | None") -> None:
  """Checkpoints `state`, the best state held first: a crash between the two leaves a best
  that the resumed run, redoing the steps after the older checkpoint, reaches again and keeps
  (a tie keeps the first), never a checkpoint newer than the best it knows of."""
  if best is not None:
    best.persist()
  _save(checkpointer, state, name, step)


@jax.jit
def _all_finite(tree) -> jax.Array:
  """Whether no leaf of `tree` holds a NaN or Inf, as one compiled reduction."""
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


def _save(checkpointer: Checkpointer, state: TrainState, name: str, step: int) -> None:
  """Checkpoints `state` unless it holds a NaN or Inf, so that every checkpoint is good.

  The loss is checked only on logged steps, and it is computed before the step's update:
  parameters that overflow in an update would otherwise be saved, and resuming would start
  from them.
  """
  if not _all_finite((state.params, state.batch_stats)):
    raise _non_finite(name, "the parameters are not finite", step, checkpointer)
  checkpointer.save(state)


def _non_finite(name: str, what: str, step: int,
                checkpointer: Checkpointer) -> NonFiniteLossError:
  latest = checkpointer.latest_step()
  kept = ("no checkpoint was saved before it" if latest is None else
          f"the last good checkpoint (step {latest}) is kept")
  return NonFiniteLossError(f"{name}: {what} at step {step}; training stopped, {kept}. "
                            "Lower the learning rate?")
