"""Orbax checkpoints of the training state: every N steps and at the end, resumable.

Orbax writes each step into a temporary directory (`<step>.orbax-checkpoint-tmp-*`) and renames
it when complete (on a bucket, which has no atomic rename, it marks the step complete with a
`commit_success.txt` written last), so `restore_latest` never picks up a checkpoint cut short by
a crash or `kill -9`; the leftover temporary directories are removed when the next run opens the
directory.

Saving and restoring are collective in a multi-process run: every process calls them at the
same step, so callers must not gate them on the process index. Save takes the global arrays of
the mesh and Orbax writes each array once (a replicated one from its first replica) while the
processes wait for each other; restore reads the whole state in every process. Every process
must see the same directory, which may be a bucket URL (`gs://...`).
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from rrjax import errors
from rrjax.io import files
from rrjax.parallel import multiprocess
from rrjax.training.state import TrainState


class Checkpointer:
  """Saves and restores `TrainState`s under `<directory>/<step>/`."""

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
    self._manager = ocp.CheckpointManager(
        _path(directory), options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False,
            cleanup_tmp_directories=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, state: TrainState) -> None:
    """Writes `state` at its step (every process calls it) and waits until it is complete."""
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

  def agreed_latest_step(self) -> int | None:
    """The newest complete step, the same in every process: process 0's listing decides, and
    a process whose own listing differs (a host-local or stale view of the workdir) makes
    every process raise the same one-line error, rather than restore another step and hang at
    Orbax's next barrier.

    Raises:
      rrjax.errors.UserError: the processes do not see the same checkpoints.
    """
    mine = self._manager.latest_step()
    step = multiprocess.leaders(-1 if mine is None else mine)
    step = None if step < 0 else step
    problem = None
    if mine != step:
      problem = (f"{self._manager.directory}: process {jax.process_index()} sees checkpoint "
                 f"step {mine}, process 0 step {step}: every process must see the same "
                 "--workdir (a shared file system or a bucket)")
    message = multiprocess.first_error(problem)
    if message is not None:
      raise errors.UserError(message)
    return step

  def restore_latest(self, template: TrainState) -> TrainState | None:
    """The newest complete checkpoint as host (numpy) arrays in `template`'s structure, or None.

    Every process reads the whole state, which rrjax replicates (`rrjax.parallel.sharding.replicate`
    then places it on the mesh). Arrays restored onto the shardings they were saved with, or
    committed to one device, could not be moved onto another process's devices.
    """
    step = self.agreed_latest_step()
    if step is None:
      return None
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=local),
                            template)
    return jax.device_get(self._manager.restore(step, args=ocp.args.StandardRestore(abstract)))

  def restore_or(self, state: TrainState, name: str) -> TrainState:
    """The newest checkpoint if there is one (logged as a resume), else `state`."""
    restored = self.restore_latest(state)
    if restored is None:
      return state
    logging.info("%s: resuming from checkpoint step %d", name, int(restored.step))
    return restored

  def close(self) -> None:
    self._manager.close()


def read_variables(directory: str | os.PathLike) -> dict:
  """`{"params", "batch_stats"?}` of the newest checkpoint in `directory`, for reading a run.

  Restored without a template: the optimiser state, whose structure depends on the optimiser
  the run used, is not needed. Nothing in `directory` is created or removed.

  Raises:
    rrjax.errors.UserError: `directory` holds no complete checkpoint.
  """
  manager = ocp.CheckpointManager(_path(directory),
                                  options=ocp.CheckpointManagerOptions(create=False))
  try:
    step = manager.latest_step()
    if step is None:
      raise errors.UserError(f"no checkpoint in {directory}: is the run finished?")
    state = manager.restore(step, args=ocp.args.StandardRestore())
  finally:
    manager.close()
  variables = {"params": state["params"]}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
  return variables


def _path(directory: str | os.PathLike) -> epath.Path:
  """An absolute local path (Orbax needs one) or a bucket URL."""
  return epath.Path(os.path.abspath(directory) if files.is_local(directory) else directory)
