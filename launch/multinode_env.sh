#!/usr/bin/env bash
# Usage: NODE_RANK=I NUM_NODES=N MASTER_ADDR=HOST [MASTER_PORT=P] launch/multinode_env.sh \
#          [options] [-- rrjax flags]
#
# Runs one rrjax process on this node, one of NUM_NODES that together run a config: start it
# on every node, with the same arguments and its own NODE_RANK (0 on the node at MASTER_ADDR).
# Each process sees all of its node's GPUs. The environment of a launcher (torchrun-style
# variables, or a cluster manager's) becomes rrjax's flags:
#   --distributed --coordinator_address=MASTER_ADDR:MASTER_PORT --num_processes=NUM_NODES
#   --process_id=NODE_RANK
# MASTER_ADDR must be reachable from every node at MASTER_PORT (default 29500); the workdir
# must be one directory that every node sees (a shared file system or gs://).
# With GPUS_PER_NODE (or CUDA_VISIBLE_DEVICES), JAX_LOCAL_DEVICE_IDS lists all of them: where
# JAX detects a cluster (SLURM, Open MPI) it would otherwise give each process one GPU.
# The XLA settings of launch/gpu_node.sh apply. The script becomes rrjax (exec): a SIGTERM makes
# rrjax save a checkpoint and exit 143; the same commands on all nodes resume.
#
# Options (each overrides its environment variable):
#   --node-rank I          NODE_RANK, 0 .. NUM_NODES-1
#   --num-nodes N          NUM_NODES
#   --master-addr HOST     MASTER_ADDR, the host of process 0 (the coordinator)
#   --master-port PORT     MASTER_PORT (default 29500)
#   --gpus-per-node G      GPUS_PER_NODE
#   --config FILE[:ARG]    config file (required)
#   --workdir DIR          checkpoints and outputs (required), shared by all nodes
#   --data-dir DIR         TFDS data dir (--config.data.data_dir)
#   --python PATH          interpreter with rrjax (env RRJAX_PYTHON; default: the repository's
#                          .venv/bin/python, else python3)
#   -n, --dry-run          print the commands instead of running them (also DRY_RUN=1)
#   -h, --help             this help
#
# Example, on the second of two nodes:
#   NODE_RANK=1 NUM_NODES=2 MASTER_ADDR=10.0.0.1 launch/multinode_env.sh \
#     --config configs/mask90.py --workdir /shared/runs/mask90
set -euo pipefail

PROG=multinode_env.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$REPO/launch/lib.sh"

RANK=${NODE_RANK:-}
NODES=${NUM_NODES:-}
ADDR=${MASTER_ADDR:-}
PORT=${MASTER_PORT:-29500}
GPUS=${GPUS_PER_NODE:-}
PYTHON_ARG=""
while (($#)); do
  common_option "$@"
  if ((SHIFT)); then
    shift "$SHIFT"
    continue
  fi
  case $1 in
    --node-rank | --node-rank=*) take "$@"; RANK=$VALUE ;;
    --num-nodes | --num-nodes=*) take "$@"; NODES=$VALUE ;;
    --master-addr | --master-addr=*) take "$@"; ADDR=$VALUE ;;
    --master-port | --master-port=*) take "$@"; PORT=$VALUE ;;
    --gpus-per-node | --gpus-per-node=*) take "$@"; GPUS=$VALUE ;;
    --python | --python=*) take "$@"; PYTHON_ARG=$VALUE ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1'" ;;
  esac
  shift "$SHIFT"
done

check_dry_run
require "$RANK" "NODE_RANK (or --node-rank): this node's rank, 0 .. NUM_NODES-1"
require "$NODES" "NUM_NODES (or --num-nodes): how many nodes run the config"
require "$ADDR" "MASTER_ADDR (or --master-addr): the host of NODE_RANK 0"
require_run_args
check_count "$NODES" NUM_NODES
check_count "${GPUS:-1}" "GPUS_PER_NODE"
[[ $RANK =~ ^(0|[1-9][0-9]*)$ && RANK -lt NODES ]] \
  || die "NODE_RANK must be an integer in 0 .. $((NODES - 1)), not '$RANK'"
[[ $PORT =~ ^[1-9][0-9]{0,4}$ && PORT -le 65535 ]] \
  || die "MASTER_PORT must be a port number (1 .. 65535), not '$PORT'"
check_config_file
pick_python "$PYTHON_ARG"

gpu_env
local_devices_env "${GPUS:-$(count_list "${CUDA_VISIBLE_DEVICES:-}")}"
rrjax_command "$PYTHON" --distributed "--coordinator_address=$ADDR:$PORT" \
  "--num_processes=$NODES" "--process_id=$RANK"
run_exec "${RRJAX[@]}"
