"""A failure in one process ends every process of the run, with the same line, within seconds.

    with failures.shared():               # rrjax.main, around the run
      ...
    failures.end(2, "rrjax: error: ...")  # rrjax.main, for the error that ends this process

A check whose outcome may differ between processes is agreed at a point every process passes
(`multiprocess.first_error`, `multiprocess.agreed`). Errors that no such point catches come
anywhere: an image only one process's slice holds fails to decode, a host's disk fills up, a
bug. Without help the other processes wait at their next collective, and the failing one at
JAX's shutdown barrier, until JAX's timeouts (5 minutes), then all abort with a trace that
hides the cause. Here, in a `jax.distributed` run:

  * the process that fails posts `(status, its index, the line)` under one key of JAX's
    coordination service (a key-value store that process 0 hosts). The first post wins: a
    process that finds the key taken (another failed first, or every process raises the same
    error at the same point) ends with the winner's line instead;
  * every process runs a watcher thread (`shared()`) that waits on that key; once it appears,
    the watcher prints the line and ends its process with the same status, wherever the main
    thread is blocked (a collective, a barrier, reading data);
  * every ending process acknowledges under its own key and waits (at most `ACK_WAIT_S`) for
    every other's before it ends: process 0 hosts the store, and a process that ended early
    would close its collectives' connections under its peers, a new error for them. The line
    is printed last, just before the process ends;
  * leaving `shared()` normally is a collective, so no process heads for JAX's shutdown while
    another may still fail (process 0 writes the run's outputs after the last computation).

Processes end with `os._exit` (after flushing stdio and killing their own worker processes):
a normal interpreter exit would enter JAX's shutdown barrier, which the failed peers never
reach, and abort minutes later. Files in flight are safe: outputs are written atomically and an
Orbax checkpoint is committed by a rename (`rrjax.io.files`, `rrjax.training.checkpoint`).
A single-process run prints the line and exits the usual way (`sys.exit`).

Not covered: a process that fails before it joins the run (a bad flag in one command: the
others wait at `jax.distributed.initialize` for JAX's initialisation timeout) and a process
killed outright (SIGKILL, out of memory), which posts nothing: the rest end on the error
their next collective raises, or on JAX's heartbeat timeout. SIGTERM is not
a failure: `rrjax.parallel.preemption` stops every process at one point, exit 143.

The store is JAX's internal client (`jax._src.distributed.global_state.client`); rrjax pins
JAX's version (`constraints.txt`), and `tests/parallel/test_failures.py` checks the calls used.
"""

import contextlib
import multiprocessing
import os
import sys
import threading
import time
from typing import NoReturn

import jax
from absl import logging

from rrjax.parallel import multiprocess

KEY = "rrjax/failure"
ACK_KEY = "rrjax/failure_ack/{}"
# How long a watcher waits on the key per call; also the longest a finished run waits for its
# watcher to stop.
POLL_MS = 1000
# How long process 0 waits for the other processes to acknowledge before it ends (and the
# store with it).
ACK_WAIT_S = 10.0
# Store errors in a row (other than "nothing posted yet") after which a watcher gives up.
WATCH_RETRIES = 5
BUG_STATUS = 1  # Python's own for an uncaught exception: a bug.

_ending = threading.Lock()  # Held by whichever thread ends this process.


def _state():
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state


# The run's size and this process's index as `jax.distributed` recorded them: no backend call,
# so that they still answer when the failure is the backend itself (a TPU held elsewhere).
def process_count() -> int:
  """Processes of the run (1 outside `jax.distributed`)."""
  return int(_state().num_processes or 1) if jax.distributed.is_initialized() else 1


def process_index() -> int:
  """This process's index (0 outside `jax.distributed`)."""
  return int(_state().process_id or 0) if jax.distributed.is_initialized() else 0


def spans_processes() -> bool:
  """Whether this is a `jax.distributed` run of more than one process."""
  return process_count() > 1


def _client():
  """JAX's coordination-service client in a `jax.distributed` run of several processes, else
  None."""
  return _state().client if spans_processes() else None


@contextlib.contextmanager
def shared():
  """Within: a failure any other process posts ends this one too (module docstring).

  Leaving it normally is a collective: no process leaves (for JAX's shutdown) while another
  may still fail, e.g. process 0 writing the run's outputs after the last computation. An
  `Exception` leaving it goes to `end` (the caller's part: `rrjax.main`).
  """
  client = _client()
  if client is None:
    yield
    return
  stop = threading.Event()
  watcher = threading.Thread(target=_watch, args=(client, stop), name="rrjax-failures",
                             daemon=True)
  watcher.start()
  try:
    yield
    multiprocess.all_true(True)  # Waits for every process, the watcher still on.
  except Exception:
    stop.set()  # No join: `end` follows (the caller's part), without waiting for a poll.
    raise
  except BaseException:  # Preempted, SystemExit: a normal exit and JAX's shutdown follow,
    stop.set()           # which must not pull the store from under the watcher.
    watcher.join(timeout=2 * POLL_MS / 1000)
    # A failure another process posted meanwhile outranks the stop: every process ends with it.
    with _ending:  # Blocks for good if the watcher is already ending this process.
      try:
        value = client.key_value_try_get(KEY)
      except Exception:  # pylint: disable=broad-except  # Nothing posted (or no store).
        value = None
      if value is not None:
        _end_with_posted(client, value)
    raise
  stop.set()
  watcher.join(timeout=2 * POLL_MS / 1000)


