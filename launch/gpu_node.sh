#!/usr/bin/env bash
# Usage: launch/gpu_node.sh [options] [-- rrjax flags]
#
# Runs an rrjax config on one machine: a single process that sees all of its GPUs (or those of
# --gpus); rrjax shards every batch over them (config.mesh.data = -1). No --distributed: one
# process needs no coordinator. Before it starts rrjax it sets, unless already set:
#   XLA_PYTHON_CLIENT_MEM_FRACTION=0.90   JAX's default 0.75 leaves a quarter of each GPU unused
#   XLA_FLAGS+=--xla_gpu_enable_latency_hiding_scheduler=true
#                                         overlaps the gradient all-reduce with compute
# The script becomes rrjax (exec): a SIGTERM reaches rrjax, which saves a checkpoint and exits
# 143; the same command resumes. Relative paths are taken from the current directory.
#
# Options:
#   --config FILE[:ARG]  config file (required), e.g. configs/mask90.py
#   --workdir DIR        checkpoints and outputs (required): a local path or gs://
#   --data-dir DIR       TFDS data dir (--config.data.data_dir); default: the config's
#   --gpus LIST          CUDA_VISIBLE_DEVICES, e.g. 0,1,2,3 (default: all GPUs)
#   --python PATH        interpreter with rrjax and jax[cuda12] installed (env RRJAX_PYTHON;
#                        default: the repository's .venv/bin/python, else python3)
#   -n, --dry-run        print the commands instead of running them (also DRY_RUN=1)
#   -h, --help           this help
#
# Example:
#   launch/gpu_node.sh --config configs/mask90.py --workdir runs/mask90 \
#     --data-dir /data/tensorflow_datasets
set -euo pipefail

PROG=gpu_node.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$REPO/launch/lib.sh"

GPUS=""
PYTHON_ARG=""
while (($#)); do
  common_option "$@"
  if ((SHIFT)); then
    shift "$SHIFT"
    continue
  fi
  case $1 in
    --gpus | --gpus=*) take "$@"; GPUS=$VALUE ;;
    --python | --python=*) take "$@"; PYTHON_ARG=$VALUE ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1'" ;;
  esac
  shift "$SHIFT"
done

check_dry_run
require_run_args
check_config_file
[[ -z $GPUS || $GPUS =~ ^[0-9]+(,[0-9]+)*$ ]] \
  || die "--gpus must be a list like 0,1,2,3, not '$GPUS'"
pick_python "$PYTHON_ARG"

gpu_env
[[ -z $GPUS ]] || setenv CUDA_VISIBLE_DEVICES "$GPUS"
rrjax_command "$PYTHON"
run_exec "${RRJAX[@]}"
