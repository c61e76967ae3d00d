"""Multi-process runs and kill -9 resilience (marker `scale`: `make test-scale`, minutes).

Unmarked, in the default run (seconds, in-process): a process other than 0 writes no file but
checks what process 0 checks, and the multi-process flags are validated. Marked `scale`
(subprocesses, gloo collectives on CPU):

* Two local CPU processes (gloo collectives, `jax.distributed`) train the student on the seeded
  global batch, each reading its own half: both hold the same loss and parameters, equal to one
  process's to float rounding (tolerance below).
* `python -m rrjax.main` as two processes completes, process 0 alone writes the outputs, and
  results.json, metrics and the final parameters are bit-identical to one process over the
  same number of devices. SIGTERM to one of the processes stops both after the same step, with
  its checkpoint; the same commands resume.
* `python -m rrjax.main` killed with SIGKILL right after a checkpoint, or while one is half
  written, then rerun with the same command: final parameters, metrics and results.json are
  bit-identical to an uninterrupted run, and the half-written checkpoint is never restored.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rrjax import errors
from rrjax.config import workdir as workdir_lib
from rrjax.io import files, metrics
from rrjax.outputs import report, rows
from rrjax.parallel import multiprocess
from tests import helpers

# A run that computes to its end (seconds to a minute here; minutes on a loaded machine).
TIMEOUT = 600
# Phases in which the processes of a run must end (a refusal at start-up, a failure, the stop
# after a SIGTERM): far below JAX's own limits (100 s heartbeat, 300 s start-up and shutdown
# barriers), which a process left waiting at a collective would otherwise run into. Both
# processes must end within ENDS_APART seconds of each other.
ENDS_WITHIN, ENDS_APART = 60, 15
STEPS, CHECKPOINT_EVERY = 40, 10
EXPERIMENT = "mask"  # The tiny config's one experiment.
# One process with two CPU devices: the mesh of the two-process runs (one device each). The
# eval corruption draws depend on the device count, so references use the same count.
TWO_DEVICES = "--xla_force_host_platform_device_count=2"
# Two processes against one device: the same step up to float rounding, since the batch's
# gradients and BatchNorm statistics are summed in another order.
STEP_TOLERANCE = 1e-5


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: str = "") -> dict[str, str]:
  return helpers.main_env(XLA_FLAGS=devices)


def _start(command: list[str], env: dict[str, str], stderr) -> subprocess.Popen:
  # stderr goes to a file: a pipe nobody reads while we wait would fill up and block the run.
  return subprocess.Popen(command, env=env, cwd=helpers.REPO, stdout=subprocess.DEVNULL,
                          stderr=stderr, text=True)


def _start_all(commands: list[list[str]], env: dict[str, str]) -> list[tuple]:
  """Starts the commands at once (the processes of one run): `[(command, Popen, log)]`."""
  started = []
  for command in commands:
    log = tempfile.TemporaryFile("w+")
    started.append((command, _start(command, env, log), log))
  return started


def _wait_all(started: list[tuple]) -> list[subprocess.CompletedProcess]:
  """Waits for every process of `_start_all` (killing all of them on a timeout)."""
  out = []
  try:
    for command, process, log in started:
      process.wait(timeout=TIMEOUT)
      log.seek(0)
      out.append(subprocess.CompletedProcess(command, process.returncode, "", log.read()))
  finally:
    for _, process, log in started:
      if process.poll() is None:
        process.kill()
        process.wait()
      log.close()
  return out


def _wait_timed(started: list[tuple], timeout: float
                ) -> list[tuple[subprocess.CompletedProcess, float]]:
  """As `_wait_all`, with the `time.monotonic()` at which each process was seen to end; a
  process still running after `timeout` seconds is killed and the test fails."""
  ended = {}
  deadline = time.monotonic() + timeout
  try:
    while len(ended) < len(started) and time.monotonic() < deadline:
      for i, (_, process, _) in enumerate(started):
        if i not in ended and process.poll() is not None:
          ended[i] = time.monotonic()
      time.sleep(0.05)
    runs = _wait_all(started)  # Kills what is left (a hang) and reads the logs.
  finally:
    for _, process, _ in started:
      if process.poll() is None:
        process.kill()
  assert len(ended) == len(started), "a process hung"
  return [(run, ended[i]) for i, run in enumerate(runs)]


def _end_together(started: list[tuple], timeout: float = ENDS_WITHIN
                  ) -> list[subprocess.CompletedProcess]:
  """Waits for a phase in which every process must end: within `timeout` seconds, and within
  ENDS_APART seconds of each other."""
  ended = _wait_timed(started, timeout)
  times = [t for _, t in ended]
  assert max(times) - min(times) < ENDS_APART, times
  return [run for run, _ in ended]


def _one_error_line(commands: list[list[str]], env: dict[str, str]) -> str:
  """Starts the processes of one run that must all refuse it: each ends (`_end_together`) with
  exit status 2 and the same last line, returned."""
  runs = _end_together(_start_all(commands, env))
  messages = {run.stderr.strip().splitlines()[-1] for run in runs}
  assert [run.returncode for run in runs] == [2, 2], messages
  (message,) = messages
  return message


def _run_all(commands: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess]:
  return _wait_all(_start_all(commands, env))


def _distributed_flags(port: int, n: int, i: int) -> list[str]:
  return [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={n}",
          f"--process_id={i}"]


def _head(workdir) -> str:
  """results.json up to `timing` (wall seconds, its last key), which no two runs share."""
  text = (workdir / "results.json").read_text()
  assert list(json.loads(text)) == ["config", "rows", "timing"]
  return text[:text.index('\n  "timing": ')]


def _logged(workdir) -> list[tuple]:
  """Every metrics line of the run but its speed: (experiment, run, step, loss, lr)."""
  return [(m.get("experiment"), m.get("run"), m["step"], m.get("loss"), m.get("lr"))
          for m in metrics.read_metrics(workdir / "metrics.jsonl")]


def _student(workdir, step: int = STEPS) -> list[np.ndarray]:
  """The leaves of the student's checkpoint at `step` (parameters, statistics, optimizer)."""
  return list(_student_by_path(workdir, step).values())


