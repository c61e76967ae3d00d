"""Orbax checkpoints of the training state: every N steps and at the end, resumable.

Orbax writes each step into a temporary directory and renames it when complete, so a
half-written checkpoint is never picked up by `restore_latest`.
"""

import os

import jax
import orbax.checkpoint as ocp
from absl import logging

from rrjax.train_state import TrainState


class Checkpointer:
  """Saves and restores `TrainState`s under `<directory>/<step>/`."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, state: TrainState, force: bool = False) -> None:
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state), force=force)
    self._manager.wait_until_finished()

  def restore_latest(self, template: TrainState) -> TrainState | None:
    """The newest complete checkpoint, with `template`'s structure and shardings, or None."""
    step = self._manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_or(self, state: TrainState, name: str) -> TrainState:
    """The newest checkpoint if there is one (logged as a resume), else `state`."""
    restored = self.restore_latest(state)
    if restored is None:
      return state
    logging.info("%s: resuming from checkpoint step %d", name, int(restored.step))
    return restored

  def close(self) -> None:
    self._manager.close()
