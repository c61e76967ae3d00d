"""rrjax.training.loop: resume after a crash, divergence, NaN losses, SIGTERM."""

import json
import os
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rrjax import data, models, run
from rrjax.io import metrics
from rrjax.parallel import sharding
from rrjax.training import loop, state as train_state, student as student_lib
from rrjax.training.checkpoint import Checkpointer
from tests import helpers

EXPERIMENT = "mask"
STUDENT_RUN = "student[mask(0.5)]"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return helpers.make_folder(tmp_path_factory.mktemp("images"))


def test_resume_after_a_crash_reaches_the_same_parameters(folder, tmp_path, monkeypatch):
  c = helpers.tiny_config(folder)
  c.train.steps, c.train.checkpoint_every = 6, 3
  reference = helpers.train_student(c, str(tmp_path / "a"))

  real_batches = data.batches

  def crashing(*args, **kwargs):
    for i, batch in enumerate(real_batches(*args, **kwargs)):
      if i == 4:  # After the step-3 checkpoint, before the next one.
        raise RuntimeError("simulated crash")
      yield batch

  monkeypatch.setattr(student_lib.data, "batches", crashing)
  with pytest.raises(RuntimeError, match="simulated crash"):
    helpers.train_student(c, str(tmp_path / "b"))
  monkeypatch.setattr(student_lib.data, "batches", real_batches)
  resumed = helpers.train_student(c, str(tmp_path / "b"))
  jax.tree.map(np.testing.assert_array_equal, resumed, reference)
  steps = [json.loads(l)["step"] for l in open(tmp_path / "b" / "metrics.jsonl")]
  assert steps == [1, 2, 3, 4, 5, 6]  # Every step once: none lost, none duplicated.
  # Training moved the student away from its initialisation.
  teacher_vars = models.load_from_config(c.teacher)[1]
  assert not np.allclose(reference["params"]["embed"]["kernel"],
                         teacher_vars["params"]["embed"]["kernel"])


def test_divergence_stops_naming_the_step_and_keeps_a_good_checkpoint(folder, tmp_path):
  # At this rate the parameters overflow in the update of step 2, while the loss of step 2
  # (computed before that update) is still finite: the check before each save catches it.
  c = helpers.tiny_config(folder, train__lr=1e10, train__steps=8, train__checkpoint_every=1,
            train__log_every=1, stages=("train",))
  with pytest.raises(loop.NonFiniteLossError) as info:
    run.train_and_evaluate(c, str(tmp_path))
  assert str(info.value) == (f"{STUDENT_RUN}: the parameters are not finite at step 2; training "
                             "stopped, the last good checkpoint (step 1) is kept. Lower the "
                             "learning rate?")
  template = train_state.TrainState.create(
      models.load_from_config(c.teacher)[1],
      train_state.make_optimizer("adam", train_state.make_schedule(1.0, "constant", 1)))
  checkpointer = Checkpointer(str(tmp_path / EXPERIMENT / "checkpoints"))
  restored = checkpointer.restore_latest(template)
  checkpointer.close()
  assert int(restored.step) == 1
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored.params))


def _toy_fit(tmp_path, on_step, loss_at=lambda step: 0.5, checkpoint_every=0):
  """`loop.fit` of a 6-step toy state; its step calls `on_step(step)`, returns `loss_at(step)`."""
  state = train_state.TrainState.create({"params": {"w": jnp.ones(2)}}, optax.sgd(0.1))

  def advance(st, batch):
    del batch
    step = int(st.step) + 1
    on_step(step)
    return st.replace(step=st.step + 1), {"loss": jnp.float32(loss_at(step))}

  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  try:
    with metrics.MetricsLog(tmp_path / "metrics.jsonl") as log:
      return loop.fit(state, advance, ({"image": np.zeros((1, 1))} for _ in range(6)),
                      name="toy", total_steps=6, batch_size=1,
                      mesh=sharding.make_mesh(1), checkpointer=checkpointer, metrics=log,
                      lr_at=lambda s: 0.1, log_every=1, checkpoint_every=checkpoint_every,
                      fields=("image",))
  finally:
    checkpointer.close()


@pytest.mark.parametrize("checkpoint_every,kept", [
    (2, "the last good checkpoint (step 2) is kept"),
    (0, "no checkpoint was saved before it")])
def test_nan_loss_names_the_step_and_the_last_checkpoint(tmp_path, checkpoint_every, kept):
  with pytest.raises(loop.NonFiniteLossError) as info:
    _toy_fit(tmp_path, lambda step: None, lambda step: np.nan if step == 3 else 0.5,
             checkpoint_every)
  assert str(info.value) == (f"toy: loss is nan at step 3; training stopped, {kept}. Lower the "
                             "learning rate?")


def test_sigterm_in_fit_checkpoints_the_step_and_restores_the_handler(tmp_path):
  previous = signal.getsignal(signal.SIGTERM)
  send = lambda step: step == 3 and os.kill(os.getpid(), signal.SIGTERM)
  with pytest.raises(loop.Preempted) as info:
    _toy_fit(tmp_path, send)
  assert info.value.step == 3
  assert str(info.value) == ("preempted at step 3; checkpoint saved; rerun the same command "
                             "to resume")
  assert [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()] == ["3"]
  assert signal.getsignal(signal.SIGTERM) is previous


def test_fit_off_the_main_thread_leaves_signals_alone(tmp_path):
  outcome = []
  worker = threading.Thread(target=lambda: outcome.append(_toy_fit(tmp_path, lambda s: None)))
  worker.start()
  worker.join()
  (state,) = outcome  # `signal.signal` off the main thread would have raised instead.
  assert int(state.step) == 6


