# Copyright (c) mmrsa contributors. All rights reserved.
"""Choose and install the torch build ``tools/run.sh`` sets up.

On PyPI, ``torch==2.13.0`` for Linux is the CUDA build (several GB of
``nvidia-*`` libraries); the CPU build comes from PyTorch's own index. The
choice, with no pip setting to edit:

1. a GPU (``nvidia-smi`` on PATH runs) or ``MMRSA_TORCH=cuda``: the default
   build, as pip resolves it (CUDA);
2. ``MMRSA_TORCH=cpu`` or no GPU:

   a. the CPU wheel that pip's current configuration resolves, if it does
      (``pip install --dry-run --report``; a local wheel folder or mirror,
      works offline);
   b. else PyTorch's CPU index (``--index-url
      https://download.pytorch.org/whl/cpu``, as PyTorch's install selector
      says);
   c. else, or if that install fails, what pip resolves, with a warning
      that it is a CUDA build of several GB.

Run by ``tools/run.sh`` with the environment's Python (standard library and
pip only)::

    python tools/torch_choice.py torch==2.13.0 [--python PY] [--plan-only]

``--plan-only`` prints the choice (``<source> <pip args>``) and installs
nothing. Log lines go to standard error.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Callable, List, NamedTuple, Optional, Sequence

#: PyTorch's index of CPU wheels (its install selector's command)
CPU_INDEX = 'https://download.pytorch.org/whl/cpu'
#: the values of the environment variable that overrides the choice
CHOICES = ('auto', 'cpu', 'cuda')
ENV = 'MMRSA_TORCH'
CUDA_SIZE = 'a CUDA build with several GB of nvidia-* libraries'


def log(message: str) -> None:
    print(f'[run.sh] {message}', file=sys.stderr, flush=True)


class Plan(NamedTuple):
    """How torch is installed: extra pip arguments and where it comes
    from (``gpu``, ``requested``, ``config``, ``cpu-index``,
    ``fallback``)."""
    source: str
    pip_args: List[str]


def gpu_present() -> bool:
    """Whether ``nvidia-smi`` is on PATH and runs (a driver and a GPU)."""
    exe = shutil.which('nvidia-smi')
    if exe is None:
        return False
    try:
        return subprocess.run([exe],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL,
                              timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def wanted_build(value: Optional[str], gpu: Callable[[], bool]) -> str:
    """``'cuda'`` or ``'cpu'`` from ``MMRSA_TORCH`` (``auto`` when unset:
    CUDA when ``gpu()``).

    Raises:
        ValueError: ``value`` is not one of :data:`CHOICES`.
    """
    value = (value or 'auto').strip().lower()
    if value not in CHOICES:
        raise ValueError(f'{ENV}={value!r}: expected one of '
                         f'{", ".join(CHOICES)}')
    if value == 'auto':
        return 'cuda' if gpu() else 'cpu'
    return value


def _marker_applies(requirement: str) -> bool:
    """Whether a ``Requires-Dist`` line applies on this machine (no extra
    asked for); ``True`` when it cannot be told."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.requirements import Requirement
        except ImportError:
            return True
    try:
        req = Requirement(requirement)
    except Exception:  # noqa: B902  an unparsable line counts
        return True
    return req.marker is None or req.marker.evaluate({'extra': ''})


def is_cuda_build(item: dict) -> bool:
    """Whether an ``install`` item of a pip report is a CUDA build of torch:
    a ``+cuXXX`` version or ``nvidia-*`` requirements for this machine."""
    meta = item['metadata']
    if '+cu' in meta['version']:
        return True
    return any(
        req.startswith('nvidia-') and _marker_applies(req)
        for req in meta.get('requires_dist') or [])


