"""A whole run whose float32 eval views would not fit its memory: every stage streams.

`rrjax.main` runs in a child process whose address space is capped (`RLIMIT_AS`) at what it
holds once JAX and rrjax are imported plus `HEADROOM`; the dataset's eval views, held as float32
the way runs once loaded every split, would need more than four times that headroom, and even
as uint8 more than it. The run (with a Grain worker process decoding, under the same cap) must
finish and write its results.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests import helpers

# Images of the dataset, their measurement size S, and the child's allowance above its start.
NUM_TRAIN, NUM_TEST, SIZE = 1300, 100, 512
HEADROOM = 1000 << 20

_CHILD = textwrap.dedent("""
    import atexit, resource, sys
    import jax, numpy
    import rrjax.main, rrjax.run  # Everything the run imports, before measuring.
    jax.devices()
    with open("/proc/self/status") as f:
      vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
    limit = vm + int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    print(f"address space capped at {limit >> 20} MiB ({vm >> 20} MiB at start)", flush=True)
    def peak():
      with open("/proc/self/status") as f:
        print(next(l for l in f if l.startswith("VmPeak:")).strip(), flush=True)
    atexit.register(peak)
    # The cap holds: one float32 array of all the eval views cannot even be allocated.
    try:
      numpy.empty(int(sys.argv[2]), numpy.uint8)
      sys.exit("the memory limit did not hold")
    except MemoryError:
      pass
    sys.argv = ["rrjax.main"] + sys.argv[3:]
    from absl import app
    app.run(rrjax.main.main, flags_parser=rrjax.main.parse_flags)
""")


def _folder(root) -> str:
  """Small JPEGs of two sizes (so that no split is held in memory), 3 classes."""
  rng = np.random.default_rng(0)
  for split, n in (("train", NUM_TRAIN), ("test", NUM_TEST)):
    for i in range(n):
      label = i % 3
      folder = os.path.join(root, split, f"c{label}")
      os.makedirs(folder, exist_ok=True)
      image = rng.integers(0, 60, (16, 16 + i % 2, 3), dtype=np.uint8)
      image[:, :, label] += 150
      Image.fromarray(image).save(os.path.join(folder, f"{i:04d}.jpg"), quality=90)
  return str(root)


@pytest.mark.slow  # About 75 s: `make test-slow`, which CI runs after the default suite.
def test_run_streams_a_dataset_larger_than_its_memory(tmp_path):
  folder = _folder(tmp_path / "images")
  float32_views = (NUM_TRAIN + NUM_TEST) * SIZE * SIZE * 3 * 4
  assert float32_views > 4 * HEADROOM and float32_views // 4 > HEADROOM
  config = helpers.write_tiny_config_file(
      tmp_path / "config.py", folder, f"c.data.image_size = {SIZE}",
      "c.data.train_split = 'train[:1200]'", "c.data.val_split = 'train[1200:]'",
      "c.eval.batch_size = 8", "c.train.batch_size = 8", "c.baseline.batch_size = 8",
      "c.data.num_workers = 1")
  workdir = tmp_path / "run"
  env = helpers.main_env(MALLOC_ARENA_MAX="2")
  result = subprocess.run(
      [sys.executable, "-c", _CHILD, str(HEADROOM), str(float32_views),
       f"--config={config}", f"--workdir={workdir}"],
      env=env, cwd=helpers.REPO, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  assert "address space capped" in result.stdout
  print(result.stdout.strip().splitlines()[-1])  # VmPeak: how close the run came to the cap.
  assert os.path.exists(workdir / "results.json")