def test_train_closes_the_checkpointer_when_training_stops(tmp_path, monkeypatch):
  closed, close = [], Checkpointer.close
  monkeypatch.setattr(Checkpointer, "close", lambda self: closed.append(1) or close(self))
  state = train_state.TrainState.create({"params": {"w": jnp.ones(2)}}, optax.sgd(0.1))

  def advance(st, batch):
    raise RuntimeError("a step that fails")

  with pytest.raises(RuntimeError, match="a step that fails"):
    loop.train(state, advance, lambda start: iter([{"image": np.zeros((1, 1))}]),
               workdir=str(tmp_path), name="toy", total_steps=2, batch_size=1,
               mesh=sharding.make_mesh(1), lr_at=lambda s: 0.1, log_every=1,
               checkpoint_every=0, fields=("image",))
  assert closed == [1]


def _toy_train(tmp_path, scores, total=6, every=2, crash_at=None, checkpoint_every=0):
  """`loop.train` of a toy state whose parameter w is the step; validation scores `scores[w]`."""
  state = train_state.TrainState.create({"params": {"w": jnp.zeros(())}}, optax.sgd(0.1))
  seen = []

  def advance(st, batch):
    del batch
    if crash_at is not None and int(st.step) + 1 == crash_at:
      raise RuntimeError("simulated crash")
    return st.replace(step=st.step + 1, params={"w": st.params["w"] + 1}), {
        "loss": jnp.float32(0.5)}

  def score(variables):
    w = int(variables["params"]["w"])
    seen.append(w)
    return scores[w]

  validation = loop.Validation(every=every, score=score)
  variables = loop.train(state, advance,
                         lambda start: ({"image": np.zeros((1, 1))} for _ in range(total - start)),
                         workdir=str(tmp_path), name="toy", total_steps=total, batch_size=1,
                         mesh=sharding.make_mesh(1), lr_at=lambda s: 0.1, log_every=1,
                         checkpoint_every=checkpoint_every, fields=("image",),
                         validation=validation)
  return variables, validation, seen


def test_validation_returns_the_best_step_not_the_last(tmp_path):
  # Scored at steps 2, 4, 6 (every 2 and the last): step 4 is best, and the first of a tie wins.
  scores = {2: 50.0, 4: 70.0, 6: 70.0}
  variables, validation, seen = _toy_train(tmp_path, scores)
  assert seen == [2, 4, 6]
  assert int(variables["params"]["w"]) == 4
  assert (validation.best_step, validation.best_score) == (4, 70.0)
  logged = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [(r["step"], r["val_top1"]) for r in logged if "val_top1" in r] == [
      (2, 50.0), (4, 70.0), (6, 70.0)]


def test_validation_resumes_with_the_best_state_of_the_interrupted_run(tmp_path):
  scores = {2: 60.0, 4: 90.0, 6: 80.0, 8: 85.0}
  with pytest.raises(RuntimeError, match="simulated crash"):
    # After the step-4 validation and checkpoint.
    _toy_train(tmp_path, scores, total=8, crash_at=6, checkpoint_every=4)
  variables, validation, seen = _toy_train(tmp_path, scores, total=8, checkpoint_every=4)
  # The best (step 4) is read back and rescored, then steps 6 and 8 are scored; step 4 stays.
  assert seen == [4, 6, 8]
  assert int(variables["params"]["w"]) == 4 and validation.best_step == 4


def test_validation_writes_the_best_only_with_a_checkpoint(tmp_path):
  # Step 2 is best, but no checkpoint follows it before the crash: nothing is written, and the
  # rerun redoes (and rescores) every step, choosing the same one.
  scores = {2: 90.0, 4: 60.0, 6: 80.0}
  with pytest.raises(RuntimeError, match="simulated crash"):
    _toy_train(tmp_path, scores, crash_at=5)
  assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())
  assert not (tmp_path / "best").exists() or not list((tmp_path / "best").iterdir())
  variables, validation, seen = _toy_train(tmp_path, scores)
  assert seen == [2, 4, 6]
  assert int(variables["params"]["w"]) == 2 and validation.best_step == 2
  # Three validations, one save of each directory: the last step and the best.
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["6"]
  assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["2"]


def test_a_crash_between_the_best_and_its_checkpoint_keeps_the_same_choice(tmp_path, monkeypatch):
  # The best (step 4) is written, then the step-4 checkpoint fails: the rerun resumes from the
  # step-2 checkpoint, redoes step 4 (a tie with the best it read: the first, the same state,
  # stays) and ends on the same choice.
  scores = {2: 50.0, 4: 90.0, 6: 80.0}
  save = loop._save

  def failing_save(checkpointer, state, name, step):
    if step == 4 and str(checkpointer._manager.directory).endswith("checkpoints"):
      raise RuntimeError("simulated crash")
    save(checkpointer, state, name, step)

  monkeypatch.setattr(loop, "_save", failing_save)
  with pytest.raises(RuntimeError, match="simulated crash"):
    _toy_train(tmp_path, scores, checkpoint_every=2)
  monkeypatch.setattr(loop, "_save", save)
  variables, validation, seen = _toy_train(tmp_path, scores, checkpoint_every=2)
  assert seen == [4, 4, 6]  # The best read back, then steps 4 and 6.
  assert int(variables["params"]["w"]) == 4 and validation.best_step == 4
