#!/usr/bin/env bash
# Usage: launch/tpu_pod.sh [options] STEP... [-- rrjax flags]
#
# Runs an rrjax config on a Cloud TPU slice: one process on every TPU VM host of the slice,
# started with --distributed (jax.distributed.initialize() finds the slice by itself), all
# reading the data from and writing the workdir to Cloud Storage. The STEPs run in the order
# given:
#   create   create the slice; one that was preempted or terminated is deleted and recreated
#   setup    copy this checkout (or clone --repo) to every worker, make a venv with uv and
#            install rrjax with jax[tpu] and gcsfs into it
#   run      run the config on all workers (--worker=all); rerunning resumes from the workdir
#   fetch    copy results.json, report.md, metrics.jsonl, config.json and the PNGs to --dest
#   stop     SIGTERM the run on all workers: rrjax saves a checkpoint and exits 143
#   delete   delete the slice; when delete is one of the STEPs, it also runs after a failed step
#   status   print the slice's state (READY, PREEMPTED, ...)
#   all      create setup run fetch delete
#
# Options:
#   --name NAME              the slice's name (env TPU_NAME)                  [every step]
#   --zone ZONE              e.g. us-central2-b (env TPU_ZONE)                [every step]
#   --project PROJECT        default: gcloud's core/project
#   --accelerator-type TYPE  v4-32, v5litepod-16, v5p-16, v6e-16, ...         [create]
#   --version VERSION        TPU software version; default from the type: tpu-ubuntu2204-base
#                            (v4 and older), v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv5 (v5p),
#                            v2-alpha-tpuv6e (v6e)
#   --spot                   spot capacity: cheaper, may be preempted at any time
#   --preemptible            preemptible capacity (older form of spot; at most 24 hours)
#   --config FILE[:ARG]      config file, relative to the repository root     [run]
#   --workdir gs://...       checkpoints and outputs                          [run, fetch]
#   --data-dir gs://...      TFDS data dir (--config.data.data_dir); default: the config's
#   --dest DIR               where fetch copies to (default: runs/<last part of the workdir>)
#   --repo URL               setup clones URL on the workers instead of copying this checkout
#   --ref REF                branch, tag or commit of --repo (default: its default branch)
#   --python-version X.Y     Python of the workers' venv, made by uv (default 3.11: the image's
#                            Python 3.10 is too old for current jax and flax)
#   --jax SPEC               the JAX requirement installed by setup (default jax[tpu])
#   --max-restarts N         run: when the slice is preempted, recreate it, set it up and run
#                            again (resuming), up to N times (default 0); a run stopped by
#                            SIGTERM on a slice that stays READY runs again on it
#   -n, --dry-run            print the commands instead of running them (also DRY_RUN=1)
#   -h, --help               this help
#
# Example (the whole life of a slice; rerun it after a preemption to resume):
#   launch/tpu_pod.sh --name rr-mask90 --zone us-central2-b --accelerator-type v4-32 --spot \
#     --config configs/mask90.py --workdir gs://BUCKET/runs/mask90 \
#     --data-dir gs://BUCKET/tensorflow_datasets all
#
# Preemption: a preempted slice cannot be restarted. `create setup run` recreates it and the
# run resumes from the last checkpoint in the gs:// workdir; --max-restarts does so unattended.
# A run that ends with SIGTERM's 143 or ssh's 255 (a worker gone) is not taken as the end: the
# slice's state is polled (TPU_POLLS times, TPU_POLL_SECONDS apart; default 10 x 30 s), then a
# preempted slice is recreated and a READY one runs the command again (both resume), within
# --max-restarts. A slice whose run has not finished is never deleted, `all` included.
# gcloud's ssh to all workers needs the key in an agent: ssh-add ~/.ssh/google_compute_engine.
set -euo pipefail

PROG=tpu_pod.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$REPO/launch/lib.sh"

NAME=${TPU_NAME:-}
ZONE=${TPU_ZONE:-}
PROJECT=""
ACCELERATOR=""
VERSION=""
CAPACITY=""
DEST=""
REPO_URL=""
REF=HEAD
PYTHON_VERSION=3.11
JAX_SPEC="jax[tpu]"
MAX_RESTARTS=0
STEPS=()

