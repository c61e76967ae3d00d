"""Reliability: user errors as one clear message, the workdir guard, preemption, determinism.

A user error (a bad config, input, weights file or workdir; a diverged training) stops the run
with a message naming the bad value and leaves earlier outputs as they were; `rrjax.main`
prints it as one line and exits with status 2. SIGTERM during training saves a checkpoint and
exits with status 143, and the same command resumes.
"""

import json
import os
import pickle
import re
import signal
import subprocess
import threading
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags

from rrjax import (configuration, errors, loop, main, models, pipeline, report, sharding,
                   train_state)
from rrjax.checkpoint import Checkpointer
from rrjax.models import weights_io
from tests import pipeline_util

# Where the tiny config's single experiment ("mask") keeps its outputs.
EXPERIMENT = "mask"
STUDENT_RUN = "student[mask(0.5)]"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return pipeline_util.make_folder(tmp_path_factory.mktemp("images"))


def _tiny(folder, **overrides):
  """The tiny config with `overrides` ({"train.lr": 1.0}; dots as "__") applied.

  A field the experiment entry overrides is set there, or the entry would mask the change.
  """
  c = pipeline_util.tiny_config(folder)
  for key, value in overrides.items():
    path = key.replace("__", ".")
    if path in c.experiments[0]:
      c.experiments = [dict(c.experiments[0], **{path: value})]
    else:
      *parents, leaf = path.split(".")
      node = c
      for p in parents:
        node = node[p]
      node[leaf] = value
  return c


class _Evil:
  """Unpickling this runs a shell command, as `pickle.load` or `torch.load` would."""

  def __init__(self, cmd):
    self.cmd = cmd

  def __reduce__(self):
    return os.system, (self.cmd,)


def _write_results(workdir, config) -> bytes:
  """An earlier run's results.json in `workdir`; returns its bytes."""
  path = os.path.join(workdir, "results.json")
  report.write_json(path, {"config": config.to_dict(), "rows": [], "timing": {"total": 1.0}})
  with open(path, "rb") as f:
    return f.read()


# ----------------------------------------------------------------------------- config


_FORMS = ("allowed forms: mask(p) | mask(lo,hi) | noise(sigma) | noise(lo,hi) | blur(n,sigma) | "
          "blur(n,lo,hi) | identity")


@pytest.mark.parametrize("overrides,message", [
    ({"train.corruption": "mask(1.3)"},
     "config.train.corruption: bad corruption spec part 'mask(1.3)': mask fraction 1.3 not in "
     f"[0, 1]; {_FORMS}"),
    ({"eval.corruptions": ("mask(0.5)", "blur(4,1)")},
     "config.eval.corruptions[1]: bad corruption spec part 'blur(4,1)': blur kernel size 4 not "
     f"an odd integer >= 1; {_FORMS}"),
    ({"train.corruption": "foo(1)"},
     "config.train.corruption: bad corruption spec part 'foo(1)': unknown operator 'foo'; "
     f"known: mask, noise, blur, identity; {_FORMS}"),
    ({"probe.label_fractions": (0.0, 1.0)}, "config.probe.label_fractions: 0.0 not in (0, 1]"),
    ({"probe.label_fractions": (1.5,)}, "config.probe.label_fractions: 1.5 not in (0, 1]"),
    ({"train.lr": -1.0}, "config.train.lr: must be a number > 0, got -1.0"),
    ({"eval.draws": 0}, "config.eval.draws: must be an integer >= 1, got 0"),
    ({"stages": ("train", "fly")},
     "config.stages: unknown stage 'fly'; allowed: train, probe, baseline, evaluate"),
    ({"only": "nope"}, "config.only: no experiment named 'nope'; names: mask"),
    ({"mesh.data": 2}, "config.mesh.data: 2 devices, but only 1 are visible"),
    ({"train.compute_dtype": "float16"},
     "config.train.compute_dtype: 'float16' not one of float32, bfloat16"),
])
def test_bad_config_field_is_named_with_the_allowed_values(folder, overrides, message):
  with pytest.raises(ValueError) as info:
    configuration.validate(_tiny(folder, **overrides))
  assert str(info.value) == message


