"""rrjax.training.checkpoint: save and restore the train state, keep the newest, read a run."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rrjax import errors
from rrjax.training import checkpoint
from rrjax.training.state import TrainState


def _state(step: int, scale: float = 1.0) -> TrainState:
  variables = {"params": {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3) * scale},
               "batch_stats": {"mean": jnp.full((3,), scale, jnp.float32)}}
  state = TrainState.create(variables, optax.adam(1e-3))
  return state.replace(step=jnp.asarray(step, jnp.int32))


def test_save_then_restore_the_newest_as_host_arrays(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints", max_to_keep=2)
  assert ckpt.latest_step() is None
  assert ckpt.restore_latest(_state(0)) is None
  for step in (1, 2, 3):
    ckpt.save(_state(step, scale=float(step)))
  ckpt.save(_state(3, scale=99.0))  # A step already saved is not written again.
  assert ckpt.latest_step() == 3
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]  # max_to_keep
  restored = ckpt.restore_latest(_state(0))
  assert int(restored.step) == 3
  jax.tree.map(np.testing.assert_array_equal, restored.params, _state(3, 3.0).params)
  assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(restored))
  ckpt.close()


def test_restore_or_falls_back_to_the_given_state(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path / "c")
  fresh = _state(0, 5.0)
  assert ckpt.restore_or(fresh, "toy") is fresh
  ckpt.save(_state(4, 2.0))
  assert int(ckpt.restore_or(fresh, "toy").step) == 4
  ckpt.close()


def test_read_variables_of_a_finished_run_without_a_template(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path / "c")
  ckpt.save(_state(7, 2.0))
  ckpt.close()
  variables = checkpoint.read_variables(tmp_path / "c")
  assert set(variables) == {"params", "batch_stats"}
  np.testing.assert_array_equal(variables["params"]["w"], _state(0, 2.0).params["w"])
  with pytest.raises(errors.UserError, match="no checkpoint in .*is the run finished"):
    checkpoint.read_variables(tmp_path / "empty")
  assert not (tmp_path / "empty").exists()  # Reading creates nothing.
