"""rrjax.main: exit status 0, 2 with one line for a user error, 143 after SIGTERM, the
traceback of a programming error, command-line overrides, and the CPU malloc hint."""

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import pytest
from absl import flags
from absl import logging

from rrjax import main
from rrjax.config import workdir as workdir_lib
from rrjax.io import metrics
from tests import helpers

# Where the tiny config's single experiment ("mask") keeps its outputs.
EXPERIMENT = "mask"
_FORMS = helpers.ALLOWED_FORMS


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return helpers.make_folder(tmp_path_factory.mktemp("images"))


class _Evil:
  """Unpickling this runs a shell command, as `pickle.load` or `torch.load` would."""

  def __init__(self, cmd):
    self.cmd = cmd

  def __reduce__(self):
    return os.system, (self.cmd,)


def _claimed(folder, workdir, **overrides) -> bytes:
  """`workdir` claimed by the tiny config with `overrides`, with an earlier results.json."""
  config = helpers.tiny_config(folder, **overrides)
  workdir_lib.claim_workdir(config, str(workdir))
  return helpers.write_results(str(workdir), config)


def test_sigterm_exits_143_with_a_checkpoint_and_the_same_command_resumes(folder, tmp_path):
  steps = 800  # Seconds of training (~3 ms a step): still running when the signal lands.
  config = helpers.write_tiny_config_file(
      tmp_path / "long.py", folder, "c.stages = ('train',)", f"c.train.steps = {steps}",
      "c.train.log_every = 1", "c.train.checkpoint_every = 0")
  workdir = tmp_path / "run"
  log = workdir / EXPERIMENT / "metrics.jsonl"
  process = subprocess.Popen(helpers.main_command(config, str(workdir)),
                             env=helpers.main_env(), cwd=helpers.REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 120
  while not (log.exists() and log.read_text().strip()):
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

  rerun = helpers.run_main(config, str(workdir))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f"resuming from checkpoint step {stopped}" in rerun.stderr
  logged = [row["step"] for row in metrics.read_metrics(log)]
  assert logged == list(range(1, steps + 1))  # Every step once: none lost, none repeated.
  assert (workdir / "results.json").exists()


# ----------------------------------------------------------------------------- main


def _parse_main_flags(config_path, workdir, *extra):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["rrjax.main", f"--config={config_path}", f"--workdir={workdir}", *extra])


