"""SIGTERM at any stage of a run: every process stops at the same point, what is finished stays.

    with preemption.watch():            # rrjax.run, around the whole run
      ...
      with preemption.deferred():       # a loop that stops cleanly at its own checks
        for batch in ...:
          preemption.check("a feature pass")   # points every process passes in one order

SIGTERM is how clusters and TPU VMs announce a preemption. Inside `watch()`:
  * under `jax.distributed`, JAX's preemption service handles the signal (it installs its own
    handler at initialisation) and `check` asks it (`multiprocess.reached_preemption_point`):
    once any process received the notice, `check` answers at the same call in every process,
    because every process passes the same checks in the same order (the same batches of the
    same feature passes, the same training steps);
  * in a single process, a handler of ours takes the signal: inside `deferred()` (a training
    loop, a feature pass) it is recorded and the loop's next `check` raises; anywhere else
    (reading the data, fitting probes, writing the outputs) it raises `Preempted` at once.
Under the service, a stage without checks runs on to the next check (a feature batch, a probe,
a training step: seconds to minutes, not hours). Work nested in a training step (the baseline's
validation pass) runs `postponed()`: the step's loop checkpoints it, validated, then stops.
`check(where)` raises `Preempted`; training loops checkpoint first (`rrjax.training.loop`);
`rrjax.main` exits with status 143 and the same command resumes from the checkpoints. What is
kept: every finished or interrupted training (its checkpoint); what is redone: the interrupted
stage's feature passes, probes and evaluation, and those of earlier experiments, which are not
stored (they come out the same, every draw being seeded).

Outside `watch()` (a library user's own code), SIGTERM keeps its usual meaning and `check`
never raises. Python delivers signals to the main thread: `watch()` entered from another thread
installs no handler.
"""

import contextlib
import signal
import threading

from absl import logging

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
      message = (f"preempted during {where}; trainings are kept in their checkpoints; rerun the "
                 "same command to resume")
    super().__init__(message)
    self.where, self.step = where, step


_received = threading.Event()
_depth = 0  # Open `watch()` regions.
_deferring = 0  # Open `deferred()` regions (main thread).
_postponing = 0  # Open `postponed()` regions (main thread).
_reached = False  # `requested()` has answered True: it does from then on, without asking again.
_noted = False  # A postponed stop was logged.
_installed = False  # Whether our SIGTERM handler is installed (single process, main thread).
_lock = threading.Lock()


@contextlib.contextmanager
def watch():
  """Watches for SIGTERM until exit (module docstring); re-entrant: nested watches share it."""
  global _depth, _installed, _reached, _noted
  service = multiprocess.uses_preemption_service()
  main = threading.current_thread() is threading.main_thread()
  with _lock:
    _depth += 1
    first = _depth == 1
  if first:
    _reached = _noted = False
  previous = None
  if first and main and not service:
    _received.clear()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _installed = True
  try:
    yield
  finally:
    with _lock:
      _depth -= 1
      last = _depth == 0
    if last and _installed and main:
      # None: the previous handler was not set from Python; the default is the best stand-in.
      signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
      _installed = False
      _received.clear()
    if last:
      _reached = _noted = False


def _on_sigterm(signum, frame) -> None:
  del signum, frame
  _received.set()
  if not _deferring:
    raise Preempted("the run")


@contextlib.contextmanager
def deferred():
  """Within: SIGTERM waits for the loop's next `check` (module docstring)."""
  global _deferring
  _deferring += 1
  try:
    yield
  finally:
    _deferring -= 1


@contextlib.contextmanager
def postponed():
  """Within: `check` does not raise; a stop it finds is kept for the enclosing loop's next
  `requested()`, which answers True (as every later call does). For work nested in a training
  step, e.g. a validation pass: the loop checkpoints that step, validated, then stops, and the
  resumed run goes on exactly as an uninterrupted one would."""
  global _postponing
  _postponing += 1
  try:
    yield
  finally:
    _postponing -= 1


def requested() -> bool:
  """Whether to stop now: called at the same points by every process (module docstring)."""
  global _reached
  if not _depth:
    return False
  if not _reached:
    if multiprocess.uses_preemption_service():
      _reached = multiprocess.reached_preemption_point()
    else:
      _reached = _installed and _received.is_set()
  return _reached


def check(where: str) -> None:
  """Raises `Preempted(where)` when `requested()`, unless `postponed()`."""
  global _noted
  if not requested():
    return
  if not _postponing:
    raise Preempted(where)
  if not _noted:
    logging.warning("SIGTERM during %s: finishing it, then stopping", where)
    _noted = True
