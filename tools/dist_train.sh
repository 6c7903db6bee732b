#!/usr/bin/env bash
# Distributed training through torchrun and mmengine's `--launcher pytorch`.
#   bash tools/dist_train.sh CONFIG NUM_PROCESSES [train.py args...]
# On a machine without GPUs the processes use the gloo backend (see
# mmrsa.utils.compat); with GPUs, one process per GPU with NCCL.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: bash tools/dist_train.sh CONFIG NUM_PROCESSES [train.py args...]" >&2
  exit 2
fi
CONFIG=$1
NPROC=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHONPATH="${ROOT}:${PYTHONPATH:-}" \
exec "${PYTHON}" -m torch.distributed.run \
    --nnodes="${NNODES}" --node_rank="${NODE_RANK}" \
    --master_addr="${MASTER_ADDR}" --master_port="${PORT}" \
    --nproc_per_node="${NPROC}" \
    "${ROOT}/tools/train.py" "${CONFIG}" --launcher pytorch "$@"
