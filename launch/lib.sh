# shellcheck shell=bash
# shellcheck disable=SC2034  # The variables set here (SHIFT, VALUE, PYTHON, ...) are the callers'.
# Shared by the launch scripts, which source it: option parsing, dry-run printing, the rrjax
# command line and the GPU environment. Written for bash 3.2 (macOS) or newer.
#
# A sourcing script sets PROG (its name in messages) and REPO (the repository root) first.
# Commands go through `run`: with DRY_RUN=1 they are printed, one per line, quoted so that the
# output can be pasted into a shell, and nothing is run; otherwise they are echoed to stderr
# with a "+ " prefix and run. Notes are shell comments ("# ...") in a dry run, so the whole
# output stays a shell script.

DRY_RUN=${DRY_RUN:-0}
EXTRA=()      # Flags after "--": passed to rrjax.main unchanged.
CONFIG=""
WORKDIR=""
DATA_DIR=""

# The script's help: its first block of comment lines after the shebang and #SBATCH lines.
usage() {
  awk 'NR == 1 || /^#SBATCH/ { next }
       /^#/ { sub(/^# ?/, ""); print; seen = 1; next }
       seen { exit }' "$0"
}

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  printf '%s: see --help\n' "$PROG" >&2
  exit 2
}

# Each argument, single-quoted unless it is made only of characters the shell leaves alone.
quote() {
  local out="" word
  for word in "$@"; do
    case $word in
      "" | *[!A-Za-z0-9_./:=,@%+-]*) word="'${word//\'/\'\\\'\'}'" ;;
    esac
    out="${out:+$out }$word"
  done
  printf '%s' "$out"
}

note() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '# %s\n' "$*"
  else
    printf '%s: %s\n' "$PROG" "$*" >&2
  fi
}

run() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '%s\n' "$(quote "$@")"
    return 0
  fi
  printf '+ %s\n' "$(quote "$@")" >&2
  "$@"
}

# Like `run`, for the last command: the process becomes it, so that signals (SIGTERM from a
# scheduler) reach rrjax itself and its exit status (143 after a checkpoint) is the script's.
run_exec() {
  if [[ $DRY_RUN == 1 ]]; then
    run "$@"
    exit 0
  fi
  printf '+ %s\n' "$(quote "$@")" >&2
  exec "$@"
}

setenv() {
  export "$1=$2"
  if [[ $DRY_RUN == 1 ]]; then
    printf 'export %s=%s\n' "$1" "$(quote "$2")"
  else
    printf '+ export %s=%s\n' "$1" "$(quote "$2")" >&2
  fi
}

# For "--opt=value" or "--opt value" at the front of "$@": VALUE and SHIFT (words it took).
take() {
  case $1 in
    *=*) VALUE=${1#*=}; SHIFT=1 ;;
    *)
      [[ $# -ge 2 && $2 != -* ]] || die "$1 needs a value"
      VALUE=$2; SHIFT=2 ;;
  esac
  [[ -n $VALUE ]] || die "${1%%=*} needs a value"
}

# The options every script takes. SHIFT: the words used, 0 when $1 is not one of them.
common_option() {
  SHIFT=0
  case $1 in
    -h | --help) usage; exit 0 ;;
    -n | --dry-run) DRY_RUN=1; SHIFT=1 ;;
    --config | --config=*) take "$@"; CONFIG=$VALUE ;;
    --workdir | --workdir=*) take "$@"; WORKDIR=$VALUE ;;
    --data-dir | --data-dir=*) take "$@"; DATA_DIR=$VALUE ;;
  esac
}

check_dry_run() {
  case $DRY_RUN in
    0 | 1) ;;
    *) die "DRY_RUN must be 0 or 1, not '$DRY_RUN'" ;;
  esac
}

# `require VALUE WHAT`: dies with "missing WHAT" when VALUE is empty.
require() {
  [[ -n $1 ]] || die "missing $2"
}

require_run_args() {
  require "$CONFIG" "--config FILE[:ARG] (e.g. configs/mask90.py)"
  require "$WORKDIR" "--workdir DIR (checkpoints and outputs; rerunning resumes there)"
}

# The interpreter with rrjax installed: $1 if given, else $RRJAX_PYTHON, else the repository's
# .venv (what `make setup` creates), else python3.
pick_python() {
  if [[ -n $1 ]]; then
    PYTHON=$1
  elif [[ -n ${RRJAX_PYTHON:-} ]]; then
    PYTHON=$RRJAX_PYTHON
  elif [[ -x $REPO/.venv/bin/python ]]; then
    PYTHON=$REPO/.venv/bin/python
  else
    PYTHON=python3
  fi
}

# RRJAX: the rrjax command for interpreter $1, then the flags $2..., then EXTRA (last, so that
# a user's flag wins over a launcher's).
rrjax_command() {
  RRJAX=("$1" -m rrjax.main "--config=$CONFIG" "--workdir=$WORKDIR")
  [[ -z $DATA_DIR ]] || RRJAX+=("--config.data.data_dir=$DATA_DIR")
  shift
  RRJAX+=("$@" ${EXTRA[@]+"${EXTRA[@]}"})
}

# XLA settings for GPUs; values already in the environment win.
gpu_env() {
  # JAX preallocates 75% of each GPU by default; rrjax is the only user of its GPUs.
  setenv XLA_PYTHON_CLIENT_MEM_FRACTION "${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
  case " ${XLA_FLAGS:-} " in
    *" --xla_gpu_enable_latency_hiding_scheduler"*) ;;
    # Lets XLA overlap the gradient all-reduce with the backward pass.
    *) setenv XLA_FLAGS "${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_enable_latency_hiding_scheduler=true" ;;
  esac
}

# `check_count VALUE NAME`: dies unless VALUE is a positive integer.
check_count() {
  [[ $1 =~ ^[1-9][0-9]*$ ]] || die "$2 must be a positive integer, not '$1'"
}

# `local_devices_env N`: JAX_LOCAL_DEVICE_IDS=0,...,N-1 (nothing when N is empty or the variable
# is set). Where jax.distributed.initialize() detects SLURM or Open MPI, it otherwise restricts
# each process to one GPU, the one of its local rank: one process per node would use one GPU.
local_devices_env() {
  local ids=0 i
  [[ -n $1 && -z ${JAX_LOCAL_DEVICE_IDS:-} ]] || return 0
  check_count "$1" "the number of GPUs per node"
  for ((i = 1; i < $1; i++)); do
    ids="$ids,$i"
  done
  setenv JAX_LOCAL_DEVICE_IDS "$ids"
}

# The number of entries of a comma-separated list such as CUDA_VISIBLE_DEVICES ("" -> "").
count_list() {
  local rest=$1 n=0
  [[ -n $rest ]] || return 0
  while [[ $rest == *,* ]]; do
    rest=${rest#*,}
    n=$((n + 1))
  done
  printf '%s' $((n + 1))
}

# A local config file must exist (the part before ":ARG").
check_config_file() {
  [[ -f ${CONFIG%%:*} ]] || die "config file not found: ${CONFIG%%:*}"
}
