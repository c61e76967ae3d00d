"""`python -m rrjax.main` that freezes at a chosen point of a checkpoint write (kill -9 tests).

    RRJAX_PAUSE_AT=created|written|committed RRJAX_PAUSE_SAVE=2 RRJAX_PAUSE_MARKER=/tmp/m \
      python -m tests.parallel.scale_pause_main --config=... --workdir=...

Orbax saves a step into a temporary directory and renames it once complete
(`AtomicRenameTemporaryPath`, its choice for a local directory). At the RRJAX_PAUSE_SAVE-th
checkpoint save of the process (1-based, counting every Checkpointer; Orbax also writes each
item of a step through a temporary directory of its own inside the step's, which is not
counted), this process stops

* `created`: just after making the temporary directory, before any array is written in it,
* `written`: with every array written, before the commit marker and the rename,
* `committed`: just after the rename, the checkpoint complete,

writes the name of the temporary (or final) directory to RRJAX_PAUSE_MARKER and sleeps until it
is killed. Everything else is `rrjax.main` unchanged.
"""

import os
import time

from absl import app
from orbax.checkpoint._src.path import atomicity

from rrjax import main as rrjax_main

POINTS = ("created", "written", "committed")


def _install(point: str, save: int, marker: str) -> None:
  """Wraps the temporary path's `create` and `finalize` to pause at `point` of save `save`."""
  cls = atomicity.AtomicRenameTemporaryPath
  original = {"create": cls.create, "finalize": cls.finalize}
  calls = {"create": 0, "finalize": 0}

  def freeze(path) -> None:
    with open(marker + ".tmp", "w", encoding="utf-8") as f:
      f.write(os.fspath(path))
    os.replace(marker + ".tmp", marker)
    while True:
      time.sleep(60)

  def counts(self, method: str) -> bool:
    """Whether this call is the step's own directory (not an item's inside it) at save `save`."""
    if not self.get_final().name.isdigit():
      return False
    calls[method] += 1
    return calls[method] == save

  async def create(self, *args, **kwargs):
    result = await original["create"](self, *args, **kwargs)
    if counts(self, "create") and point == "created":
      freeze(self.get())
    return result

  async def finalize(self, *args, **kwargs):
    pause = counts(self, "finalize")
    if pause and point == "written":
      freeze(self.get())
    result = await original["finalize"](self, *args, **kwargs)
    if pause and point == "committed":
      freeze(self.get_final())
    return result

  cls.create, cls.finalize = create, finalize


if __name__ == "__main__":
  at = os.environ["RRJAX_PAUSE_AT"]
  if at not in POINTS:
    raise SystemExit(f"RRJAX_PAUSE_AT={at!r} not one of {', '.join(POINTS)}")
  _install(at, int(os.environ["RRJAX_PAUSE_SAVE"]), os.environ["RRJAX_PAUSE_MARKER"])
  app.run(rrjax_main.main)
