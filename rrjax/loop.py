"""The training loop shared by the student and the supervised baseline.

Feeds global batches to a jitted step, logs progress (step/total, loss, images/s, ETA) and
metrics lines, guards against non-finite losses, and checkpoints every N steps and at the end,
so rerunning the same command resumes from the last checkpoint.
"""

import math
import time
from collections.abc import Callable, Iterator

import jax
from absl import logging
from jax.sharding import Mesh

from rrjax import sharding
from rrjax.checkpoint import Checkpointer
from rrjax.report import MetricsLog
from rrjax.train_state import TrainState


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or Inf loss; the last good checkpoint is kept."""


def fit(state: TrainState, advance: Callable, batches: Iterator[dict], *, name: str,
        total_steps: int, batch_size: int, mesh: Mesh, checkpointer: Checkpointer,
        metrics: MetricsLog, lr_at: Callable[[int], float], log_every: int,
        checkpoint_every: int, fields: tuple[str, ...] = ("image", "label")) -> TrainState:
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
  """
  step = int(jax.device_get(state.step))
  if step >= total_steps:
    return state
  window_start, window_step = time.perf_counter(), step
  for batch in batches:
    batch = sharding.global_batch({k: batch[k] for k in fields}, mesh)
    state, out = advance(state, batch)
    step += 1
    if step % log_every == 0 or step == total_steps:
      out = jax.device_get(out)
      loss = float(out["loss"])
      if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"{name}: loss is {loss} at step {step}; training stopped, the last good checkpoint "
            f"(step {checkpointer.latest_step()}) is kept. Lower the learning rate?")
      now = time.perf_counter()
      speed = (step - window_step) * batch_size / max(now - window_start, 1e-9)
      eta = (total_steps - step) * batch_size / max(speed, 1e-9)
      logging.info("%s step %d/%d  loss %.4f  %.1f img/s  ETA %.0fs", name, step, total_steps,
                   loss, speed, eta)
      metrics.write(run=name, step=step, loss=loss, lr=float(lr_at(step)), images_per_s=speed)
      window_start, window_step = now, step
    if checkpoint_every and step % checkpoint_every == 0:
      checkpointer.save(state)
    if step >= total_steps:
      break
  checkpointer.save(state)
  return state
