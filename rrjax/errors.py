"""Errors a user can fix, told apart from programming errors.

`rrjax.main` prints a `UserError` (or a subclass) as one line, `rrjax: error: <message>`, and
exits with status 2; every other exception is a bug and keeps its traceback. Raise it where the
bad value is known: a config field, a spec, a dataset, a file or directory, a weights file, a
workdir, a diverged training. Its message names the bad value and says what is allowed or
what to do.
"""

import sys
from typing import NoReturn


class UserError(ValueError):
  """A problem with the run's config, inputs or workdir that the user can fix."""


def one_line(text: str, limit: int = 300) -> str:
  """`text` on one line of at most about `limit` characters: for messages that quote a third
  party's error, which may span lines or hold a whole file's worth of data."""
  flat = " ".join(str(text).split())
  return flat if len(flat) <= limit else flat[:limit] + "..."


def quote(text, limit: int = 100) -> str:
  """`repr` of a name taken from a file (a tensor name, a dict key), cut to `limit` chars."""
  text = str(text)
  return repr(text[:limit]) + ("..." if len(text) > limit else "")


# The exit status of every rrjax command for a user error.
USER_ERROR_STATUS = 2


def exit_with(program: str, message: str) -> NoReturn:
  """Ends a command for a user error: `<program>: error: <message>` on one line of stderr, exit
  status 2 (`rrjax.main`'s contract, for the smaller commands: export, predict, ...)."""
  print(f"{program}: error: {one_line(message, 1000)}", file=sys.stderr)
  sys.exit(USER_ERROR_STATUS)