def resolve(python: Sequence[str], pin: str,
            extra: Sequence[str] = ()) -> Optional[dict]:
    """The torch item of ``pip install --dry-run --report`` for ``pin``,
    or ``None`` when pip cannot resolve it."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, 'report.json')
        result = subprocess.run([
            *python, '-m', 'pip', 'install', '--quiet', '--dry-run',
            '--ignore-installed', '--no-deps', '--report', report, *extra, pin
        ],
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE,
                                text=True)
        if result.returncode != 0 or not os.path.isfile(report):
            lines = result.stderr.strip().splitlines()
            log(f'pip cannot resolve {pin} {" ".join(extra)}'.rstrip() +
                (f': {lines[-1]}' if lines else ''))
            return None
        with open(report) as f:
            items = json.load(f).get('install', [])
    for item in items:
        if item['metadata']['name'].lower() == 'torch':
            return item
    return None


def _where(item: dict) -> str:
    return (f"torch=={item['metadata']['version']} from "
            f"{item.get('download_info', {}).get('url', '?')}")


def choose(pin: str,
           python: Sequence[str],
           env_value: Optional[str],
           gpu: Callable[[], bool] = gpu_present) -> Plan:
    """The plan for ``pin`` (see the module docstring)."""
    build = wanted_build(env_value, gpu)
    if build == 'cuda':
        why = (f'{ENV}=cuda' if (env_value or '').strip().lower() == 'cuda'
               else 'a GPU is present (nvidia-smi)')
        log(f'{why}: installing {pin} as pip resolves it (the default '
            f'build: {CUDA_SIZE})')
        return Plan('gpu' if why.startswith('a GPU') else 'requested', [])
    why = (f'{ENV}=cpu' if (env_value or '').strip().lower() == 'cpu' else
           'no GPU (nvidia-smi missing or failing)')
    log(f'{why}: looking for a CPU build of {pin}')
    item = resolve(python, pin)
    if item is not None and not is_cuda_build(item):
        log(f'the CPU build that pip\'s configuration resolves: '
            f'{_where(item)}')
        return Plan('config', [])
    if item is not None:
        log(f'pip\'s configuration resolves {_where(item)}, a CUDA build; '
            f'trying PyTorch\'s CPU index {CPU_INDEX}')
    index_args = ['--index-url', CPU_INDEX]
    item = resolve(python, pin, [*index_args, '--timeout', '60'])
    if item is not None and not is_cuda_build(item):
        log(f'the CPU build of PyTorch\'s CPU index: {_where(item)}')
        return Plan('cpu-index', index_args)
    log(f'warning: no CPU build of {pin} found (pip\'s configuration nor '
        f'{CPU_INDEX}); installing what pip resolves: {CUDA_SIZE}')
    return Plan('fallback', [])


def install(pin: str, python: Sequence[str], plan: Plan) -> int:
    """Install ``pin`` as ``plan`` says; a failed install from the CPU index
    falls back to what pip resolves. Returns pip's exit code."""
    command = [*python, '-m', 'pip', 'install', '--quiet']
    code = subprocess.run([*command, *plan.pip_args, pin],
                          stdin=subprocess.DEVNULL).returncode
    if code != 0 and plan.pip_args:
        log(f'warning: installing {pin} from {CPU_INDEX} failed; installing '
            f'what pip resolves: {CUDA_SIZE}')
        code = subprocess.run([*command, pin],
                              stdin=subprocess.DEVNULL).returncode
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description='Choose and install the torch build (CPU unless a GPU '
        f'is present or {ENV}=cuda).')
    parser.add_argument(
        'pin', help='the torch requirement, e.g. '
        'torch==2.13.0')
    parser.add_argument(
        '--python',
        default=sys.executable,
        help='the Python whose pip installs torch (defaults to this one)')
    parser.add_argument(
        '--plan-only',
        action='store_true',
        help='print "<source> <pip args>" and install nothing')
    args = parser.parse_args(argv)
    python = [args.python]
    try:
        plan = choose(args.pin, python, os.environ.get(ENV))
    except ValueError as err:
        log(f'error: {err}')
        return 2
    if args.plan_only:
        print(' '.join([plan.source, *plan.pip_args]))
        return 0
    return install(args.pin, python, plan)


if __name__ == '__main__':
    sys.exit(main())