while (($#)); do
  common_option "$@"
  if ((SHIFT)); then
    shift "$SHIFT"
    continue
  fi
  case $1 in
    --name | --name=*) take "$@"; NAME=$VALUE ;;
    --zone | --zone=*) take "$@"; ZONE=$VALUE ;;
    --project | --project=*) take "$@"; PROJECT=$VALUE ;;
    --accelerator-type | --accelerator-type=*) take "$@"; ACCELERATOR=$VALUE ;;
    --version | --version=*) take "$@"; VERSION=$VALUE ;;
    --spot) CAPACITY=--spot; SHIFT=1 ;;
    --preemptible) CAPACITY=--preemptible; SHIFT=1 ;;
    --dest | --dest=*) take "$@"; DEST=$VALUE ;;
    --repo | --repo=*) take "$@"; REPO_URL=$VALUE ;;
    --ref | --ref=*) take "$@"; REF=$VALUE ;;
    --python-version | --python-version=*) take "$@"; PYTHON_VERSION=$VALUE ;;
    --jax | --jax=*) take "$@"; JAX_SPEC=$VALUE ;;
    --max-restarts | --max-restarts=*) take "$@"; MAX_RESTARTS=$VALUE ;;
    --) shift; EXTRA=("$@"); break ;;
    -*) die "unknown option '$1'" ;;
    all) STEPS+=(create setup run fetch delete); SHIFT=1 ;;
    create | setup | run | fetch | stop | delete | status) STEPS+=("$1"); SHIFT=1 ;;
    *) die "unknown step '$1' (steps: create setup run fetch stop delete status all)" ;;
  esac
  shift "$SHIFT"
done

check_dry_run
((${#STEPS[@]})) || die "no STEP given (create setup run fetch stop delete status all)"
require "$NAME" "--name NAME (the slice's name; or env TPU_NAME)"
require "$ZONE" "--zone ZONE (e.g. us-central2-b; or env TPU_ZONE)"
[[ $MAX_RESTARTS =~ ^(0|[1-9][0-9]*)$ ]] \
  || die "--max-restarts must be a whole number, not '$MAX_RESTARTS'"
WORKDIR=${WORKDIR%/}

has_step() {
  local step
  for step in "${STEPS[@]}"; do
    [[ $step == "$1" ]] && return 0
  done
  return 1
}

# Checked before any step runs, so that `all` fails before it creates a slice.
if has_step create || ((MAX_RESTARTS)); then
  require "$ACCELERATOR" "--accelerator-type TYPE (e.g. v4-32, v5litepod-16, v5p-16, v6e-16)"
  if [[ -z $VERSION ]]; then
    case $ACCELERATOR in
      v2-* | v3-* | v4-*) VERSION=tpu-ubuntu2204-base ;;
      v5litepod-* | v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
      v5p-*) VERSION=v2-alpha-tpuv5 ;;
      v6e-*) VERSION=v2-alpha-tpuv6e ;;
      *) die "no default --version for accelerator type '$ACCELERATOR'; pass --version" ;;
    esac
  fi
