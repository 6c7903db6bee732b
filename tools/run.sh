#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment and run a command in it.
#
#   bash tools/run.sh test [PYTEST_ARGS...]   run the test suite (not slow, not gpu)
#   bash tools/run.sh demo [ARGS...]          SynthMotion demo: RSANet vs TSN on CPU
#   bash tools/run.sh python [ARGS...]        any python command inside .venv
#   bash tools/run.sh lint                    flake8, isort, yapf (setup.cfg)
#
# The environment lives in .venv at the repository root. It is created when
# missing and reinstalled when setup.py, setup.cfg or requirements/*.txt
# (constraints.txt included) change (a hash of them is kept in
# .venv/.mmrsa-install-stamp); otherwise installation is skipped. Every pip
# install runs with `-c requirements/constraints.txt`, the tested versions.
# torch is the CPU build unless a GPU is present or MMRSA_TORCH=cuda
# (MMRSA_TORCH=cpu|cuda|auto; tools/torch_choice.py). `test` runs the test
# files in parallel processes (pytest-xdist): one per CPU, at most 4, or
# MMRSA_TEST_WORKERS (0: none).
# Nothing here reads standard input.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPO_ROOT}/.venv"
STAMP="${VENV}/.mmrsa-install-stamp"
CONSTRAINTS="${REPO_ROOT}/requirements/constraints.txt"

