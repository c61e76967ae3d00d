r"""rrjax entry point.

  python -m rrjax.main --config=configs/demo.py --workdir=runs/demo
  python -m rrjax.main --config=configs/demo.py:smoke --workdir=/tmp/smoke --config.train.lr=1e-3

Rerunning the same command resumes from the last checkpoints in `--workdir`.

A run over several processes (hosts) starts one copy of the command per process, all with the
same workdir (a shared file system or a `gs://` bucket):

  python -m rrjax.main ... --distributed        # TPU pod, SLURM, Open MPI: detected by JAX
  python -m rrjax.main ... --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0

The three settings default to the environment variables RRJAX_COORDINATOR_ADDRESS,
RRJAX_NUM_PROCESSES and RRJAX_PROCESS_ID (`rrjax.parallel.multiprocess`).

Exit status: 0 when the run completed; 2 for a user error (`rrjax.errors.UserError`: a bad
config, input file, weights file or workdir; a diverged training), printed as one line
`rrjax: error: <message>` without a traceback (`--traceback` or RRJAX_TRACEBACK=1 shows it);
143 (128 + SIGTERM) when SIGTERM stopped training after saving a checkpoint. Every other
exception is a bug and keeps its traceback (status 1). In a multi-process run an error or a bug
in one process ends every process within seconds, each printing the same line with the same
status (`rrjax.parallel.failures`).
"""

import logging as std_logging
import os
import sys
import traceback

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from rrjax import errors, run
from rrjax.parallel import failures, multiprocess
from rrjax.training import loop

# The shell's status for a process ended by SIGTERM, which schedulers expect of a preemption.
PREEMPTED_STATUS = 128 + 15
USER_ERROR_STATUS = 2

config_flags.DEFINE_config_file("config", None, "Python config file (and :argument).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the report.")
flags.DEFINE_bool("traceback", False, "Show the traceback of user errors too (also: "
                  "environment variable RRJAX_TRACEBACK=1).")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 in a multi-process "
                    f"run (default: ${multiprocess.ENV_COORDINATOR_ADDRESS}).")
flags.DEFINE_integer("num_processes", None, "Processes of a multi-process run (default: "
                     f"${multiprocess.ENV_NUM_PROCESSES}).")
flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes) "
                     f"(default: ${multiprocess.ENV_PROCESS_ID}).")
flags.DEFINE_bool("distributed", False, "Join a multi-process run, detecting what the three "
                  "flags above leave unset (TPU pod, SLURM, Open MPI).")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietCheckpointer(std_logging.Filter):
  """Drops Orbax's per-save INFO chatter; its warnings and errors still show."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietCheckpointer())
  f = flags.FLAGS
  try:
    multiprocess.maybe_initialize(
        *multiprocess.resolve(f.coordinator_address, f.num_processes, f.process_id),
        auto=f.distributed)
    # A failure in any process ends every process, with its line (`failures`).
    with failures.shared():
      _hint_cpu_malloc()
      overrides = tuple(config_flags.get_override_values(f["config"]))
      run.train_and_evaluate(f.config, f.workdir, overrides)
  except loop.Preempted as e:
    _exit(PREEMPTED_STATUS, f"rrjax: {e}")  # Every process stops at the same point.
  except errors.UserError as e:
    show = f.traceback or _show_tracebacks()
    if show and not failures.spans_processes():
      raise
    failures.end(USER_ERROR_STATUS, f"rrjax: error: {str(e) or type(e).__name__}",
                 traceback.format_exc() if show else "")
  except Exception as e:  # pylint: disable=broad-except
    if not failures.spans_processes():
      raise  # A bug: its traceback, exit status 1.
    failures.end(failures.BUG_STATUS,
                 f"rrjax: process {failures.process_index()} failed: "
                 f"{errors.one_line(f'{type(e).__name__}: {e}', 1000)} (a bug; the traceback "
                 "is in that process's log)", traceback.format_exc())


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run`'s `flags_parser`), with the config's errors as user errors.

  A bad `--config` file or argument, an override of a field the config does not have, or a
  value of the wrong type stop the run with one line and exit status 2, as any user error
  (a config file's own exception keeps its traceback in the message: it is the user's code).
  """
  try:
    remaining = flags.FLAGS(argv)
    "seed" in flags.FLAGS.config  # pylint: disable=pointless-statement  # Raises if unloaded.
    return remaining
  except (flags.Error, KeyError, AttributeError, OSError) as e:
    message = _config_error(e, argv)
    # --traceback is not parsed yet: looked for by name.
    if message is None or "--traceback" in argv or _show_tracebacks():
      raise
    _exit(USER_ERROR_STATUS, f"rrjax: error: {message}")


def _config_error(e: Exception, argv: list[str]) -> str | None:
  """The one line for an error raised while the config flags were parsed; None for one that
  is no user error (a KeyError in a config file's own code keeps its traceback)."""
  if isinstance(e, flags.Error):
    # ml_collections re-raises the config file's exception with its traceback in the message:
    # the first one raised is the user error itself.
    chain = []
    while e is not None:
      chain.append(e)
      e = e.__context__
    user = [c for c in chain if isinstance(c, errors.UserError)]
    return str(user[-1] if user else chain[0])
  if isinstance(e, (KeyError, AttributeError)):
    # ml_collections, applying an override whose path the config lacks.
    name, *hint = str(e).strip("'\"").replace("\\'", "'").split("\\n")
    name = name.strip("'\"")
    paths = [a.split("=")[0][len("--config."):] for a in argv if a.startswith("--config.")]
    path = next((p for p in paths if name in p.split(".")), None)
    if path is None:
      return None
    return (f"--config.{path}: the config has no field {name!r}"
            + (f" ({hint[0][0].lower() + hint[0][1:]})" if hint else "")
            + "; an experiment's own fields are overridden by their path under "
              "--config.experiments.<name>., every other field by --config.<field>")
  if isinstance(e, OSError):  # The config file could not be loaded.
    return f"--config: {' '.join(str(e).split())}"
  return None


def _show_tracebacks() -> bool:
  return os.environ.get("RRJAX_TRACEBACK", "") not in ("", "0")


def _hint_cpu_malloc():
  """On CPU, points at the malloc setting that `make demo` uses (docs/performance.md)."""
  if (jax.default_backend() == "cpu"
      and "glibc.malloc.hugetlb" not in os.environ.get("GLIBC_TUNABLES", "")):
    logging.info("XLA:CPU runs about 20% faster on Linux with transparent huge pages for "
                 "malloc: start Python with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (make demo "
                 "does; benchmarks/README.md)")


def _exit(status: int, message: str):
  print(message, file=sys.stderr)
  sys.exit(status)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
