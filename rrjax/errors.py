"""Errors a user can fix, told apart from programming errors.

`rrjax.main` prints a `UserError` (or a subclass) as one line, `rrjax: error: <message>`, and
exits with status 2; every other exception is a bug and keeps its traceback. Raise it where the
bad value is known: a config field, a spec, a dataset, a file or directory, a weights file, a
workdir, a diverged training. Its message names the bad value and says what is allowed or
what to do.
"""


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