export PIP_NO_INPUT=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[run.sh] %s\n' "$*" >&2; }
die() { printf '[run.sh] error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

find_python() {
  local candidate
  for candidate in python3.11 python3; do
    if command -v "${candidate}" >/dev/null 2>&1; then
      echo "${candidate}"
      return 0
    fi
  done
  die 'no python3.11 or python3 on PATH'
}

install_hash() {
  # Everything that decides what gets installed (and built: the optional
  # native products in mmrsa/csrc): requirements/*.txt are
  # runtime.txt, tests.txt, mminstall.txt and the pins in constraints.txt.
  # (the glob is expanded in the repository, whatever the caller's folder)
  (
    cd "${REPO_ROOT}"
    local files=(setup.py requirements/*.txt) source
    [[ -f setup.cfg ]] && files+=(setup.cfg)
    for source in mmrsa/csrc/*.c; do
      [[ -f "${source}" ]] && files+=("${source}")
    done
    cat "${files[@]}"
  ) | sha256sum | cut -d' ' -f1
}

create_venv() {
  local python
  python="$(find_python)"
  local version
  version="$("${python}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [[ "${version}" != '3.11' ]]; then
    log "warning: ${python} is Python ${version}; the pinned stack is tested on 3.11"
  fi
  log "creating ${VENV} with ${python} (Python ${version})"
  "${python}" -m venv "${VENV}"
}

has_mmcv() {
  # True when full mmcv or mmcv-lite is already installed in the venv.
  "${VENV}/bin/python" - <<'PY'
import importlib.metadata as metadata
import importlib.util
import sys

for dist in ('mmcv', 'mmcv-lite', 'mmcv-full'):
    try:
        metadata.version(dist)
        sys.exit(0)
    except metadata.PackageNotFoundError:
        pass
sys.exit(0 if importlib.util.find_spec('mmcv') else 1)
PY
}

install_torch() {
  # The torch build: CPU unless a GPU is present (nvidia-smi) or
  # MMRSA_TORCH=cuda; a CPU wheel pip's configuration resolves first, else
  # PyTorch's CPU index, else what pip resolves (see tools/torch_choice.py).
  "${VENV}/bin/python" "${REPO_ROOT}/tools/torch_choice.py" \
    --python "${VENV}/bin/python" "${TORCH_PIN}" \
    || die "installing ${TORCH_PIN} failed"
}

torch_pin() {
  # The torch line of the constraints file, e.g. torch==2.13.0.
  local pin
  pin="$(grep -E '^torch==' "${CONSTRAINTS}" || true)"
  [[ -n "${pin}" ]] || die "no torch==VERSION line in ${CONSTRAINTS}"
  echo "${pin}"
}

install_env() {
  local started=${SECONDS}
  [[ -f "${CONSTRAINTS}" ]] || die "${CONSTRAINTS} is missing"
  PIP=("${VENV}/bin/python" -m pip)
  TORCH_PIN="$(torch_pin)"
  local torch_version="${TORCH_PIN#torch==}"
  log 'step 1/3: setuptools<81 and wheel'
  "${PIP[@]}" install --quiet -c "${CONSTRAINTS}" 'setuptools<81' wheel

  if "${VENV}/bin/python" -c 'import torch' >/dev/null 2>&1 \
      && [[ "$("${VENV}/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')" == "${torch_version}" ]]; then
    log "step 2/3: ${TORCH_PIN} already installed"
  else
    log "step 2/3: ${TORCH_PIN} (first, so no dependency can pull another build)"
    install_torch
  fi

  local extras='tests'
  if has_mmcv; then
    log 'mmcv is already installed: keeping it (mmcv-lite not added)'
  else
    extras='tests,lite'
  fi
  log "step 3/3: mmrsa in editable mode with extras [${extras}], pinned by ${CONSTRAINTS#"${REPO_ROOT}/"}"
  "${PIP[@]}" install --quiet --no-build-isolation -c "${CONSTRAINTS}" \
    -e "${REPO_ROOT}[${extras}]"

  torch_version="$("${VENV}/bin/python" -c 'import torch; print(torch.__version__)')"
  if "${PIP[@]}" list --format=freeze 2>/dev/null | grep -qi '^nvidia-'; then
    log "torch ${torch_version} is a CUDA build: nvidia-* packages are installed in ${VENV}"
  fi
  install_hash > "${STAMP}"
  log "environment ready in $((SECONDS - started)) s (torch ${torch_version})"
}

test_workers() {
  # pytest-xdist processes for `test`: MMRSA_TEST_WORKERS, else one per CPU
  # this process may use, at most 4 (each worker builds the session's
  # fixtures, e.g. a 2-epoch training run, once); 0 (no workers) on one CPU.
  # Each test uses one intra-op thread (tests/conftest.py).
  local cpus="${MMRSA_TEST_WORKERS:-}"
  if [[ -n "${cpus}" ]]; then
    [[ "${cpus}" =~ ^[0-9]+$ ]] \
      || die "MMRSA_TEST_WORKERS=${cpus}: give a number of processes (0: none)"
    echo "${cpus}"
    return 0
  fi
  # (nproc counts the CPUs of this process's affinity mask, but reports
  # OMP_NUM_THREADS instead where that is set)
  cpus="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null \
    || echo 1)"
  if (( cpus > 4 )); then
    cpus=4
  elif (( cpus < 2 )); then
    cpus=0
  fi
  echo "${cpus}"
}

ensure_env() {
  if [[ ! -x "${VENV}/bin/python" ]]; then
    create_venv
  fi
  if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "$(install_hash)" ]]; then
    return 0
  fi
  if [[ -f "${STAMP}" ]]; then
    log 'setup.py or requirements changed: refreshing the environment'
  fi
  install_env
}

main() {
  if [[ $# -eq 0 ]]; then
    usage
    exit 2
  fi
  local command="$1"
  shift
  case "${command}" in
    test)
      local workers
      workers="$(test_workers)"
      ensure_env </dev/null
      cd "${REPO_ROOT}"
      # A later `-m EXPR` or `-n N` in the arguments replaces these (e.g.
      # -m slow, -n 0).
      if [[ $# -eq 0 ]]; then
        set -- tests
      fi
      log "python -m pytest -m 'not slow and not gpu' -n ${workers} $*"
      exec "${VENV}/bin/python" -m pytest -m 'not slow and not gpu' \
        -n "${workers}" "$@"
      ;;
    demo)
      ensure_env </dev/null
      cd "${REPO_ROOT}"
      local script='demo/synthmotion_demo.py'
      log "python ${script} $*"
      exec "${VENV}/bin/python" "${script}" "$@"
      ;;
    python)
      ensure_env </dev/null
      exec "${VENV}/bin/python" "$@"
      ;;
    lint)
      ensure_env </dev/null
      cd "${REPO_ROOT}"
      # OpenMMLab's lint (the rules are in setup.cfg); fix with
      #   .venv/bin/isort PATHS && .venv/bin/yapf -i -r PATHS
      local paths=(mmrsa tools tests demo configs)
      log "flake8, isort --check-only, yapf --diff on ${paths[*]}"
      local failed=0
      "${VENV}/bin/python" -m flake8 "${paths[@]}" || failed=1
      "${VENV}/bin/python" -m isort --check-only --diff "${paths[@]}" \
        || failed=1
      "${VENV}/bin/python" -m yapf --diff --recursive "${paths[@]}" \
        || failed=1
      if [[ "${failed}" -ne 0 ]]; then
        die 'lint failed (see above)'
      fi
      log 'lint clean'
      ;;
    -h|--help|help)
      usage
      ;;
    *)
      usage
      die "unknown command '${command}' (expected test, demo, python or lint)"
      ;;
  esac
}

main "$@"
