"""Sharded training on 8 fake CPU devices equals the single-device step on the same batch."""

import json
import os
import subprocess
import sys

import pytest

from tests import helpers


@pytest.fixture(scope="module")
def report():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", PYTHONPATH=helpers.REPO)
  proc = subprocess.run([sys.executable, "-m", "tests.parallel.sharded_step_check"], env=env,
                        cwd=helpers.REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharded_step_equals_single_device_step(report):
  assert report["loss8"] == pytest.approx(report["loss1"], abs=1e-5)
  assert report["max_param_diff"] < 1e-5


def test_loss_uses_negatives_from_every_shard(report):
  # The step's loss is the global-batch InfoNCE (all 32 candidates per row), not the mean of
  # per-shard losses over 4 candidates each, which is a clearly different number.
  assert report["loss8"] == pytest.approx(report["global"], abs=1e-4)
  assert abs(report["per_shard"] - report["global"]) > 0.5


def test_batch_size_not_divisible_by_devices_is_a_clear_error(report):
  assert report["divisibility_error"] == ("train.batch_size=30 is not divisible by the 8 devices "
                                          "of the mesh")