def test_unknown_teacher_lists_the_known_encoders(folder):
  with pytest.raises(ValueError) as info:
    configuration.validate(_tiny(folder, teacher__name="vgg16"))
  assert str(info.value) == f"config.teacher.name: 'vgg16' not one of {', '.join(models.names())}"


def test_batch_not_divisible_by_the_devices_is_refused_before_compute(folder, monkeypatch):
  mesh = types.SimpleNamespace(devices=np.empty((8,), object))  # All check_batch_size reads.
  with pytest.raises(ValueError) as info:
    sharding.check_batch_size(12, mesh, "train.batch_size")
  assert str(info.value) == "train.batch_size=12 is not divisible by the 8 devices of the mesh"
  monkeypatch.setattr(jax, "device_count", lambda: 8)
  with pytest.raises(ValueError) as info:
    configuration.validate(_tiny(folder, train__batch_size=12))
  assert str(info.value) == ("config.train.batch_size: 12 is not divisible by the 8 devices of "
                             "the mesh (config.mesh.data)")
  configuration.validate(_tiny(folder, train__batch_size=16))


# ----------------------------------------------------------------------------- data


@pytest.mark.parametrize("case", ["missing", "empty", "no_images", "corrupt", "unknown_tfds"])
def test_bad_dataset_is_named(folder, tmp_path, case):
  root = str(tmp_path / "data")
  name = f"imagefolder:{root}"
  if case == "missing":
    message = f"{name}: no such directory"
  elif case == "empty":
    os.makedirs(root)
    message = f"{name}: no such directory {root}/train"
  elif case == "no_images":
    os.makedirs(os.path.join(root, "train", "cat"))
    with open(os.path.join(root, "train", "cat", "notes.txt"), "w") as f:
      f.write("not an image")
    message = f"{name}: class folder {root}/train/cat has no images (.png, .jpg, .jpeg)"
  elif case == "corrupt":
    pipeline_util.make_folder(root, classes=1, per_class=2, test_per_class=1)
    bad = os.path.join(root, "train", "class0", "bad.png")
    with open(bad, "wb") as f:
      f.write(b"\x89PNG garbage, not an image")
    message = f"{name}: cannot read image {bad}: cannot identify image file '{bad}'"
  else:
    name = "no_such_dataset_xyz"
    message = ("'no_such_dataset_xyz' is not a TFDS dataset (nor 'fashion_mnist_local' or "
               "'imagefolder:<dir>')")
  config = _tiny(folder, data__name=name)
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  earlier = _write_results(workdir, config)
  with pytest.raises(ValueError) as info:
    pipeline.train_and_evaluate(config, workdir)
  assert str(info.value) == message
  with open(os.path.join(workdir, "results.json"), "rb") as f:
    assert f.read() == earlier


# ----------------------------------------------------------------------------- weights


def test_weights_of_another_architecture_are_refused(folder, tmp_path):
  path = str(tmp_path / "tiny_embed8.npz")
  weights_io.save_npz(path, models.load("tiny_cnn", pretrained=False, embed_dim=8)[1])
  with pytest.raises(ValueError) as info:
    pipeline.train_and_evaluate(_tiny(folder, teacher__weights=path), str(tmp_path / "run"))
  assert str(info.value) == (f"{path}: variable 'params/embed/bias' has shape (8,), the module "
                             "expects (32,); wrong architecture?")