fi
if has_step run; then
  require_run_args
  case $CONFIG in
    /*) die "--config must be relative to the repository root (the workers' copy), not $CONFIG" ;;
  esac
  if [[ -z $REPO_URL && ! -f $REPO/${CONFIG%%:*} ]]; then
    die "config file not found in the repository: ${CONFIG%%:*}"
  fi
fi
if has_step run || has_step fetch; then
  require "$WORKDIR" "--workdir gs://BUCKET/PATH (every worker writes there)"
  [[ $WORKDIR == gs://?* ]] \
    || die "--workdir must be a gs:// path that all workers share, not '$WORKDIR'"
fi

GCLOUD_TPU=(gcloud compute tpus tpu-vm)
WHERE=("--zone=$ZONE")
[[ -z $PROJECT ]] || WHERE+=("--project=$PROJECT")
REMOTE_DIR=rrjax   # On the workers, relative to the home directory (where ssh starts).

# Keepalives: when a preempted worker vanishes, ssh gives up within minutes instead of hours.
on_all_workers() {
  run "${GCLOUD_TPU[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all \
    "--ssh-flag=-o ServerAliveInterval=60" "--ssh-flag=-o ServerAliveCountMax=5" "--command=$1"
}

# STATE: the slice's state, "" when it does not exist. A dry run queries nothing.
query_state() {
  local query=("${GCLOUD_TPU[@]}" describe "$NAME" "${WHERE[@]}" "--format=value(state)")
  if [[ $DRY_RUN == 1 ]]; then
    run "${query[@]}"
    note "dry run: the state is not queried; the slice is taken not to exist"
    STATE=""
  else
    STATE=$("${query[@]}" 2>/dev/null || true)
  fi
}

step_create() {
  query_state
  case $STATE in
    "") ;;
    READY | CREATING | STARTING | RESTARTING)
      note "slice $NAME exists ($STATE); not creating it"
      return 0 ;;
    PREEMPTED | TERMINATED | STOPPED)
      note "slice $NAME is $STATE and cannot be restarted: deleting it to create it again"
      delete_slice ;;
    *) die "slice $NAME is $STATE; wait, or delete it" ;;
  esac
  run "${GCLOUD_TPU[@]}" create "$NAME" "${WHERE[@]}" "--accelerator-type=$ACCELERATOR" \
    "--version=$VERSION" ${CAPACITY:+"$CAPACITY"}
}

step_setup() {
  local code uv=.local/bin/uv python="$REMOTE_DIR/.venv/bin/python" tarball
  if [[ -n $REPO_URL ]]; then
    code="{ [ -d $REMOTE_DIR/.git ] || git clone --quiet $(quote "$REPO_URL") $REMOTE_DIR; }"
    code+=" && git -C $REMOTE_DIR fetch --quiet origin $(quote "$REF")"
    code+=" && git -C $REMOTE_DIR checkout --quiet --detach FETCH_HEAD"
  else
    git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1 \
      || die "$REPO is not a git checkout: pass --repo URL to clone instead"
    # The checkout as it is: tracked and untracked files, not what .gitignore ignores (.venv,
    # runs/).
    tarball="${TMPDIR:-/tmp}/rrjax-$NAME.tgz"
    run bash -o pipefail -c "git -C $(quote "$REPO") ls-files -z --cached --others \
--exclude-standard | tar -czf $(quote "$tarball") -C $(quote "$REPO") --null -T -"
    run "${GCLOUD_TPU[@]}" scp "$tarball" "$NAME:rrjax.tgz" "${WHERE[@]}" --worker=all
    run rm -f "$tarball"
    code="mkdir -p $REMOTE_DIR && tar -xzf rrjax.tgz -C $REMOTE_DIR && rm rrjax.tgz"
  fi
  code+=" && python3 -m pip install --user --quiet --upgrade uv"
  code+=" && { [ -x $python ] || $uv venv --quiet --python $(quote "$PYTHON_VERSION") \
$REMOTE_DIR/.venv; }"
  code+=" && $uv pip install --quiet --python $python -e $REMOTE_DIR $(quote "$JAX_SPEC") gcsfs"
  on_all_workers "$code"
}

POLLS=${TPU_POLLS:-10}
POLL_SECONDS=${TPU_POLL_SECONDS:-30}
[[ $POLLS =~ ^[1-9][0-9]*$ ]] || die "TPU_POLLS must be a whole number >= 1, not '$POLLS'"
[[ $POLL_SECONDS =~ ^(0|[1-9][0-9]*)$ ]] \
  || die "TPU_POLL_SECONDS must be a whole number of seconds, not '$POLL_SECONDS'"
RUN_UNFINISHED=0  # Set by `run` when it gives up on a run that was stopped, not finished.

# After a run stopped by SIGTERM or a lost worker: STATE once it is READY for every poll (a
# stop that was no preemption) or once it is preempted, terminated or stopped.
poll_after_stop() {
  local polls
  for ((polls = 1; ; polls++)); do
    query_state
    case $STATE in
      PREEMPTED | TERMINATED | STOPPED) return 0 ;;
    esac
    ((polls < POLLS)) || return 0
    sleep "$POLL_SECONDS"
  done
}

step_run() {
  local restarts=0 status
  rrjax_command .venv/bin/python --distributed
  # run.pid lets `stop` signal this run: exec makes the shell's pid rrjax's.
  local remote
  remote="cd $REMOTE_DIR && rm -f stopped && echo \$\$ > run.pid && exec $(quote "${RRJAX[@]}")"
  while true; do
    status=0
    RUN_UNFINISHED=1  # Until it ends: a launcher killed meanwhile keeps the slice.
    on_all_workers "$remote" || status=$?
    RUN_UNFINISHED=0
    ((status)) || return 0
    case $status in
      143 | 255) poll_after_stop ;;  # SIGTERM, or ssh lost a worker: maybe a preemption.
      *) query_state ;;
    esac
    case $STATE in
      PREEMPTED | TERMINATED | STOPPED) ;;
      READY) ((status == 143 || status == 255)) || return "$status" ;;
      *) ((status == 143 || status == 255)) || return "$status"
         RUN_UNFINISHED=1
         note "run stopped (status $status) and slice $NAME is ${STATE:-gone}; resume with:" \
           "$PROG ... create setup run"
         return "$status" ;;
    esac
    RUN_UNFINISHED=1
    if ((restarts >= MAX_RESTARTS)); then
      note "run stopped (status $status), slice $NAME is $STATE; resume with: $PROG ..." \
        "create setup run (or --max-restarts)"
      return "$status"
    fi
    if [[ $STATE == READY ]] && ! on_all_workers "test ! -e $REMOTE_DIR/stopped"; then
      note "run stopped by \`$PROG ... stop\`: not restarting it; the same run command resumes"
      return "$status"
    fi
    restarts=$((restarts + 1))
    if [[ $STATE == READY ]]; then
      note "run stopped (status $status) on a READY slice: running it again, resuming" \
        "(restart $restarts of $MAX_RESTARTS)"
      # A worker whose ssh session was lost may still run it: stopped first, checkpointing.
      on_all_workers "$(stop_command wait)"
    else
      note "slice $NAME was preempted: recreating it and resuming" \
        "(restart $restarts of $MAX_RESTARTS)"
      step_create
      step_setup
    fi
  done
}

step_fetch() {
  local dest=${DEST:-runs/${WORKDIR##*/}} name sources=()
  for name in results.json report.md metrics.jsonl config.json '*.png'; do
    sources+=("$WORKDIR/$name")
  done
  run mkdir -p "$dest"
  run gcloud storage cp "${sources[@]}" "$dest/"
}

