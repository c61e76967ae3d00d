"""`rrjax.main`'s start-up hint about the CPU malloc setting."""

from absl import logging

from rrjax import main


def _hints(monkeypatch, tunables):
  if tunables is None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  else:
    monkeypatch.setenv("GLIBC_TUNABLES", tunables)
  seen = []
  monkeypatch.setattr(logging, "info", lambda msg, *args: seen.append(msg % args if args else msg))
  main._hint_cpu_malloc()  # pylint: disable=protected-access
  return [m for m in seen if "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in m]


def test_cpu_run_without_the_malloc_setting_is_told_about_it(monkeypatch):
  assert len(_hints(monkeypatch, None)) == 1
  assert len(_hints(monkeypatch, "glibc.malloc.arena_max=2")) == 1


def test_no_hint_when_the_setting_is_on(monkeypatch):
  assert not _hints(monkeypatch, "glibc.malloc.hugetlb=1")
  assert not _hints(monkeypatch, "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
