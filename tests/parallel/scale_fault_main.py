"""`python -m rrjax.main` with a fault in one process (the multi-process tests).

    RRJAX_FAULT=bug RRJAX_FAULT_PROCESS=1 python -m tests.parallel.scale_fault_main --config=...

In the process of index RRJAX_FAULT_PROCESS, RRJAX_FAULT is

* `bug`: the first scoring of a probe over the evaluation draws
  (`rrjax.evaluation.scoring.accuracy_over_draws`) raises `RuntimeError("injected fault")`,
  while the other processes go on to their next collective;
* `last_write`: writing `results.json` (`rrjax.outputs.report.write_results`, process 0's
  alone, after the run's last computation) raises `OSError("injected: disk full")`, while
  the other processes have nothing left to compute;
* `sigterm_in_validation`: the process sends itself SIGTERM at the start of the first
  validation pass of a training (`rrjax.training.loop._Best.offer`, the baseline's model
  selection), and waits a moment for JAX's preemption service to spread the notice.

Everything else is `rrjax.main` unchanged.
"""

import os
import signal
import time

import jax
from absl import app

from rrjax import main as rrjax_main
from rrjax.evaluation import scoring
from rrjax.outputs import report
from rrjax.training import loop

FAULTS = ("bug", "last_write", "sigterm_in_validation")


def _install(fault: str, process: int) -> None:
  if fault == "bug":
    original = scoring.accuracy_over_draws

    def accuracy_over_draws(*args, **kwargs):
      if jax.process_index() == process:
        raise RuntimeError("injected fault")
      return original(*args, **kwargs)

    scoring.accuracy_over_draws = accuracy_over_draws
  elif fault == "last_write":
    def write_results(*args, **kwargs):
      if jax.process_index() == process:
        raise OSError("injected: disk full")
      return original_write(*args, **kwargs)

    original_write = report.write_results
    report.write_results = write_results
  else:
    offer, sent = loop._Best.offer, []  # pylint: disable=protected-access

    def signalling_offer(self, *args, **kwargs):
      if jax.process_index() == process and not sent:
        sent.append(True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.0)
      return offer(self, *args, **kwargs)

    loop._Best.offer = signalling_offer  # pylint: disable=protected-access


if __name__ == "__main__":
  fault = os.environ["RRJAX_FAULT"]
  if fault not in FAULTS:
    raise SystemExit(f"RRJAX_FAULT={fault!r} not one of {', '.join(FAULTS)}")
  _install(fault, int(os.environ["RRJAX_FAULT_PROCESS"]))
  app.run(rrjax_main.main, flags_parser=rrjax_main.parse_flags)
