#!/usr/bin/env bash
# The student step at the paper's shapes on one accelerator: CLIP RN101 teacher and student
# (the student initialised from the teacher), 224 px, global batch 256, mask(0.9), fp32 then
# bf16 compute. Each run prints its table and `result: accelerator_mfu ...`.
#
#   bash benchmarks/accelerator_paper.sh [python]       # default: python3
#
# Logs go to $OUT (or ./runs/bench) as accelerator_<dtype>.log.
set -uo pipefail
PY=${1:-python3}
LOG=${OUT:-runs/bench}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
uptime
for dtype in float32 bfloat16; do
  echo "== $dtype"
  "$PY" benchmarks/accelerator.py --student clip_rn101 --teacher clip_rn101 --resolution 224 \
    --batch 256 --dtype "$dtype" --steps 20 --warmup 3 2>&1 | tee "$LOG/accelerator_$dtype.log"
done
uptime
