"""`rrjax.parallel.failures` in-process: the first failure posted stands in every process.

The end-to-end behaviour (two processes, a bad image in one's slice, a bug in one) is in
`tests/parallel/test_multiprocess.py` (marker `scale`).
"""

import pytest
from jax._src.lib import _jax

from rrjax.parallel import failures


class _Store:
  """The two calls of JAX's coordination client that `post` uses, with its errors' texts."""

  def __init__(self):
    self.values = {}

  def key_value_set(self, key, value, allow_overwrite=False):
    if key in self.values and not allow_overwrite:
      raise RuntimeError(f"ALREADY_EXISTS: key {key} already exists.")
    self.values[key] = value

  def blocking_key_value_get(self, key, timeout_in_ms):
    del timeout_in_ms
    if key not in self.values:
      raise RuntimeError(f"DEADLINE_EXCEEDED: GetKeyValue() timed out with key: {key}")
    return self.values[key]


def test_the_first_failure_posted_is_the_one_every_process_ends_with():
  store = _Store()
  assert failures.post(store, 2, 1, "rrjax: error: cannot decode image a.png") == (
      2, 1, "rrjax: error: cannot decode image a.png")
  # A later failure (another process, another status) adopts the first one.
  assert failures.post(store, 1, 0, "rrjax: process 0 failed: gloo: connection closed") == (
      2, 1, "rrjax: error: cannot decode image a.png")
  assert failures.decode(store.values[failures.KEY]) == (
      2, 1, "rrjax: error: cannot decode image a.png")


def test_a_line_with_tabs_and_newlines_survives_the_store():
  line = "rrjax: error: a\tb\nc"
  assert failures.decode(failures.encode(143, 3, line)) == (143, 3, line)


def test_other_store_errors_are_not_mistaken_for_a_failure_already_posted():
  class Broken(_Store):
    def key_value_set(self, key, value, allow_overwrite=False):
      raise RuntimeError("UNAVAILABLE: the coordination service is gone")

  with pytest.raises(RuntimeError, match="UNAVAILABLE"):
    failures.post(Broken(), 2, 0, "x")


def test_jax_client_has_the_calls_failures_uses():
  # JAX's internal client (rrjax pins JAX's version): the names and keywords used.
  client = _jax.DistributedRuntimeClient
  assert "allow_overwrite" in client.key_value_set.__doc__
  assert "timeout_in_ms" in client.blocking_key_value_get.__doc__


def test_one_process_ends_the_usual_way(capsys):
  assert not failures.spans_processes()
  with failures.shared():  # No watcher without other processes.
    pass
  with pytest.raises(SystemExit) as info:
    failures.end(2, "rrjax: error: x")
  assert info.value.code == 2
  assert capsys.readouterr().err == "rrjax: error: x\n"
