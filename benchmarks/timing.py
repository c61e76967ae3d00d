"""Timing shared by the benchmark scripts (imported as a sibling module)."""

import statistics
import time


def interleaved_medians(runs: list, warmup: int, steps: int) -> list[float]:
  """Median seconds of each `run()` over `steps` calls, after `warmup` (compiling) calls each.

  The runs alternate call by call, so that a change in the machine's load hits all of them.
  """
  for run in runs:
    for _ in range(warmup):
      run()
  times = [[] for _ in runs]
  for _ in range(steps):
    for run, out in zip(runs, times):
      start = time.perf_counter()
      run()
      out.append(time.perf_counter() - start)
  return [statistics.median(t) for t in times]
