"""benchmarks/input_pipeline.py --small runs end to end (one worker process, 64 JPEGs)."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # A child process and a worker: `make test-slow`, which CI runs.
def test_small_run_ends_with_the_result_line(tmp_path):
  command = [sys.executable, os.path.join("benchmarks", "input_pipeline.py"), "--small",
             "--workers=1", f"--cache_dir={tmp_path}"]
  out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  assert "uint8 [8, 224, 224, 3] checked" in out.stdout
  assert "ASSUMED" in out.stdout and "not measured here" in out.stdout
  assert re.fullmatch(r"result: train_views_per_core \d+ \(\d+\.\d\dx bare loop; goal 500 and "
                      r"0\.8x\)", lines[-1]), lines[-1]
  assert os.listdir(tmp_path) == ["train64"]