def test_main_prints_one_line_and_exits_2_unless_a_traceback_is_asked_for(
    folder, tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("RRJAX_TRACEBACK", raising=False)
  config = helpers.write_tiny_config_file(tmp_path / "bad.py", folder,
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


# A ValueError is no user error: a shape mismatch in rrjax's own code keeps its traceback.
@pytest.mark.parametrize("bug", [RuntimeError("a bug"), ValueError("shapes (3,) and (4,)"),
                                 FileNotFoundError("rrjax's own file")])
def test_main_keeps_the_traceback_of_a_programming_error(folder, tmp_path, monkeypatch, bug):
  def train_and_evaluate(config, workdir, overrides=()):
    raise bug

  monkeypatch.setattr(main.run, "train_and_evaluate", train_and_evaluate)
  monkeypatch.delenv("RRJAX_TRACEBACK", raising=False)
  _parse_main_flags(helpers.write_tiny_config_file(tmp_path / "c.py", folder),
                    tmp_path / "run")
  with pytest.raises(type(bug), match=re.escape(str(bug))):
    main.main(["rrjax.main"])


def _main_case(case, folder, tmp_path):
  """(config lines, workdir, expected message, {path: bytes it must keep, None: absent})."""
  tmp_path.mkdir()
  workdir = tmp_path / "run"
  if case == "bad_spec":
    return ["c.train.corruption = 'mask(1.3)'", "c.experiments = {}"], workdir, (
        "config.train.corruption: bad corruption spec part 'mask(1.3)': mask fraction 1.3 not "
        f"in [0, 1]; {_FORMS}"), {}
  if case == "missing_folder":
    return [f"c.data.name = 'imagefolder:{tmp_path}/nowhere'"], workdir, (
        f"imagefolder:{tmp_path}/nowhere: no such directory"), {}
  if case == "missing_weights":
    # Weights are read before the workdir is claimed: a bad file leaves nothing behind.
    return [f"c.teacher.weights = '{tmp_path}/nowhere.npz'"], workdir, (
        f"{tmp_path}/nowhere.npz: cannot read the weights file (No such file or directory)"), {
            workdir / "config.json": None}
  if case == "malicious_weights":
    marker, weights = tmp_path / "pwned", tmp_path / "evil.pth"
    weights.write_bytes(pickle.dumps(_Evil(f"touch {marker}")))
    return ["c.teacher.name = 'efficientnet_lite0'", f"c.teacher.weights = '{weights}'"], (
        workdir), (f"{weights}: refusing to load weights: the file asks to call "
                   f"'{os.system.__module__}.system'; only tensors are allowed"), {
                       marker: None, workdir / "config.json": None}
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
      "baseline.log_every, baseline.checkpoint_every, stages, experiments.*.stages, only)"), {
          workdir / "results.json": earlier}


def test_main_user_errors_exit_2_with_one_line_and_no_traceback(folder, tmp_path):
  """User errors through `python -m rrjax.main`, run side by side to share the start-up."""
  cases = ["bad_spec", "missing_folder", "missing_weights", "malicious_weights",
           "unwritable_workdir", "other_config"]
  runs = {}
  for case in cases:
    lines, workdir, message, kept = _main_case(case, folder, tmp_path / case)
    config = helpers.write_tiny_config_file(tmp_path / f"{case}.py", folder, *lines)
    process = subprocess.Popen(helpers.main_command(config, str(workdir)),
                               env=helpers.main_env(), cwd=helpers.REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs[case] = process, message, kept
  for case, (process, message, kept) in runs.items():
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, (case, stderr[-3000:])
    assert "Traceback" not in stderr, case
    assert stderr.strip().splitlines()[-1] == f"rrjax: error: {message}", case
    for path, data in kept.items():
      assert (path.read_bytes() if path.exists() else None) == data, (case, path)




def _hints(monkeypatch, tunables):
  if tunables is None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  else:
    monkeypatch.setenv("GLIBC_TUNABLES", tunables)
  seen = []
  monkeypatch.setattr(logging, "info", lambda msg, *args: seen.append(msg % args if args else msg))
  main._hint_cpu_malloc()  # pylint: disable=protected-access
  return [m for m in seen if "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in m]


def test_cpu_run_without_the_malloc_setting_is_told_about_it(monkeypatch):
  assert len(_hints(monkeypatch, None)) == 1
  assert len(_hints(monkeypatch, "glibc.malloc.arena_max=2")) == 1


def test_no_hint_when_the_setting_is_on(monkeypatch):
  assert not _hints(monkeypatch, "glibc.malloc.hugetlb=1")
  assert not _hints(monkeypatch, "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")


# ----------------------------------------------------------------------------- overrides


def test_overrides_take_effect_or_stop_the_run_with_one_line(folder, tmp_path):
  """`--config.<field>=...` that an experiment would replace, or a bad value, exits 2 before
  any compute, saying which experiment sets the field and the flag that reaches it."""
  cases = {
      "demo_noise": ("configs/demo.py:smoke", "--config.train.corruption=noise(0.3)",
                     "'--config.train.corruption=noise(0.3)' would not reach every experiment: "
                     "experiment mask90 sets train.corruption itself; override it there: "
                     "'--config.experiments.mask90.train.corruption=noise(0.3)'"),
      "mask90_noise": ("configs/mask90.py:smoke", "--config.train.corruption=noise(0.3)",
                       "'--config.train.corruption=noise(0.3)' would not reach every "
                       "experiment: experiment mask90 sets train.corruption itself; override "
                       "it there: '--config.experiments.mask90.train.corruption=noise(0.3)'"),
      "demo_bad": ("configs/demo.py:smoke", "--config.train.corruption=mask(1.5)",
                   f"config.train.corruption: bad corruption spec part 'mask(1.5)': mask "
                   f"fraction 1.5 not in [0, 1]; {_FORMS}"),
      "mask90_bad": ("configs/mask90.py:smoke",
                     "--config.experiments.mask90.train.corruption=mask(1.5)",
                     f"config.experiments.mask90.train.corruption: bad corruption spec part "
                     f"'mask(1.5)': mask fraction 1.5 not in [0, 1]; {_FORMS}"),
  }
  runs = {}
  for case, (config, flag, message) in cases.items():
    runs[case] = subprocess.Popen(
        helpers.main_command(os.path.join(helpers.REPO, config), str(tmp_path / case), flag),
        env=helpers.main_env(RRJAX_SMOKE_DATA=f"imagefolder:{folder}"), cwd=helpers.REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), message
  for case, (process, message) in runs.items():
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, (case, stderr[-3000:])
    assert "Traceback" not in stderr, case
    assert stderr.strip().splitlines()[-1] == f"rrjax: error: {message}", case
    # Refused before any compute: the workdir was not even created.
    assert not (tmp_path / case).exists(), case


def test_override_of_an_experiments_own_field_takes_effect(folder, tmp_path, monkeypatch):
  monkeypatch.setenv("RRJAX_SMOKE_DATA", f"imagefolder:{folder}")
  workdir = tmp_path / "run"
  helpers.main_in_process(monkeypatch, "configs/mask90.py:smoke", str(workdir),
                          "--config.experiments.mask90.train.corruption=noise(0.3)",
                          "--config.probe.lr=0.01", "--config.stages=('train', 'probe')")
  results = json.loads((workdir / "results.json").read_text())
  assert {r["train_corruption"] for r in results["rows"]} == {"noise(0.3)"}
  assert {r["probe"]["lr"] for r in results["rows"]} == {0.01}
  assert {r["method"] for r in results["rows"]} == {"teacher_clean", "teacher_corrupted",
                                                     "clean_probe_on_corrupted", "restored",
                                                     "ours"}


def test_a_config_files_own_bug_keeps_its_traceback(tmp_path):
  """A KeyError in a config file's code is no override of a missing field."""
  config = tmp_path / "buggy.py"
  config.write_text("def get_config(arg=None):\n  return {}['missing']\n")
  for extra in ([], ["--config.train.lr=1"]):
    run = subprocess.run([sys.executable, "-m", "rrjax.main", f"--config={config}",
                          f"--workdir={tmp_path / 'w'}", *extra], env=helpers.main_env(),
                         cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode not in (0, 2), run.stderr[-3000:]
    assert "Traceback" in run.stderr and "missing" in run.stderr


def test_config_flag_errors_exit_2_with_one_line(folder, tmp_path):
  """A bad `--config` file or argument, an override of a field the config lacks, or a value of
  the wrong type: refused while the flags are parsed, as any user error."""
  cases = {
      "argument": (["--config=configs/demo.py:bogus"],
                   "configs/demo.py: unknown argument 'bogus'; allowed: smoke, validate"),
      "file": (["--config=configs/nope.py"], "--config: Configuration is not available"),
      "typo": (["--config=configs/demo.py:smoke", "--config.trian.lr=5"],
               "--config.trian.lr: the config has no field 'trian' (did you mean \"train\""),
      "unset": (["--config=configs/mask90.py:smoke",
                 "--config.experiments.mask90.train.steps=5"],
                "--config.experiments.mask90.train.steps: the config has no field 'steps'"),
      "type": (["--config=configs/demo.py:smoke", "--config.train.lr=abc"],
               "flag --config.train.lr=abc: could not convert string to float: 'abc'"),
  }
  runs = {case: subprocess.Popen(
      [sys.executable, "-m", "rrjax.main", *args, f"--workdir={tmp_path / case}"],
      env=helpers.main_env(), cwd=helpers.REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for case, (args, _) in cases.items()}
  for case, process in runs.items():
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, (case, stderr[-3000:])
    assert "Traceback" not in stderr, case
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"rrjax: error: {cases[case][1]}"), (case, last)
    assert not (tmp_path / case).exists(), case
  # --traceback shows it, even before the flags are parsed.
  shown = subprocess.run([sys.executable, "-m", "rrjax.main", *cases["typo"][0], "--traceback",
                          f"--workdir={tmp_path / 'typo'}"], env=helpers.main_env(),
                         cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
  assert shown.returncode != 2 and "Traceback" in shown.stderr and "trian" in shown.stderr
