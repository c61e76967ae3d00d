"""Runs that span several processes: joining them, the leader, agreeing on errors, preemption.

One JAX process runs per host (a TPU VM worker, a GPU node or one GPU); together they see every
device of the run's mesh, and each feeds its own slice of the global batch
(`rrjax.data.batches`, `rrjax.parallel.sharding.global_batch`). `rrjax.main` calls
`maybe_initialize` before anything touches JAX:

    python -m rrjax.main ... --distributed           # TPU pod, SLURM, Open MPI: auto-detected
    python -m rrjax.main ... --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0

Process 0, the leader, writes the run's own files (config.json, metrics.jsonl, results.json,
report.md, plots: `rrjax.outputs` and `rrjax.config.workdir` check `is_leader` themselves). Orbax
checkpoints are collective: every process calls save and restore. Every process must see the
same workdir (a shared file system or a bucket).
"""

import itertools
import os
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from rrjax import errors

ENV_COORDINATOR_ADDRESS = "RRJAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "RRJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "RRJAX_PROCESS_ID"

# Step ids given to JAX's preemption sync manager. They must grow over the whole process, not
# restart with each training loop (student, then one baseline per label fraction): the sync
# point is one past the largest id any process has reached when the notice arrives.
_sync_ids = itertools.count(1)


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, environ: Mapping[str, str] | None = None
            ) -> tuple[str | None, int | None, int | None]:
  """Fills the unset ones of the three settings from RRJAX_* environment variables.

  Returns:
    `(coordinator_address, num_processes, process_id)`, None where neither gives a value.

  Raises:
    rrjax.errors.UserError: an environment variable that is not an integer where one is due.
  """
  environ = os.environ if environ is None else environ
  if coordinator_address is None:
    coordinator_address = environ.get(ENV_COORDINATOR_ADDRESS) or None
  values = []
  for value, name in ((num_processes, ENV_NUM_PROCESSES), (process_id, ENV_PROCESS_ID)):
    if value is None and environ.get(name, "").strip():
      try:
        value = int(environ[name])
      except ValueError:
        raise errors.UserError(f"environment variable {name}={environ[name]!r} is not an "
                               "integer") from None
    values.append(value)
  return coordinator_address, values[0], values[1]


def maybe_initialize(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, *, auto: bool = False) -> bool:
  """Calls `jax.distributed.initialize` when the run spans processes; returns whether it did.

  Must run before any JAX computation or device query. With `auto` (`--distributed`) and no
  address, JAX detects the cluster (TPU pod, SLURM, Open MPI) and the other two settings may be
  left out as well. Otherwise a multi-process run names all three. One process
  (`num_processes=1`) or none of the settings is a single-process run: nothing to join.
  Processes on CPU exchange data with gloo collectives.

  Args:
    coordinator_address: "HOST:PORT" of process 0's coordinator service.
    num_processes: how many processes the run has, >= 1.
    process_id: this process's index, in [0, num_processes).
    auto: initialize even without settings, letting JAX detect them.

  Raises:
    rrjax.errors.UserError: naming the flag that is missing or out of range.
  """
  _check(coordinator_address, num_processes, process_id, auto)
  if not auto and (coordinator_address is None or num_processes == 1):
    return False
  if jax.distributed.is_initialized():
    raise errors.UserError("jax.distributed is already initialized; start rrjax in a fresh "
                           "process")
  platforms = [p.strip() for p in (jax.config.jax_platforms or "").split(",") if p.strip()]
  # Only the CPU backend needs it, so it is left alone where the run is told to use no CPU.
  # Recent JAX defaults to gloo; older versions have no cross-process CPU collectives without.
  if not platforms or "cpu" in platforms:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  logging.info("jax.distributed.initialize(coordinator_address=%s, num_processes=%s, "
               "process_id=%s)", coordinator_address, num_processes, process_id)
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  if jax.process_count() > 1 and not jax.config.jax_enable_preemption_service:
    # Without it each process would take SIGTERM alone and stop where the others do not.
    raise errors.UserError("JAX's preemption service is off (JAX_ENABLE_PREEMPTION_SERVICE or "
                           "jax_enable_preemption_service): a multi-process rrjax run needs it "
                           "to stop every process at one point on SIGTERM")
  logging.info("process %d of %d: %d local of %d devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def _check(address: str | None, num: int | None, index: int | None, auto: bool) -> None:
  if address is not None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise errors.UserError(f"--coordinator_address={address!r}: must be HOST:PORT (e.g. "
                             "10.0.0.1:1234), process 0's host and a free port")
  if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 1):
    raise errors.UserError(f"--num_processes={num!r}: must be an integer >= 1")
  if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0
                            or (num is not None and index >= num)):
    bound = f"[0, {num})" if num is not None else ">= 0"
    raise errors.UserError(f"--process_id={index!r}: must be an integer in {bound}")
  if auto:
    return
  if address is None and ((num or 1) > 1 or (index or 0) > 0):
    raise errors.UserError(f"--num_processes={num} --process_id={index} without "
                           "--coordinator_address: a multi-process run names process 0's "
                           "HOST:PORT (or pass --distributed to detect it on a TPU pod or a "
                           "SLURM / Open MPI cluster)")
  if address is not None and (num is None or index is None):
    raise errors.UserError(f"--coordinator_address={address} needs --num_processes and "
                           "--process_id too (or --distributed to detect them)")


