"""rrjax.training.state: the train state, the optimisers and schedules, one update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rrjax import models
from rrjax.training import state


def test_schedules():
  constant = state.make_schedule(3e-4, "constant", 100)
  assert float(constant(0)) == float(constant(99)) == pytest.approx(3e-4)
  cosine = state.make_schedule(1.0, "cosine", 100, warmup_steps=10)
  assert float(cosine(0)) == 0.0 and float(cosine(10)) == pytest.approx(1.0)
  assert float(cosine(100)) == pytest.approx(0.0, abs=1e-6)
  with pytest.raises(ValueError, match="schedule 'step'"):
    state.make_schedule(1.0, "step", 10)


def test_optimizers():
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.full(3, 2.0)}
  for name, decay in (("adam", 0.0), ("adam", 0.1), ("sgd", 0.1)):
    tx = state.make_optimizer(name, state.make_schedule(0.1, "constant", 1), decay)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert np.all(np.asarray(updates["w"]) < 0), name  # Downhill.
  with pytest.raises(ValueError, match="optimizer 'rmsprop'"):
    state.make_optimizer("rmsprop", 0.1)


def test_update_counts_the_step_and_keeps_new_batch_stats():
  module, variables = models.load("tiny_cnn", pretrained=False, seed=0)
  tx = optax.sgd(0.5)
  st = state.TrainState.create(variables, tx)
  assert int(st.step) == 0 and st.variables().keys() == variables.keys()
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 16, 16, 3)), jnp.float32)

  def loss(params):
    out, new_stats = state.apply_train(module, params, st.batch_stats, images)
    return jnp.mean(out**2), new_stats

  (_, new_stats), grads = jax.value_and_grad(loss, has_aux=True)(st.params)
  after = state.update(st, tx, grads, new_stats)
  assert int(after.step) == 1
  jax.tree.map(lambda p, g, q: np.testing.assert_allclose(q, p - 0.5 * g, rtol=1e-6),
               st.params, grads, after.params)
  assert after.batch_stats is new_stats