def _student_by_path(workdir, step: int = STEPS) -> dict[str, np.ndarray]:
  """`_student`'s leaves by their path in the state, e.g. "['params']['embed']['bias']"."""
  path = workdir / EXPERIMENT / "checkpoints" / str(step) / "default"
  # Onto this process's one device, whatever mesh the run saved from.
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as checkpointer:
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          checkpointer.metadata(path).item_metadata)
    restored = checkpointer.restore(path, target)
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(restored)[0]}


def _assert_same_run(workdir, reference) -> None:
  assert _head(workdir) == _head(reference)
  assert _logged(workdir) == _logged(reference)
  for a, b in zip(_student(workdir), _student(reference), strict=True):
    np.testing.assert_array_equal(a, b)
  # No temp file of an atomic write, no temporary checkpoint directory.
  leftovers = [os.path.join(d, f) for d, _, files in os.walk(workdir) for f in files
               if f.endswith(".tmp")]
  leftovers += [d for d, _, _ in os.walk(workdir) if "orbax-checkpoint-tmp" in d]
  assert not leftovers


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return helpers.make_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def config(folder, tmp_path_factory):
  return helpers.write_tiny_config_file(
      tmp_path_factory.mktemp("config") / "scale.py", folder, f"c.train.steps = {STEPS}",
      f"c.train.checkpoint_every = {CHECKPOINT_EVERY}")


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
  """An uninterrupted single-process run over two CPU devices."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  (run,) = _run_all([helpers.main_command(config, str(workdir))], _env(TWO_DEVICES))
  assert run.returncode == 0, run.stderr[-3000:]
  return workdir


# ----------------------------------------------------------------------------- in-process


def test_processes_other_than_0_write_nothing(tmp_path, monkeypatch):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')
  before = sorted(os.listdir(tmp_path))
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  assert not multiprocess.is_leader()
  files.atomic_write(tmp_path / "a.txt", "text")
  files.write_json(tmp_path / "b.json", {"x": 1})
  with metrics.MetricsLog(tmp_path / "metrics.jsonl", resume_step=0) as log:  # No truncation.
    log.write(step=1, loss=2.0)
  row = rows.make_row(experiment="e", loss="st", method="ours", dataset="d",
                      train_corruption="mask(0.5)", eval_corruption="mask(0.5)",
                      label_fraction=1.0, draws=[50.0])
  assert report.write_results(tmp_path, {"seed": 0}, [row], {"total": 1.0}) == []
  with pytest.raises(ValueError, match="two results rows"):  # Still checked, as on process 0.
    report.write_results(tmp_path, {"seed": 0}, [row, row], {"total": 1.0})
  assert sorted(os.listdir(tmp_path)) == before
  assert [m["step"] for m in metrics.read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]


def test_processes_other_than_0_check_the_workdir_but_leave_it_alone(tmp_path, monkeypatch):
  config = helpers.tiny_config("/images")
  workdir_lib.claim_workdir(config, str(tmp_path))  # Process 0 of an earlier run.
  files.write_json(tmp_path / "results.json", {"config": config.to_dict(), "rows": []})
  stored = (tmp_path / "config.json").read_bytes()
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  workdir_lib.claim_workdir(config, str(tmp_path))  # The same config: resumes.
  config.seed = 1
  with pytest.raises(errors.UserError, match="config.seed was 0, now 1"):
    workdir_lib.claim_workdir(config, str(tmp_path))
  assert (tmp_path / "config.json").read_bytes() == stored
  workdir_lib.claim_workdir(config, str(tmp_path / "fresh"))
  assert os.listdir(tmp_path / "fresh") == []  # Checked writable; config.json is process 0's.


def test_process_settings_come_from_flags_then_environment():
  environ = {"RRJAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "RRJAX_NUM_PROCESSES": "4",
             "RRJAX_PROCESS_ID": "3"}
  assert multiprocess.resolve(environ=environ) == ("10.0.0.1:1234", 4, 3)
  assert multiprocess.resolve("h:1", 2, 0, environ=environ) == ("h:1", 2, 0)
  assert multiprocess.resolve(environ={}) == (None, None, None)
  with pytest.raises(errors.UserError, match="RRJAX_NUM_PROCESSES='four' is not an integer"):
    multiprocess.resolve(environ={"RRJAX_NUM_PROCESSES": "four"})


@pytest.mark.parametrize("settings, message", [
    (("h:1", 2, None), "--coordinator_address=h:1 needs --num_processes and --process_id"),
    ((None, 2, 1), "without --coordinator_address"),
    (("h:1", 0, 0), "--num_processes=0: must be an integer >= 1"),
    (("h:1", 2, 2), "--process_id=2: must be an integer in [0, 2)"),
    (("h:1", 2, -1), "--process_id=-1: must be an integer in [0, 2)"),
    (("h", 2, 0), "--coordinator_address='h': must be HOST:PORT"),
    (("h:port", 2, 0), "must be HOST:PORT"),
])
def test_bad_process_settings_are_named(settings, message):
  with pytest.raises(errors.UserError, match=re.escape(message)):
    multiprocess.maybe_initialize(*settings)


def test_one_process_joins_nothing():
  for settings in ((None, None, None), (None, 1, 0), ("h:1", 1, 0)):
    assert multiprocess.maybe_initialize(*settings) is False
  assert not jax.distributed.is_initialized()
  assert multiprocess.first_error(None) is None and multiprocess.first_error("x") == "x"


# ----------------------------------------------------------------------------- two processes


@pytest.mark.scale
def test_two_processes_train_like_one(folder, tmp_path):
  """`rrjax.training.student`'s step on 2 processes x 1 device vs 1 process x 1 device, same
  global batches."""
  base = [sys.executable, "-m", "tests.parallel.scale_step", f"--folder={folder}",
          f"--out={tmp_path}"]
  port = _free_port()
  runs = _run_all([base] + [base + ["--num_processes=2", f"--process_id={i}", f"--port={port}"]
                            for i in range(2)], _env())
  for run in runs:
    assert run.returncode == 0, run.stderr[-3000:]
  one, p0, p1 = (np.load(tmp_path / name) for name in
                 ("process0_of1.npz", "process0_of2.npz", "process1_of2.npz"))
  assert int(one["devices"]) == 1 and int(p0["devices"]) == int(p1["devices"]) == 2
  # The data pipeline: each process reads its own half of the seeded global batch, and the
  # halves are the single-process batch.
  assert p0["local"].shape[1] == p1["local"].shape[1] == one["local"].shape[1] // 2
  np.testing.assert_array_equal(np.concatenate([p0["local"], p1["local"]], axis=1),
                                one["local"])
  np.testing.assert_array_equal(p0["global_batches"], one["global_batches"])
  np.testing.assert_array_equal(p1["global_batches"], one["global_batches"])
  # Both processes hold the same replicated state, bit for bit.
  np.testing.assert_array_equal(p0["losses"], p1["losses"])
  finals = sorted(k for k in one.files if k.startswith("final_"))
  assert finals
  for k in finals:
    np.testing.assert_array_equal(p0[k], p1[k])
  # ... and the single-process numbers up to the order of float sums.
  np.testing.assert_allclose(p0["losses"], one["losses"], rtol=0, atol=STEP_TOLERANCE)
  for k in finals:
    np.testing.assert_allclose(p0[k], one[k], rtol=0, atol=STEP_TOLERANCE, err_msg=k)
  # The collective Orbax checkpoint restores to the same state in every process.
  for result in (p0, p1, one):
    assert int(result["restored_step"]) == 3
    for k in finals:
      np.testing.assert_array_equal(result[k], result[k.replace("final_", "restored_")])


@pytest.mark.scale
def test_main_on_two_processes_writes_once_and_matches_one_process(config, reference,
                                                                   tmp_path):
  workdir = tmp_path / "run"
  port = _free_port()
  runs = _run_all([helpers.main_command(config, str(workdir),
                                              *_distributed_flags(port, 2, i))
                   for i in range(2)], _env())
  for i, run in enumerate(runs):
    assert run.returncode == 0, (i, run.stderr[-3000:])
    assert f"process {i} of 2: 1 local of 2 devices" in run.stderr
  # Every output is there, and written by one process: each metrics line once, no temp files.
  for name in ("config.json", "results.json", "report.md", "metrics.jsonl", "loss.png"):
    assert (workdir / name).stat().st_size > 0, name
  steps = [s for _, run, s, _, _ in _logged(workdir) if run.startswith("student")]
  assert steps == list(range(1, STEPS + 1))
  # Two processes of one device each compute what one process over two devices does: a sum
  # over two devices is the same number in either order.
  _assert_same_run(workdir, reference)

  # Both processes refuse a different config in the workdir with the same error.
  stored = (workdir / "config.json").read_bytes()
  port = _free_port()
  error = _one_error_line(
      [helpers.main_command(config, str(workdir), "--config.seed=1",
                            *_distributed_flags(port, 2, i)) for i in range(2)], _env())
  assert error.startswith(f"rrjax: error: workdir {workdir} holds a run of a different config")
  assert (workdir / "config.json").read_bytes() == stored


def _preempted_at_one_step(runs: list[subprocess.CompletedProcess]) -> int:
  """The training step at which every process stopped for SIGTERM (exit 143, a checkpoint
  saved); the same in all, or the test fails."""
  stopped = set()
  for i, run in enumerate(runs):
    assert run.returncode == 143, (i, run.stderr[-3000:])
    match = re.fullmatch(r"rrjax: preempted at step (\d+); checkpoint saved; rerun the same "
                         r"command to resume", run.stderr.strip().splitlines()[-1])
    assert match, (i, run.stderr[-3000:])
    stopped.add(int(match[1]))
  (step,) = stopped
  return step


def _resume_two_processes(config: str, workdir, step: int) -> None:
  """Reruns the same two-process commands: both finish, resumed from checkpoint `step`."""
  port = _free_port()
  for i, run in enumerate(_run_all(
      [helpers.main_command(config, str(workdir), *_distributed_flags(port, 2, i))
       for i in range(2)], _env())):
    assert run.returncode == 0, (i, run.stderr[-3000:])
    assert f"resuming from checkpoint step {step}" in run.stderr


@pytest.mark.scale
def test_two_processes_of_two_devices_each_match_one_process_of_four(folder, tmp_path):
  """Several devices per process, as on every TPU or GPU host: each process's slice spans its
  own devices (the data axis process by process, checked), and the run is one process's over
  the same four devices: the same rows, losses and state up to the order of float sums (four
  partial sums, added within and across processes in another order: losses and parameters
  about 1e-7 apart after 4 steps). Not the convolutions' biases, which feed a BatchNorm: their
  true gradient is zero, so Adam's normalised update turns the rounding of that zero into
  steps of the learning rate's size either way (measured 5e-4 apart), nor the BatchNorm
  running means that add them up (1e-4)."""
  steps = 4
  config = helpers.write_tiny_config_file(tmp_path / "four.py", folder,
                                          f"c.train.steps = {steps}",
                                          f"c.train.checkpoint_every = {steps}")
  four = "--xla_force_host_platform_device_count=4"
  reference = tmp_path / "reference"
  (run,) = _run_all([helpers.main_command(config, str(reference))], _env(four))
  assert run.returncode == 0, run.stderr[-3000:]
  workdir = tmp_path / "run"
  port = _free_port()
  runs = _run_all([helpers.main_command(config, str(workdir), *_distributed_flags(port, 2, i))
                   for i in range(2)], _env("--xla_force_host_platform_device_count=2"))
  for i, run in enumerate(runs):
    assert run.returncode == 0, (i, run.stderr[-3000:])
    assert f"process {i} of 2: 2 local of 4 devices" in run.stderr
  assert _head(workdir) == _head(reference)  # Accuracies, rounded as reported.
  logged, expected = _logged(workdir), _logged(reference)
  assert [line[:3] + line[4:] for line in logged] == [line[:3] + line[4:] for line in expected]
  losses = [[line[3] for line in lines if line[3] is not None] for lines in (logged, expected)]
  assert [line[3] is None for line in logged] == [line[3] is None for line in expected]
  np.testing.assert_allclose(*losses, rtol=0, atol=STEP_TOLERANCE)
  got, want = _student_by_path(workdir, steps), _student_by_path(reference, steps)
  assert list(got) == list(want)
  before_batchnorm = {f"['params']['Conv_{i}']['bias']" for i in range(2)}
  before_batchnorm |= {f"['batch_stats']['BatchNorm_{i}']['mean']" for i in range(2)}
  assert before_batchnorm <= set(got)
  for key in sorted(set(got) - before_batchnorm):
    np.testing.assert_allclose(got[key], want[key], rtol=0, atol=STEP_TOLERANCE, err_msg=key)


@pytest.mark.scale
def test_sigterm_to_one_process_stops_every_process_at_one_step(folder, tmp_path):
  steps = 300  # About 30 s on two processes: still training when the signal lands.
  config = helpers.write_tiny_config_file(
      tmp_path / "long.py", folder, "c.stages = ('train',)", f"c.train.steps = {steps}",
      "c.train.log_every = 1", "c.train.checkpoint_every = 0")
  workdir = tmp_path / "run"
  log = workdir / EXPERIMENT / "metrics.jsonl"
  port = _free_port()
  commands = [helpers.main_command(config, str(workdir), *_distributed_flags(port, 2, i))
              for i in range(2)]
  started = _start_all(commands, _env())
  deadline = time.monotonic() + TIMEOUT
  while not (log.exists() and log.read_text().strip()):
    assert all(p.poll() is None for _, p, _ in started), "a process ended before training"
    assert time.monotonic() < deadline, "no metrics line in time"
    time.sleep(0.05)
  started[1][1].send_signal(signal.SIGTERM)  # The notice reaches process 1 only.
  step = _preempted_at_one_step(_end_together(started))  # Both after the same step ...
  assert 1 <= step < steps
  assert (workdir / EXPERIMENT / "checkpoints" / str(step)).is_dir()  # ... and saved it.
  _resume_two_processes(config, workdir, step)
  assert [m["step"] for m in metrics.read_metrics(log)] == list(range(1, steps + 1))


@pytest.mark.scale
def test_a_mesh_smaller_than_the_processes_devices_is_one_error_in_every_process(config,
                                                                                 tmp_path):
  # Issue #17: with mesh.data=1 process 0's batch held only its own half and process 1 died
  # with a StopIteration traceback. Now both refuse the config, with the same line.
  workdir = tmp_path / "run"
  port = _free_port()
  assert _one_error_line(
      [helpers.main_command(config, str(workdir), "--config.mesh.data=1",
                            *_distributed_flags(port, 2, i)) for i in range(2)], _env()) == (
      "rrjax: error: config.mesh.data: 1 devices, but a run of 2 processes needs all 2 in the "
      "mesh (-1 says all): a smaller mesh may hold only some processes' devices, and their "
      "batch slices would be dropped")
  assert not workdir.exists()  # Refused before any work.


@pytest.mark.scale
def test_a_teacher_cache_on_one_host_only_is_computed_by_every_process(config, tmp_path):
  # Issue #17: with the default cache directory (each host's own disk), process 0 alone found
  # the file and trained while process 1 computed with collectives: a hang. Now the processes
  # read it only when all see it; otherwise all compute it, and each keeps a copy.
  homes = [tmp_path / "home0", tmp_path / "home1"]
  flags = ("--config.train.teacher=cache", "--config.data.augment=False",
           "--config.stages=['train']")
  (first,) = _run_all([helpers.main_command(config, str(tmp_path / "one"), *flags)],
                      dict(_env(TWO_DEVICES), HOME=str(homes[0])))
  assert first.returncode == 0, first.stderr[-3000:]
  (cached,) = list((homes[0] / ".cache" / "rrjax").iterdir())
  assert not homes[1].exists()
  port = _free_port()
  started = []
  for i, home in enumerate(homes):
    log = tempfile.TemporaryFile("w+")
    command = helpers.main_command(config, str(tmp_path / "two"), *flags,
                                   *_distributed_flags(port, 2, i))
    started.append((command, _start(command, dict(_env(), HOME=str(home)), log), log))
  runs = _wait_all(started)
  for i, run in enumerate(runs):
    assert run.returncode == 0, (i, run.stderr[-3000:])
    assert "teacher cache: reading" not in run.stderr, i
  assert (homes[1] / ".cache" / "rrjax" / cached.name).read_bytes() == cached.read_bytes()
  for a, b in zip(_student(tmp_path / "two"), _student(tmp_path / "one"), strict=True):
    np.testing.assert_allclose(a, b, atol=STEP_TOLERANCE)


@pytest.mark.scale
def test_a_workdir_that_is_not_shared_is_one_error_in_every_process(config, tmp_path):
  # Each process its own --workdir, as a host-local path on two hosts would be: refused in
  # both with the same line (before, each restored from its own listing).
  port = _free_port()
  assert _one_error_line(
      [helpers.main_command(config, str(tmp_path / f"host{i}"),
                            *_distributed_flags(port, 2, i)) for i in range(2)], _env()) == (
      f"rrjax: error: workdir {tmp_path / 'host1'}: process 1 does not see what process 0 "
      "writes there; every process must see the same --workdir (a shared file system or a "
      "bucket, gs://...)")


@pytest.mark.scale
def test_processes_given_different_configs_stop_together_on_a_fresh_workdir(config, tmp_path):
  port = _free_port()
  message = _one_error_line(
      [helpers.main_command(config, str(tmp_path / "run"), f"--config.seed={i}",
                            *_distributed_flags(port, 2, i)) for i in range(2)], _env())
  assert re.fullmatch(r"rrjax: error: process 1 was given another config than process 0 \(config "
                      r"hash [0-9a-f]{7}\): start every process with the same command and "
                      r"flags", message), message
  assert not (tmp_path / "run" / "config.json").exists()


def test_processes_restore_the_step_process_0_lists_or_stop_together(tmp_path, monkeypatch):
  """A process whose listing differs from process 0's raises, as every process then does."""
  from rrjax.training import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  state = {"step": np.int32(3), "w": np.ones(2, np.float32)}
  checkpointer = checkpoint_lib.Checkpointer(tmp_path / "ckpt")
  try:
    checkpointer._manager.save(3, args=ocp.args.StandardSave(state))
    checkpointer._manager.wait_until_finished()
    assert checkpointer.agreed_latest_step() == 3
    monkeypatch.setattr(multiprocess, "leaders", lambda value: 5)  # Process 0 lists step 5.
    with pytest.raises(errors.UserError) as info:
      checkpointer.agreed_latest_step()
    assert str(info.value) == (
        f"{tmp_path / 'ckpt'}: process 0 sees checkpoint step 3, process 0 step 5: every "
        "process must see the same --workdir (a shared file system or a bucket)")
  finally:
    checkpointer.close()


