#!/usr/bin/env bash
# Training on a Slurm cluster, one task per GPU, mmengine `--launcher slurm`.
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] [MASTER_PORT=...] \
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args...]
# or, as a batch job that requeues itself when pre-empted:
#   sbatch -p PARTITION --gres=gpu:8 --ntasks=8 --ntasks-per-node=8 \
#       tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
#
# Pre-emption: Slurm sends SIGTERM (and, with the `--signal` below, SIGUSR1
# 90 s before the end); with PreemptionHook in the config the run saves
# preempted_iter_<N>.pth and exits with code 75. Inside a batch job the
# script then runs `scontrol requeue $SLURM_JOB_ID`; the requeued job runs
# this script again and resumes (`--resume` is added when
# SLURM_RESTART_COUNT > 0). Outside a batch job it exits with 75: run it
# again with --resume. Give a WORK_DIR for that: the requeued run must find
# the same one.
#SBATCH --requeue
#SBATCH --signal=USR1@90
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args...]" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
WORK_DIR_ARGS=()
if [[ $# -gt 0 && $1 != -* ]]; then
  WORK_DIR_ARGS=(--work-dir "$1")
  shift
fi
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
PYTHON=${PYTHON:-python}
PREEMPTED_EXIT_CODE=75  # mmrsa.engine.hooks.PREEMPTED_EXIT_CODE
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# the rendezvous port of mmengine's slurm launcher (29500 when unset, which
# two jobs on one node would share): one per job
if [[ -z ${MASTER_PORT:-} ]]; then
  MASTER_PORT=$((20000 + ${SLURM_JOB_ID:-$$} % 20000))
fi
export MASTER_PORT
RESUME_ARGS=()
if [[ ${SLURM_RESTART_COUNT:-0} -gt 0 && " $* " != *" --resume"* ]]; then
  RESUME_ARGS=(--resume)  # a requeued job continues its run
fi
SIGNAL_ARGS=()
if [[ -z ${SLURM_JOB_ID:-} ]]; then
  SIGNAL_ARGS=(--signal=USR1@90)  # not a batch job: ask srun for it
fi
# Slurm signals the batch shell too: outlive the signal (a trap, unlike an
# ignored signal, is not inherited) to requeue once the run has saved
trap 'echo "slurm_train.sh: got SIGTERM; waiting for the run to save" >&2' TERM
trap 'echo "slurm_train.sh: got SIGUSR1; waiting for the run to save" >&2' USR1
rc=0
# shellcheck disable=SC2086
PYTHONPATH="${ROOT}:${PYTHONPATH:-}" \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres=gpu:"${GPUS_PER_NODE}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    "${SIGNAL_ARGS[@]}" \
    ${SRUN_ARGS} \
    "${PYTHON}" -u "${ROOT}/tools/train.py" "${CONFIG}" "${WORK_DIR_ARGS[@]}" \
    --launcher slurm "${RESUME_ARGS[@]}" "$@" || rc=$?
if [[ ${rc} -eq ${PREEMPTED_EXIT_CODE} ]]; then
  if [[ -n ${SLURM_JOB_ID:-} ]]; then
    echo "slurm_train.sh: pre-empted; requeueing job ${SLURM_JOB_ID}" >&2
    scontrol requeue "${SLURM_JOB_ID}"
    exit 0
  fi
  echo "slurm_train.sh: pre-empted; run again with --resume to continue" >&2
fi
exit "${rc}"
