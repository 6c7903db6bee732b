#!/usr/bin/env bash
# Distributed testing through torchrun and mmengine's `--launcher pytorch`.
#   bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [test.py args...]
# On a machine without GPUs the processes use the gloo backend (see
# mmrsa.utils.compat); with GPUs, one process per GPU with NCCL.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [test.py args...]" >&2
  exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
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
    "${ROOT}/tools/test.py" "${CONFIG}" "${CHECKPOINT}" --launcher pytorch "$@"