@pytest.mark.scale
def test_a_multi_process_run_without_the_preemption_service_is_refused(config, tmp_path):
  # Without it each process would take SIGTERM alone and stop where the others do not.
  port = _free_port()
  assert _one_error_line(
      [helpers.main_command(config, str(tmp_path / "run"), *_distributed_flags(port, 2, i))
       for i in range(2)], dict(_env(), JAX_ENABLE_PREEMPTION_SERVICE="0")) == (
      "rrjax: error: JAX's preemption service is off (JAX_ENABLE_PREEMPTION_SERVICE or "
      "jax_enable_preemption_service): a multi-process rrjax run needs it to stop every "
      "process at one point on SIGTERM")
  assert not (tmp_path / "run").exists()


@pytest.mark.scale
def test_main_reads_process_settings_from_the_environment(config, tmp_path):
  env = dict(_env(), RRJAX_NUM_PROCESSES="2", RRJAX_PROCESS_ID="1")
  (run,) = _run_all([helpers.main_command(config, str(tmp_path / "run"))], env)
  assert run.returncode == 2, run.stderr[-3000:]
  assert run.stderr.strip().splitlines()[-1] == (
      "rrjax: error: --num_processes=2 --process_id=1 without --coordinator_address: a "
      "multi-process run names process 0's HOST:PORT (or pass --distributed to detect it on a "
      "TPU pod or a SLURM / Open MPI cluster)")
  assert not (tmp_path / "run").exists()  # Refused before any work.


