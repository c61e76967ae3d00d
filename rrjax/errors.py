"""Errors a user can fix, told apart from programming errors.

`rrjax.main` prints a `UserError` (or a subclass) as one line, `rrjax: error: <message>`, and
exits with status 2; every other exception is a bug and keeps its traceback. Raise it where the
bad value is known: a config field, a spec, a dataset, a file or directory, a weights file, a
workdir, a diverged training. Its message names the bad value and says what is allowed or
what to do.
"""


class UserError(ValueError):
  """A problem with the run's config, inputs or workdir that the user can fix."""