def test_malicious_weights_are_refused_without_running_them(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.pth"
  path.write_bytes(pickle.dumps(_Evil(f"touch {marker}")))
  with pytest.raises(ValueError) as info:
    models.load("efficientnet_lite0", weights=str(path), resolution=32)
  assert type(info.value).__name__ == "UnsafeWeightsError"
  assert str(info.value) == (f"refusing to load weights: the file asks to call "
                             f"'{os.system.__module__}.system'; only tensors are allowed")
  assert not marker.exists()


# ----------------------------------------------------------------------------- workdir


def test_workdir_under_a_file_is_refused(folder, tmp_path):
  (tmp_path / "afile").write_text("a file, not a directory")
  for workdir, reason in ((tmp_path / "afile" / "sub", "Not a directory"),
                          (tmp_path / "afile", "File exists")):
    with pytest.raises(errors.UserError) as info:
      pipeline.train_and_evaluate(_tiny(folder), str(workdir))
    assert str(info.value) == (f"workdir {workdir}: cannot write there ({reason}); pass a "
                               "writable directory as --workdir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a 0o500 directory regardless")
def test_read_only_workdir_is_refused(folder, tmp_path):
  workdir = tmp_path / "readonly"
  workdir.mkdir(mode=0o500)
  with pytest.raises(errors.UserError) as info:
    pipeline.train_and_evaluate(_tiny(folder), str(workdir))
  assert str(info.value) == (f"workdir {workdir}: cannot write there (Permission denied); pass "
                             "a writable directory as --workdir")


def _claimed(folder, workdir, **overrides) -> bytes:
  """`workdir` claimed by the tiny config with `overrides`, with an earlier results.json."""
  config = _tiny(folder, **overrides)
  configuration.claim_workdir(config, str(workdir))
  return _write_results(str(workdir), config)


def test_workdir_of_another_config_is_refused_and_left_alone(folder, tmp_path):
  earlier = _claimed(folder, tmp_path)
  stored = (tmp_path / "config.json").read_bytes()
  for overrides, field, before, now in (
      ({"train.lr": 0.01}, "train.lr", "0.0003", "0.01"),
      ({"eval.batch_size": 64}, "eval.batch_size", "32", "64"),
      ({"train.corruption": "mask(0.9)"}, "experiments[0].train.corruption", '"mask(0.5)"',
       '"mask(0.9)"')):
    with pytest.raises(errors.UserError) as info:
      pipeline.train_and_evaluate(_tiny(folder, **overrides), str(tmp_path))
    assert str(info.value) == (
        f"workdir {tmp_path} holds a run of a different config ({tmp_path}/config.json): "
        f"config.{field} was {before}, now {now}. Use a fresh --workdir, so that the two runs' "
        "checkpoints and results do not mix (fields a rerun may change: train.log_every, "
        "train.checkpoint_every, baseline.log_every, stages, only)")
  assert (tmp_path / "results.json").read_bytes() == earlier
  assert (tmp_path / "config.json").read_bytes() == stored


def test_rerun_may_change_bookkeeping_fields(folder, tmp_path):
  _claimed(folder, tmp_path)
  rerun = _tiny(folder, train__log_every=7, train__checkpoint_every=0, stages=("train",))
  configuration.claim_workdir(rerun, str(tmp_path))
  assert json.loads((tmp_path / "config.json").read_text())["train"]["log_every"] == 7


def test_run_without_config_json_is_identified_by_its_results(folder, tmp_path):
  _write_results(str(tmp_path), _tiny(folder))
  with pytest.raises(errors.UserError, match=re.escape(
      f"({tmp_path}/results.json): config.seed was 0, now 1.")):
    configuration.claim_workdir(_tiny(folder, seed=1), str(tmp_path))


def test_failed_start_does_not_block_a_fixed_config(folder, tmp_path):
  """A start that failed before computing anything left only config.json: nothing to mix."""
  configuration.claim_workdir(_tiny(folder, data__name="imagefolder:/typo"), str(tmp_path))
  configuration.claim_workdir(_tiny(folder), str(tmp_path))
  assert json.loads((tmp_path / "config.json").read_text())["data"]["name"].endswith(folder)


# ----------------------------------------------------------------------------- training


def test_divergence_stops_naming_the_step_and_keeps_a_good_checkpoint(folder, tmp_path):
  # At this rate the parameters overflow in the update of step 2, while the loss of step 2
  # (computed before that update) is still finite: the check before each save catches it.
  c = _tiny(folder, train__lr=1e10, train__steps=8, train__checkpoint_every=1,
            train__log_every=1, stages=("train",))
  with pytest.raises(loop.NonFiniteLossError) as info:
    pipeline.train_and_evaluate(c, str(tmp_path))
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
    with report.MetricsLog(tmp_path / "metrics.jsonl") as metrics:
      return loop.fit(state, advance, ({"image": np.zeros((1, 1))} for _ in range(6)),
                      name="toy", total_steps=6, batch_size=1,
                      mesh=sharding.make_mesh(1), checkpointer=checkpointer, metrics=metrics,
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


def test_sigterm_exits_143_with_a_checkpoint_and_the_same_command_resumes(folder, tmp_path):
  steps = 800  # Seconds of training (~3 ms a step): still running when the signal lands.
  config = pipeline_util.write_tiny_config_file(
      tmp_path / "long.py", folder, "c.stages = ('train',)", f"c.train.steps = {steps}",
      "c.train.log_every = 1", "c.train.checkpoint_every = 0")
  workdir = tmp_path / "run"
  metrics = workdir / EXPERIMENT / "metrics.jsonl"
  process = subprocess.Popen(pipeline_util.main_command(config, str(workdir)),
                             env=pipeline_util.main_env(), cwd=pipeline_util.REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 120
  while not (metrics.exists() and metrics.read_text().strip()):
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.monotonic() < deadline, "no metrics line in time"
    time.sleep(0.02)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 143, stderr[-3000:]
  assert "Traceback" not in stderr
  match = re.fullmatch(r"rrjax: preempted at step (\d+); checkpoint saved; rerun the same "
                       r"command to resume", stderr.strip().splitlines()[-1])
  assert match, stderr[-3000:]
  stopped = int(match[1])
  assert 1 <= stopped < steps
  assert (workdir / EXPERIMENT / "checkpoints" / str(stopped)).is_dir()

  rerun = pipeline_util.run_main(config, str(workdir))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f"resuming from checkpoint step {stopped}" in rerun.stderr
  logged = [row["step"] for row in report.read_metrics(metrics)]
  assert logged == list(range(1, steps + 1))  # Every step once: none lost, none repeated.
  assert (workdir / "results.json").exists()


# ----------------------------------------------------------------------------- main


def _parse_main_flags(config_path, workdir, *extra):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["rrjax.main", f"--config={config_path}", f"--workdir={workdir}", *extra])


def test_main_prints_one_line_and_exits_2_unless_a_traceback_is_asked_for(
    folder, tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("RRJAX_TRACEBACK", raising=False)
  config = pipeline_util.write_tiny_config_file(tmp_path / "bad.py", folder,
                                                "c.probe.label_fractions = (1.5,)")
  _parse_main_flags(config, tmp_path / "run")
  with pytest.raises(SystemExit) as info:
    main.main(["rrjax.main"])
  assert info.value.code == 2
  assert capsys.readouterr().err.splitlines()[-1] == (
      "rrjax: error: config.probe.label_fractions: 1.5 not in (0, 1]")
  for extra, env in ((["--traceback"], "0"), ([], "1")):
    monkeypatch.setenv("RRJAX_TRACEBACK", env)
    _parse_main_flags(config, tmp_path / "run", *extra)
    with pytest.raises(ValueError, match=re.escape("1.5 not in (0, 1]")):
      main.main(["rrjax.main"])


def test_main_keeps_the_traceback_of_a_programming_error(folder, tmp_path, monkeypatch):
  def bug(config, workdir):
    raise RuntimeError("a bug")

  monkeypatch.setattr(main.pipeline, "train_and_evaluate", bug)
  monkeypatch.delenv("RRJAX_TRACEBACK", raising=False)
  _parse_main_flags(pipeline_util.write_tiny_config_file(tmp_path / "c.py", folder),
                    tmp_path / "run")
  with pytest.raises(RuntimeError, match="a bug"):
    main.main(["rrjax.main"])


def _main_case(case, folder, tmp_path):
  """(config lines, workdir, expected message, {path: bytes it must keep, None: absent})."""
  tmp_path.mkdir()
  workdir = tmp_path / "run"
  if case == "bad_spec":
    return ["c.train.corruption = 'mask(1.3)'", "c.experiments = []"], workdir, (
        "config.train.corruption: bad corruption spec part 'mask(1.3)': mask fraction 1.3 not "
        f"in [0, 1]; {_FORMS}"), {}
  if case == "missing_folder":
    return [f"c.data.name = 'imagefolder:{tmp_path}/nowhere'"], workdir, (
        f"imagefolder:{tmp_path}/nowhere: no such directory"), {}
  if case == "missing_weights":
    return [f"c.teacher.weights = '{tmp_path}/nowhere.npz'"], workdir, (
        f"[Errno 2] No such file or directory: '{tmp_path}/nowhere.npz'"), {}
  if case == "malicious_weights":
    marker, weights = tmp_path / "pwned", tmp_path / "evil.pth"
    weights.write_bytes(pickle.dumps(_Evil(f"touch {marker}")))
    return ["c.teacher.name = 'efficientnet_lite0'", f"c.teacher.weights = '{weights}'"], (
        workdir), (f"refusing to load weights: the file asks to call "
                   f"'{os.system.__module__}.system'; only tensors are allowed"), {marker: None}
  if case == "unwritable_workdir":
    (tmp_path / "afile").write_text("a file")
    workdir = tmp_path / "afile" / "sub"
    return [], workdir, (f"workdir {workdir}: cannot write there (Not a directory); pass a "
                         "writable directory as --workdir"), {}
  assert case == "other_config"
  earlier = _claimed(folder, workdir)
  return ["c.seed = 3"], workdir, (
      f"workdir {workdir} holds a run of a different config ({workdir}/config.json): "
      "config.seed was 0, now 3. Use a fresh --workdir, so that the two runs' checkpoints and "
      "results do not mix (fields a rerun may change: train.log_every, train.checkpoint_every, "
      "baseline.log_every, stages, only)"), {workdir / "results.json": earlier}


def test_main_user_errors_exit_2_with_one_line_and_no_traceback(folder, tmp_path):
  """User errors through `python -m rrjax.main`, run side by side to share the start-up."""
  cases = ["bad_spec", "missing_folder", "missing_weights", "malicious_weights",
           "unwritable_workdir", "other_config"]
  runs = {}
  for case in cases:
    lines, workdir, message, kept = _main_case(case, folder, tmp_path / case)
    config = pipeline_util.write_tiny_config_file(tmp_path / f"{case}.py", folder, *lines)
    process = subprocess.Popen(pipeline_util.main_command(config, str(workdir)),
                               env=pipeline_util.main_env(), cwd=pipeline_util.REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs[case] = process, message, kept
  for case, (process, message, kept) in runs.items():
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, (case, stderr[-3000:])
    assert "Traceback" not in stderr, case
    assert stderr.strip().splitlines()[-1] == f"rrjax: error: {message}", case
    for path, data in kept.items():
      assert (path.read_bytes() if path.exists() else None) == data, (case, path)


# ----------------------------------------------------------------------------- determinism


def test_two_fresh_runs_write_the_same_results(folder, tmp_path):
  texts = []
  for name in ("a", "b"):
    pipeline.train_and_evaluate(pipeline_util.tiny_config(folder), str(tmp_path / name))
    texts.append((tmp_path / name / "results.json").read_text())
  # `timing` holds wall seconds, which no two runs share. It is the last key (keys are sorted),
  # so everything before it must be byte-identical.
  assert list(json.loads(texts[0])) == ["config", "rows", "timing"]
  heads = [t[:t.index('\n  "timing": ')] for t in texts]
  assert heads[0] == heads[1]
  assert json.loads(texts[0])["timing"].keys() == json.loads(texts[1])["timing"].keys()
