r"""rrjax entry point.

  python -m rrjax.main --config=configs/demo.py --workdir=runs/demo
  python -m rrjax.main --config=configs/demo.py:smoke --workdir=/tmp/smoke --config.train.lr=1e-3

Rerunning the same command resumes from the last checkpoints in `--workdir`.
"""

import logging as std_logging

from absl import app, flags, logging
from ml_collections import config_flags

from rrjax import pipeline

config_flags.DEFINE_config_file("config", None, "Python config file (and :argument).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the report.")
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
  pipeline.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