# A train image that the run's first pass over the train split (tiny config, two processes)
# puts in process 1's slice: process 1 is the first to read it.
BAD_IMAGE = os.path.join("train", "class1", "005.png")


@pytest.mark.scale
@pytest.mark.parametrize("fault", ["bad image", "bug", "last write"])
def test_a_failure_in_one_process_ends_every_process_with_its_line_within_seconds(
    fault, config, folder, tmp_path):
  """Issue #17: process 1 alone failing (an image of its slice that does not decode, or an
  exception of a bug; process 0 for its last write, when the others have nothing left to
  compute) left process 0 waiting at its next collective and process 1 at JAX's
  shutdown barrier until JAX's 5-minute timeouts, then both aborted with a trace. Now both
  end within seconds with the same line and status."""
  env, module = _env(), "rrjax.main"
  if fault == "bad image":
    images = tmp_path / "images"
    shutil.copytree(folder, images)
    bad = images / BAD_IMAGE
    content = bad.read_bytes()
    bad.write_bytes(content[:len(content) // 2])  # The header reads, the pixels do not.
    config = helpers.write_tiny_config_file(tmp_path / "bad.py", str(images),
                                            f"c.train.steps = {STEPS}")
    status = 2
    line = (f"rrjax: error: imagefolder:{images} train[:120]: cannot decode image {bad}: "
            "image file is truncated")
  elif fault == "bug":
    env = dict(env, RRJAX_FAULT="bug", RRJAX_FAULT_PROCESS="1")
    module = "tests.parallel.scale_fault_main"
    status = 1
    line = ("rrjax: process 1 failed: RuntimeError: injected fault (a bug; the traceback is "
            "in that process's log)")
  else:
    env = dict(env, RRJAX_FAULT="last_write", RRJAX_FAULT_PROCESS="0")
    module = "tests.parallel.scale_fault_main"
    status = 1
    line = ("rrjax: process 0 failed: OSError: injected: disk full (a bug; the traceback is in "
            "that process's log)")
  failing = 0 if fault == "last write" else 1
  port = _free_port()
  commands = [[sys.executable, "-m", module,
               *helpers.main_command(config, str(tmp_path / "run"),
                                     *_distributed_flags(port, 2, i))[3:]] for i in range(2)]
  # Start-up, compiling and the failure (about 5 s idle), where before the processes waited
  # out the 300 s of JAX's shutdown barrier.
  runs = _end_together(_start_all(commands, env))
  for i, run in enumerate(runs):
    assert run.returncode == status, (i, run.stderr[-3000:])
    assert run.stderr.strip().splitlines()[-1] == line, (i, run.stderr[-3000:])
  # One process failed; the other learnt it from the shared store, not from a timeout.
  other = 1 - failing
  assert f"process {failing} failed; ending this one too" in runs[other].stderr
  assert "failed; ending this one too" not in runs[failing].stderr
  if fault != "bad image":
    assert "Traceback" in runs[failing].stderr and "injected" in runs[failing].stderr


@pytest.mark.scale
@pytest.mark.parametrize("during", ["a training step", "a validation pass"])
def test_sigterm_during_the_baseline_stops_every_process_and_resumes_exactly(during, folder,
                                                                               tmp_path):
  """The baseline checkpoints every `baseline.checkpoint_every` steps and on SIGTERM, also one
  that lands in its validation pass (model selection), and resumes to the uninterrupted run."""
  steps = 300  # Per label fraction; the signal lands in the first fine-tuning.
  # Validation passes of 3 batches (24 images): JAX's preemption service names a sync point one
  # past the furthest check any process reached, so it falls inside the pass, not at the
  # training loop's check after it.
  config = helpers.write_tiny_config_file(
      tmp_path / "baseline.py", folder, "c.stages = ('baseline',)", "c.baseline.epochs = 1000",
      f"c.baseline.max_steps = {steps}", "c.baseline.log_every = 1",
      "c.baseline.checkpoint_every = 25", "c.eval.batch_size = 8")
  reference = tmp_path / "reference"
  (run,) = _run_all([helpers.main_command(config, str(reference))], _env(TWO_DEVICES))
  assert run.returncode == 0, run.stderr[-3000:]

  workdir = tmp_path / "run"
  port = _free_port()
  commands = [helpers.main_command(config, str(workdir), *_distributed_flags(port, 2, i))
              for i in range(2)]
  if during == "a training step":
    started = _start_all(commands, _env())
    deadline = time.monotonic() + TIMEOUT
    # The first fine-tuning's log (one per label fraction and learning rate).
    while not any(log.read_text().strip()
                  for log in (workdir / EXPERIMENT).glob("baseline_*/*/metrics.jsonl")):
      assert all(p.poll() is None for _, p, _ in started), "a process ended before the baseline"
      assert time.monotonic() < deadline, "no baseline metrics line in time"
      time.sleep(0.05)
    started[1][1].send_signal(signal.SIGTERM)  # The notice reaches process 1 only.
  else:  # Process 1 signals itself as its first validation pass starts.
    started = _start_all([[c[0], "-m", "tests.parallel.scale_fault_main", *c[3:]]
                          for c in commands],
                         dict(_env(), RRJAX_FAULT="sigterm_in_validation",
                              RRJAX_FAULT_PROCESS="1"))
  # Self-signalled, the wait also covers the start-up and the first 12 steps.
  runs = _end_together(started, ENDS_WITHIN if during == "a training step" else 2 * ENDS_WITHIN)
  step = _preempted_at_one_step(runs)  # Both after the same baseline step, saved.
  assert 1 <= step < steps
  if during == "a validation pass":
    # The first validated step (`rrjax.training.baseline`: every max(an epoch, steps / 25)),
    # stopped inside its pass, which finished first.
    assert step == 12, step
    for run in runs:
      assert "SIGTERM during a feature pass: finishing it, then stopping" in run.stderr
  (resumed_log,) = [p.relative_to(workdir)
                    for p in (workdir / EXPERIMENT).glob("baseline_*/*/metrics.jsonl")]
  assert (workdir / resumed_log.parent / "checkpoints" / str(step)).is_dir(), resumed_log
  _resume_two_processes(config, workdir, step)
  # The resumed fine-tuning is the uninterrupted one: rows, every logged loss.
  assert _head(workdir) == _head(reference)
  logs = sorted(p.relative_to(reference) for p in reference.rglob("metrics.jsonl"))
  assert len(logs) >= 3  # The run's, and one per fine-tuning.
  assert sorted(p.relative_to(workdir) for p in workdir.rglob("metrics.jsonl")) == logs
  for relative in logs:
    assert _logged(workdir / relative.parent) == _logged(reference / relative.parent), relative


# ----------------------------------------------------------------------------- kill -9


@pytest.mark.scale
@pytest.mark.parametrize("point, resumed", [
    ("committed", 2 * CHECKPOINT_EVERY),  # Killed right after the step-20 checkpoint.
    ("written", CHECKPOINT_EVERY),        # Step 20's arrays written, not committed.
    ("created", CHECKPOINT_EVERY),        # Step 20's temporary directory still empty.
])
def test_kill_9_then_rerun_is_bit_identical(point, resumed, config, reference, tmp_path):
  workdir = tmp_path / "run"
  marker = tmp_path / "paused"
  command = helpers.main_command(config, str(workdir))
  env = dict(_env(TWO_DEVICES), RRJAX_PAUSE_AT=point, RRJAX_PAUSE_SAVE="2",
             RRJAX_PAUSE_MARKER=str(marker))
  log = open(tmp_path / "paused.log", "w+", encoding="utf-8")
  process = _start([sys.executable, "-m", "tests.parallel.scale_pause_main", *command[3:]], env,
                   log)
  try:
    deadline = time.monotonic() + TIMEOUT
    while not marker.exists():
      assert process.poll() is None, (tmp_path / "paused.log").read_text()[-3000:]
      assert time.monotonic() < deadline, "the run never reached its second checkpoint"
      time.sleep(0.05)
    paused_in = marker.read_text()
    checkpoints = workdir / EXPERIMENT / "checkpoints"
    step_dir = checkpoints / str(2 * CHECKPOINT_EVERY)
    if point == "committed":
      assert paused_in == str(step_dir) and step_dir.is_dir()
    else:
      assert paused_in.startswith(str(step_dir) + ".orbax-checkpoint-tmp")
      assert os.path.isdir(paused_in) and not step_dir.exists()
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    log.close()
  assert process.returncode == -signal.SIGKILL
  assert not (workdir / "results.json").exists()

  (rerun,) = _run_all([command], _env(TWO_DEVICES))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f"resuming from checkpoint step {resumed}" in rerun.stderr
  _assert_same_run(workdir, reference)


@pytest.mark.scale
def test_sigterm_during_a_feature_pass_stops_every_process_and_the_rerun_finishes(folder,
                                                                                   tmp_path):
  # No training: probes and evaluation only, with many draws of small batches, so that the
  # signal lands outside any training loop (JAX's preemption service used to swallow it there
  # and the processes ran on).
  config = helpers.write_tiny_config_file(
      tmp_path / "features.py", folder, "c.stages = ('probe',)", "c.eval.draws = 300",
      "c.eval.batch_size = 4")
  workdir = tmp_path / "run"
  port = _free_port()
  # Named logs, read while the processes write them.
  logs = [open(tmp_path / f"process{i}.log", "w+") for i in range(2)]  # noqa: SIM115
  processes = [_start(helpers.main_command(config, str(workdir),
                                           *_distributed_flags(port, 2, i)), _env(), logs[i])
               for i in range(2)]
  try:
    deadline = time.monotonic() + TIMEOUT
    while "extract_features" not in (tmp_path / "process1.log").read_text():
      assert all(p.poll() is None for p in processes), "a process ended before its features"
      assert time.monotonic() < deadline, "no feature pass in time"
      time.sleep(0.05)
    processes[1].send_signal(signal.SIGTERM)  # The notice reaches process 1 only.
    stopped, ended = set(), []
    for i, process in enumerate(processes):
      process.wait(timeout=ENDS_WITHIN)  # Raises on a hang.
      ended.append(time.monotonic())
      stderr = (tmp_path / f"process{i}.log").read_text()
      assert process.returncode == 143, (i, stderr[-3000:])
      match = re.fullmatch(r"rrjax: preempted during (.+); trainings are kept in their "
                           r"checkpoints; rerun the same command to resume",
                           stderr.strip().splitlines()[-1])
      assert match, (i, stderr[-3000:])
      stopped.add(match[1])
    assert max(ended) - min(ended) < ENDS_APART, ended  # As process 1 went first.
    (where,) = stopped  # Both processes stopped at the same point ...
    assert where in ("a feature pass", "the probes", "experiment mask")
  finally:
    for process, log in zip(processes, logs):
      if process.poll() is None:
        process.kill()
        process.wait()
      log.close()
  assert not (workdir / "results.json").exists()
  port = _free_port()
  for i, run in enumerate(_run_all(
      [helpers.main_command(config, str(workdir), *_distributed_flags(port, 2, i))
       for i in range(2)], _env())):
    assert run.returncode == 0, (i, run.stderr[-3000:])
  assert (workdir / "results.json").stat().st_size > 0
