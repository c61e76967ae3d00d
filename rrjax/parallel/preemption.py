"""SIGTERM at any stage of a run: every process stops at the same point, what is finished stays.

    with preemption.watch():            # rrjax.run, around the whole run
      ...
      preemption.check("features")      # at points that every process passes in one order

SIGTERM is how clusters and TPU VMs announce a preemption. Inside `watch()`:
  * under `jax.distributed`, JAX's preemption service handles the signal (it installs its own
    handler at initialisation) and `check` asks it (`multiprocess.reached_preemption_point`):
    once any process received the notice, `check` answers at the same call in every process,
    because every process passes the same checks in the same order (the same batches of the
    same feature passes, the same training steps);
  * in a single process, a handler of ours records the signal and `check` says whether it came.
`check(where)` then raises `Preempted`: training loops checkpoint first (`rrjax.training.loop`);
`rrjax.main` exits with status 143 and the same command resumes from the checkpoints (finished
trainings are not redone; an interrupted feature pass or evaluation is computed again, with the
same result, since every draw is seeded).

Outside `watch()` (a library user's own code), SIGTERM keeps its usual meaning and `check`
never raises. Python delivers signals to the main thread: `watch()` entered from another thread
installs no handler.
"""

import contextlib
import signal
import threading

from rrjax.parallel import multiprocess


class Preempted(BaseException):
  """SIGTERM arrived; the run stops at `where` (a stage, or a training step with its state
  checkpointed).

  A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way up mistakes
  the request to stop for an error and carries on.
  """

  def __init__(self, where: str, step: int | None = None):
    if step is not None:
      message = (f"preempted at step {step}; checkpoint saved; rerun the same command to "
                 "resume")
    else:
      message = (f"preempted during {where}; finished stages are kept; rerun the same command "
                 "to resume")
    super().__init__(message)
    self.where, self.step = where, step


_state = threading.local()
_received = threading.Event()
_depth = 0
_installed = False  # Whether our SIGTERM handler is installed (single process, main thread).
_lock = threading.Lock()


@contextlib.contextmanager
def watch():
  """Watches for SIGTERM until exit (module docstring); re-entrant: nested watches share it."""
  global _depth, _installed
  service = multiprocess.uses_preemption_service()
  main = threading.current_thread() is threading.main_thread()
  with _lock:
    _depth += 1
    first = _depth == 1
  previous = None
  if first and main and not service:
    _received.clear()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: _received.set())
    _installed = True
  _state.watching = getattr(_state, "watching", 0) + 1
  try:
    yield
  finally:
    _state.watching -= 1
    with _lock:
      _depth -= 1
      last = _depth == 0
    if last and _installed:
      # None: the previous handler was not set from Python; the default is the best stand-in.
      signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
      _installed = False
      _received.clear()


def requested() -> bool:
  """Whether to stop now: called at the same points by every process (module docstring)."""
  if not getattr(_state, "watching", 0):
    return False
  if multiprocess.uses_preemption_service():
    return multiprocess.reached_preemption_point()
  return _installed and _received.is_set()


def check(where: str) -> None:
  """Raises `Preempted(where)` when `requested()`."""
  if requested():
    raise Preempted(where)