def _watch(client, stop: threading.Event) -> None:
  errors_in_a_row = 0
  while not stop.is_set():
    try:
      value = client.blocking_key_value_get(KEY, POLL_MS)
    except Exception as e:  # pylint: disable=broad-except
      if "DEADLINE_EXCEEDED" in str(e):
        errors_in_a_row = 0
        continue  # Nothing posted yet.
      errors_in_a_row += 1
      if errors_in_a_row < WATCH_RETRIES:
        stop.wait(errors_in_a_row * POLL_MS / 1000)  # A passing store error: again, later.
        continue
      # The store is gone: process 0 ended, or the run is shutting down. JAX's own error
      # polling ends this process if process 0 died.
      if not stop.is_set():
        logging.warning("failure watcher stopped: %s", " ".join(str(e).split())[:300])
      return
    if stop.is_set():
      return
    _ending.acquire()  # pylint: disable=consider-using-with  # Released by the exit.
    _end_with_posted(client, value)


def _end_with_posted(client, value: str) -> NoReturn:
  """Ends this process with the failure another process posted (`value`, `encode`d); the
  caller holds `_ending`."""
  status = BUG_STATUS
  try:
    status, index, line = decode(value)
    _finish(client, status, line, _note(index))
  finally:
    os._exit(status)  # pylint: disable=protected-access  # Whatever went wrong above.


def _note(first: int) -> str:
  return f"process {first} failed; ending this one too"


def encode(status: int, index: int, line: str) -> str:
  """The stored value of a failure: `"<status>\\t<process index>\\t<line>"`."""
  return f"{int(status)}\t{int(index)}\t{line}"


def decode(value: str) -> tuple[int, int, str]:
  """`(status, process index, line)` of an `encode`d value."""
  status, index, line = value.split("\t", 2)
  return int(status), int(index), line


def post(client, status: int, index: int, line: str) -> tuple[int, int, str]:
  """Posts this process's failure unless another's is there; returns the one that stands,
  `(status, process index, line)`: the same in every process."""
  try:
    client.key_value_set(KEY, encode(status, index, line))
    return status, index, line
  except Exception as e:  # pylint: disable=broad-except
    if "ALREADY_EXISTS" not in str(e):
      raise
  return decode(client.blocking_key_value_get(KEY, POLL_MS))


def end(status: int, line: str, details: str = "") -> NoReturn:
  """Ends this process with `status`, `details` (e.g. a traceback) then `line` on stderr; in a
  multi-process run, every process with the first failure posted (module docstring)."""
  client = _client()
  if client is None:
    print(details + line, file=sys.stderr)
    sys.exit(status)
  index = process_index()
  # Before posting: this process's own watcher, seeing the post, must not end it first.
  _ending.acquire()  # pylint: disable=consider-using-with  # Released by the exit.
  try:
    if details:
      print(details, end="", file=sys.stderr)
    try:
      status, first, line = post(client, status, index, line)
    except Exception as e:  # pylint: disable=broad-except
      # No store (process 0 already gone): this process's own line, its own way out.
      logging.warning("could not share the failure with the other processes: %s",
                      " ".join(str(e).split())[:300])
      first = index
    _finish(client, status, line, None if first == index else _note(first))
  finally:
    os._exit(status)  # pylint: disable=protected-access  # Whatever went wrong above.


def _finish(client, status: int, line: str, note: str | None) -> None:
  """Acknowledges, waits (bounded) for every process's acknowledgement, kills this process's
  worker processes and prints `line` last; the caller holds `_ending` and exits."""
  if note:
    logging.warning("%s", note)
  index = process_index()
  try:
    client.key_value_set(ACK_KEY.format(index), "1", allow_overwrite=True)
    # Every process waits, not only process 0 (which hosts the store): a process that ends
    # first closes its collectives' connections, which its peers would report as a new error.
    deadline = time.monotonic() + ACK_WAIT_S
    for other in range(process_count()):
      left_ms = int(1000 * (deadline - time.monotonic()))
      if left_ms <= 0:
        break
      client.blocking_key_value_get(ACK_KEY.format(other), left_ms)
    if index == 0:
      time.sleep(0.2)  # The others' last reads of the store, before it goes with this process.
  except Exception as e:  # pylint: disable=broad-except
    logging.info("while ending with the other processes: %s", " ".join(str(e).split())[:300])
  for child in multiprocessing.active_children():  # Data loader workers.
    child.kill()
  logging.flush()
  print(line, file=sys.stderr)  # Last: the line every process ends with.
  for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(Exception):
      stream.flush()