def is_leader() -> bool:
  """Whether this is process 0, the one that writes the run's files."""
  return jax.process_index() == 0


def first_error(message: str | None) -> str | None:
  """The first (by process index) non-empty `message` of all processes; the same in each.

  Every process must call it at the same point. A check whose outcome may differ between
  processes (a file only some can see or write) goes through it, so that every process raises
  the same error instead of some waiting forever for the others at the next collective.
  """
  if jax.process_count() == 1:
    return message or None
  data = np.frombuffer((message or "").encode("utf-8"), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.int32(data.size))).reshape(-1)
  if not lengths.any():
    return None
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:data.size] = data
  gathered = np.asarray(multihost_utils.process_allgather(padded))
  first = int(np.flatnonzero(lengths)[0])
  return bytes(gathered[first, :lengths[first]]).decode("utf-8")


def all_true(flag: bool) -> bool:
  """Whether `flag` holds in every process; the same answer in each (a collective: every
  process calls it at the same point). For a fact each process sees alone, e.g. a file on a
  disk that may be its own."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.asarray(multihost_utils.process_allgather(np.int32(bool(flag)))).all())


def leaders(value: int) -> int:
  """Process 0's `value` in every process: a decision taken once (a collective). An int32
  (JAX's default integers: wider ones would be cut to 32 bits)."""
  if not -2**31 <= value < 2**31:
    raise ValueError(f"{value} is not an int32")
  if jax.process_count() == 1:
    return int(value)
  return int(np.asarray(multihost_utils.broadcast_one_to_all(np.int32(value))))


def agreed(work):
  """`work()`'s result, or in every process the same `UserError`: the first process's to
  raise one (`first_error`). For work whose outcome may differ between processes."""
  try:
    result, error = work(), None
  except errors.UserError as e:
    result, error = None, e
  message = first_error(None if error is None else str(error))
  if message is not None:
    raise error if error is not None and str(error) == message else errors.UserError(message)
  return result


def uses_preemption_service() -> bool:
  """Whether JAX's preemption service watches for SIGTERM (a `jax.distributed` run).

  JAX installs its own SIGTERM handler at `jax.distributed.initialize`; every process learns of
  a notice that reached any of them, and `reached_preemption_point` names one step for all.
  """
  return jax.distributed.is_initialized() and bool(jax.config.jax_enable_preemption_service)


def reached_preemption_point() -> bool:
  """Called once per training step by every process: True at the same step in all of them
  once any received SIGTERM (see `uses_preemption_service`)."""
  return multihost_utils.reached_preemption_sync_point(next(_sync_ids))