# The command that SIGTERMs the process `run` recorded, only while it is still rrjax; with
# "wait", until it has exited (it checkpoints first).
stop_command() {
  local wait=""
  [[ ${1:-} != wait ]] || wait=" && while kill -0 \$pid 2>/dev/null; do sleep 5; done"
  printf '%s' "pid=\$(cat $REMOTE_DIR/run.pid 2>/dev/null) \
&& grep -qa rrjax.main /proc/\$pid/cmdline 2>/dev/null && kill -TERM \$pid$wait \
|| echo 'no rrjax run on this worker'"
}

step_stop() {
  # The marker tells a `run --max-restarts` in another terminal not to restart it.
  on_all_workers "touch $REMOTE_DIR/stopped; $(stop_command)"
}

delete_slice() {
  run "${GCLOUD_TPU[@]}" delete "$NAME" "${WHERE[@]}" --quiet
}

DELETE_PENDING=0
step_delete() {
  DELETE_PENDING=0
  delete_slice
}

step_status() {
  run "${GCLOUD_TPU[@]}" describe "$NAME" "${WHERE[@]}" "--format=value(state)"
}

# When delete is a STEP, a failing earlier step still deletes the slice (it costs money idle),
# unless the run was stopped before it finished: that slice is kept for the resume.
delete_after_failure() {
  local status=$?
  if ((DELETE_PENDING && RUN_UNFINISHED)); then
    note "the run has not finished: keeping slice $NAME (resume with $PROG ... create setup" \
      "run; delete it with $PROG ... delete)"
  elif ((DELETE_PENDING)); then
    note "a step failed (status $status): deleting slice $NAME anyway"
    step_delete || true
  fi
  exit "$status"
}

if has_step delete; then
  DELETE_PENDING=1
  trap delete_after_failure EXIT
fi
for step in "${STEPS[@]}"; do
  note "step $step"
  "step_$step"
done
