"""rrjax.parallel.preemption: SIGTERM stops any stage at a check, inside `watch()` only."""

import os
import signal

import flax.linen as nn
import jax
import numpy as np
import pytest

from rrjax.evaluation.features import extract_features
from rrjax.parallel import preemption
from tests.data.data_util import ArraySource


def test_check_raises_after_sigterm_inside_watch_and_the_handler_is_restored():
  previous = signal.getsignal(signal.SIGTERM)
  preemption.check("nothing")  # Outside a watch: never raises.
  with preemption.watch():
    preemption.check("before")
    with preemption.watch(), preemption.deferred():  # Nested: the same watch.
      os.kill(os.getpid(), signal.SIGTERM)  # Deferred: recorded, raised by the next check.
      assert preemption.requested()
      with pytest.raises(preemption.Preempted) as info:
        preemption.check("the probes")
  assert str(info.value) == ("preempted during the probes; trainings are kept in their "
                             "checkpoints; rerun the same command to resume")
  assert info.value.step is None
  assert signal.getsignal(signal.SIGTERM) is previous
  assert not preemption.requested()
  with preemption.watch():  # A new watch starts without the old notice.
    preemption.check("after")
    # Outside a deferred region, SIGTERM stops the run at once.
    with pytest.raises(preemption.Preempted, match="preempted during the run"):
      os.kill(os.getpid(), signal.SIGTERM)
      for _ in range(1000):  # The handler runs between two bytecodes of this loop.
        pass
  assert signal.getsignal(signal.SIGTERM) is previous


class _Signalling(ArraySource):
  """Sends this process SIGTERM when example `at` is read."""

  def __init__(self, n, at):
    super().__init__(n)
    self.at = at

  def _read_many(self, positions):
    if self.at in positions:
      os.kill(os.getpid(), signal.SIGTERM)
    return super()._read_many(positions)


class _Mean(nn.Module):
  @nn.compact
  def __call__(self, images, train=False):
    return images.mean(axis=(1, 2))


def test_a_feature_pass_stops_at_its_next_batch():
  module = _Mean()
  variables = module.init(jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))
  source = _Signalling(64, at=20)
  with preemption.watch():
    with pytest.raises(preemption.Preempted, match="during a feature pass"):
      extract_features(module, variables, source, batch_size=8, num_workers=0)
  # Outside a watch, the same pass runs to the end (the signal keeps its meaning: default
  # handler replaced here so that the test process survives it).
  previous = signal.signal(signal.SIGTERM, lambda *a: None)
  try:
    features = extract_features(module, variables, source, batch_size=8, num_workers=0)
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert features.shape == (64, 3)


def test_a_feature_pass_nested_in_a_training_step_finishes_and_the_step_loop_stops():
  # The baseline's validation pass (`rrjax.training.loop.fit`, `postponed`): a notice during it
  # must not end the pass unsaved, but stop the loop after it, which checkpoints the step.
  module = _Mean()
  variables = module.init(jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))
  with preemption.watch(), preemption.deferred():
    with preemption.postponed():
      features = extract_features(module, variables, _Signalling(64, at=20), batch_size=8,
                                  num_workers=0)
    assert features.shape == (64, 3)  # The whole pass.
    assert preemption.requested() and preemption.requested()  # Kept for the loop's check.
    with pytest.raises(preemption.Preempted, match="during the probes"):
      preemption.check("the probes")
  with preemption.watch():  # A new watch starts without the latched stop.
    assert not preemption.requested()
