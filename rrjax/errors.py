"""Errors a user can fix, told apart from programming errors.

`rrjax.main` prints a user error as one line, `rrjax: error: <message>`, and exits with status 2;
any other exception keeps its traceback. User errors are `UserError` and the standard types a
bad config, input file or path raises (`ValueError`, `FileNotFoundError`, `PermissionError`,
...; the full list is `rrjax.main.USER_ERRORS`). Raise `UserError` where no standard type
fits; its message must name the bad value and say what is allowed or what to do.
"""


class UserError(ValueError):
  """A problem with the run's config, inputs or workdir that the user can fix."""
