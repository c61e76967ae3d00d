"""rrjax.outputs.gallery: Figure 1 of a finished tiny run, and the top-k helper."""

import os
import subprocess
import sys

import numpy as np
import pytest

from rrjax import run
from rrjax.outputs import gallery
from tests import helpers


def test_top_k_sorted_and_bounded():
  probs = np.array([[0.1, 0.5, 0.15, 0.25], [0.7, 0.1, 0.1, 0.1]])
  classes, values = gallery.top_k(probs)
  np.testing.assert_array_equal(classes, [[1, 3, 2], [0, 1, 2]])
  np.testing.assert_allclose(values, [[0.5, 0.25, 0.15], [0.7, 0.1, 0.1]])


@pytest.mark.slow  # About 20 s: `make test-slow`, which CI runs after the default suite.
def test_gallery_of_tiny_run(tmp_path):
  folder = helpers.make_folder(tmp_path / "images")
  workdir = str(tmp_path / "run")
  run.train_and_evaluate(helpers.tiny_config(folder), workdir)

  pred = gallery.predictions(workdir, num=3, probe_images=60)
  assert pred["experiment"] == "mask" and pred["corruption"] == "mask(0.5)"
  assert pred["clean"].shape == pred["corrupted"].shape == (3, 16, 16, 3)
  for method in ("ours", "baseline"):
    assert pred[method].shape == (3, len(pred["class_names"]))
    _, values = gallery.top_k(pred[method])
    assert np.all(values.sum(axis=1) <= 1 + 1e-5), method
    assert np.all(np.diff(values, axis=1) <= 0), method
    assert np.all(values > 0), method

  path = gallery.main([f"--workdir={workdir}", "--num=3", "--probe_images=60"])
  assert path == os.path.join(workdir, "gallery_mask.png")
  # The documented command, as a user runs it, with an ImageNet-C corruption the run did not
  # evaluate (`python -m` once failed where gallery.main did not: a helper defined after the
  # `__main__` block).
  out = str(tmp_path / "fog.png")
  done = subprocess.run([sys.executable, "-m", "rrjax.outputs.gallery", f"--workdir={workdir}",
                         "--num=3", "--probe_images=60", "--corruption=fog(2)", f"--out={out}"],
                        env=helpers.main_env(), capture_output=True, text=True, timeout=300,
                        check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip().splitlines()[-1] == out
  for written in (path, out):
    with open(written, "rb") as f:
      png = f.read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_gallery_of_no_run_is_one_line_and_exit_2(tmp_path, capsys):
  with pytest.raises(SystemExit) as info:
    gallery.main([f"--workdir={tmp_path}"])
  assert info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith(f"python -m rrjax.outputs.gallery: error: cannot read {tmp_path}/")
