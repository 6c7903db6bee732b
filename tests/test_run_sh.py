# Copyright (c) mmrsa contributors. All rights reserved.
"""Which torch build ``tools/run.sh`` installs (``tools/torch_choice.py``),
with a stubbed pip (canned ``--dry-run --report`` JSON, recorded installs)
and a stubbed ``nvidia-smi`` on PATH, and how many pytest workers
``run.sh test`` asks for. Nothing is downloaded or installed; one test asks
the real pip of this environment, offline, with ``--dry-run``.
"""
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CHOICE = REPO_ROOT / 'tools' / 'torch_choice.py'
RUN_SH = REPO_ROOT / 'tools' / 'run.sh'
PIN = 'torch==2.13.0'
CPU_INDEX = 'https://download.pytorch.org/whl/cpu'
CUDA_DEP = ('nvidia-cudnn-cu12==9.10.2.21; platform_system == "Linux" and '
            'platform_machine == "x86_64"')

#: A stand-in for ``python -m pip``: writes the report the test asks for
#: (STUB_CONFIG for pip's configuration, STUB_INDEX with --index-url:
#: cpu, cuda, cuda-windows or fail) and records every call in STUB_LOG.
STUB_PIP = r'''
import json, os, sys
args = sys.argv[1:]
with open(os.environ['STUB_LOG'], 'a') as f:
    f.write(json.dumps(args) + '\n')
state = os.environ.get('STUB_STATE')
if args[:1] == ['list']:
    if state and os.path.exists(os.path.join(state, 'cuda')):
        print('nvidia-cudnn-cu12==9.10.2.21')
    sys.exit(0)
index = '--index-url' in args
if '--dry-run' in args:
    kind = os.environ.get('STUB_INDEX' if index else 'STUB_CONFIG', 'fail')
    if kind == 'fail':
        print('ERROR: No matching distribution found for torch==2.13.0',
              file=sys.stderr)
        sys.exit(1)
    deps = ['filelock', 'sympy>=1.13.3']
    if kind == 'cuda':
        deps.append(os.environ['CUDA_DEP'])
    if kind == 'cuda-windows':
        deps.append('nvidia-cudnn-cu12; platform_system == "Windows"')
    version = '2.13.0+cpu' if kind == 'cpu' else '2.13.0'
    url = ('https://download.pytorch.org/whl/cpu/torch.whl' if index
           else 'https://files.example/torch.whl')
    report = {'version': '1', 'install': [{
        'metadata': {'name': 'torch', 'version': version,
                     'requires_dist': deps},
        'download_info': {'url': url}}]}
    with open(args[args.index('--report') + 1], 'w') as f:
        json.dump(report, f)
    sys.exit(0)
if index and os.environ.get('STUB_INSTALL_INDEX_FAILS'):
    sys.exit(1)
if state and any(a.startswith('torch==') for a in args):
    cpu = index or os.environ.get('STUB_CONFIG') == 'cpu'
    open(os.path.join(state, 'cpu' if cpu else 'cuda'), 'w').close()
sys.exit(0)
'''


def _write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP
               | stat.S_IXOTH)
    return path


@pytest.fixture
def stubs(tmp_path):
    """(fake python whose ``-m pip`` is the stub, PATH without nvidia-smi,
    folder to put a stub nvidia-smi in)."""
    (tmp_path / 'stub_pip.py').write_text(STUB_PIP)
    python = _write_exe(
        tmp_path / 'python', '#!/usr/bin/env bash\n'
        'if [[ "$1" == -m && "$2" == pip ]]; then\n'
        f'  exec "{sys.executable}" "{tmp_path / "stub_pip.py"}" "${{@:3}}"\n'
        'fi\n'
        f'exec "{sys.executable}" "$@"\n')
    clean_path = os.pathsep.join(
        d for d in os.environ.get('PATH', '').split(os.pathsep)
        if d and not os.path.exists(os.path.join(d, 'nvidia-smi')))
    gpu_dir = tmp_path / 'gpu_bin'
    gpu_dir.mkdir()
    return python, clean_path, gpu_dir


def _env(tmp_path, clean_path, gpu_dir=None, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ('MMRSA_TORCH', )}
    env.update(
        PATH=(f'{gpu_dir}{os.pathsep}{clean_path}' if gpu_dir else clean_path),
        STUB_LOG=str(tmp_path / 'pip_calls.jsonl'),
        CUDA_DEP=CUDA_DEP)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _choose(python, env, *args):
    result = subprocess.run(
        [sys.executable,
         str(CHOICE), PIN, '--python',
         str(python), *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120)
    calls = []
    log = Path(env['STUB_LOG'])
    if log.exists():
        calls = [json.loads(line) for line in log.read_text().splitlines()]
    return result, calls


def _dry_runs(calls):
    return [c for c in calls if '--dry-run' in c]


def _installs(calls):
    return [c for c in calls if c[:1] == ['install'] and '--dry-run' not in c]


def _gpu(gpu_dir, code=0):
    _write_exe(gpu_dir / 'nvidia-smi', f'#!/bin/sh\nexit {code}\n')


# ---------------------------------------------------------------------- #
# the decision
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize('config,index,source,args', [
    ('cpu', 'fail', 'config', []),
    ('cuda', 'cpu', 'cpu-index', ['--index-url', CPU_INDEX]),
    ('fail', 'cpu', 'cpu-index', ['--index-url', CPU_INDEX]),
    ('cuda', 'fail', 'fallback', []),
    ('cuda', 'cuda', 'fallback', []),
    ('fail', 'fail', 'fallback', []),
    ('cuda-windows', 'fail', 'config', []),
])
def test_no_gpu_prefers_a_cpu_wheel(stubs, tmp_path, config, index, source,
                                    args):
    python, clean_path, _ = stubs
    env = _env(tmp_path, clean_path, STUB_CONFIG=config, STUB_INDEX=index)
    result, calls = _choose(python, env, '--plan-only')
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [source, *args]
    assert not _installs(calls)
    dry = _dry_runs(calls)
    assert '--index-url' not in dry[0] and dry[0][-1] == PIN
    if source == 'config':  # offline: PyTorch's index is never asked
        assert len(dry) == 1
    else:
        assert dry[1][dry[1].index('--index-url') + 1] == CPU_INDEX
    assert 'no GPU' in result.stderr
    if source == 'fallback':
        assert 'warning' in result.stderr and 'several GB' in result.stderr


@pytest.mark.parametrize('config,expected',
                         [('cpu', []), ('cuda', ['--index-url', CPU_INDEX])])
def test_install_runs_pip_with_the_choice(stubs, tmp_path, config, expected):
    python, clean_path, _ = stubs
    env = _env(tmp_path, clean_path, STUB_CONFIG=config, STUB_INDEX='cpu')
    result, calls = _choose(python, env)
    assert result.returncode == 0, result.stderr
    assert _installs(calls) == [['install', '--quiet', *expected, PIN]]


def test_failed_cpu_index_install_falls_back(stubs, tmp_path):
    python, clean_path, _ = stubs
    env = _env(
        tmp_path,
        clean_path,
        STUB_CONFIG='cuda',
        STUB_INDEX='cpu',
        STUB_INSTALL_INDEX_FAILS=1)
    result, calls = _choose(python, env)
    assert result.returncode == 0, result.stderr
    assert _installs(calls) == [[
        'install', '--quiet', '--index-url', CPU_INDEX, PIN
    ], ['install', '--quiet', PIN]]
    assert 'several GB' in result.stderr


def test_a_gpu_gets_the_default_build(stubs, tmp_path):
    python, clean_path, gpu_dir = stubs
    _gpu(gpu_dir)
    env = _env(
        tmp_path, clean_path, gpu_dir, STUB_CONFIG='cpu', STUB_INDEX='cpu')
    result, calls = _choose(python, env)
    assert result.returncode == 0, result.stderr
    assert not _dry_runs(calls)
    assert _installs(calls) == [['install', '--quiet', PIN]]
    assert 'GPU is present' in result.stderr


def test_a_failing_nvidia_smi_is_no_gpu(stubs, tmp_path):
    python, clean_path, gpu_dir = stubs
    _gpu(gpu_dir, code=9)  # installed tools, no driver or no device
    env = _env(
        tmp_path, clean_path, gpu_dir, STUB_CONFIG='cuda', STUB_INDEX='cpu')
    result, _ = _choose(python, env, '--plan-only')
    assert result.stdout.split() == ['cpu-index', '--index-url', CPU_INDEX]


@pytest.mark.parametrize('value,gpu,source', [
    ('cuda', False, 'requested'),
    ('CUDA', False, 'requested'),
    ('cpu', True, 'cpu-index'),
    ('auto', True, 'gpu'),
    ('', False, 'cpu-index'),
])
def test_mmrsa_torch_overrides(stubs, tmp_path, value, gpu, source):
    python, clean_path, gpu_dir = stubs
    if gpu:
        _gpu(gpu_dir)
    env = _env(
        tmp_path,
        clean_path,
        gpu_dir,
        STUB_CONFIG='cuda',
        STUB_INDEX='cpu',
        MMRSA_TORCH=value)
    result, calls = _choose(python, env, '--plan-only')
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == source
    if source in ('requested', 'gpu'):
        assert not calls  # not even a dry run
        assert 'several GB' in result.stderr


def test_a_bad_mmrsa_torch_is_refused(stubs, tmp_path):
    python, clean_path, _ = stubs
    env = _env(tmp_path, clean_path, MMRSA_TORCH='rocm')
    result, calls = _choose(python, env)
    assert result.returncode == 2 and not calls
    assert "MMRSA_TORCH='rocm'" in result.stderr
    assert 'auto, cpu, cuda' in result.stderr


def test_cuda_detection_reads_markers():
    sys.path.insert(0, str(CHOICE.parent))
    try:
        import torch_choice
    finally:
        sys.path.remove(str(CHOICE.parent))

    def item(version, deps):
        return dict(
            metadata=dict(name='torch', version=version, requires_dist=deps))

    assert torch_choice.is_cuda_build(item('2.13.0+cu126', []))
    assert not torch_choice.is_cuda_build(item('2.13.0+cpu', ['sympy']))
    assert not torch_choice.is_cuda_build(
        item('2.13.0', ['nvidia-nccl-cu12; platform_system == "Windows"']))
    assert not torch_choice.is_cuda_build(
        item('2.13.0', ['nvidia-nccl-cu12; extra == "cuda"']))
    on_linux_x86 = (platform.system(), platform.machine()) == ('Linux',
                                                               'x86_64')
    assert torch_choice.is_cuda_build(item('2.13.0',
                                           [CUDA_DEP])) == on_linux_x86


# ---------------------------------------------------------------------- #
# this machine's real pip (offline: its configuration serves a CPU wheel)
# ---------------------------------------------------------------------- #
def test_this_machines_pip_resolves_a_cpu_wheel(tmp_path):
    """What ``tools/run.sh`` does here: the dry run with pip's own
    configuration finds the CPU wheel, so PyTorch's index is never asked."""
    env = {k: v for k, v in os.environ.items() if k != 'MMRSA_TORCH'}
    env['PATH'] = os.pathsep.join(
        d for d in env.get('PATH', '').split(os.pathsep)
        if d and not os.path.exists(os.path.join(d, 'nvidia-smi')))
    result = subprocess.run(
        [sys.executable, str(CHOICE), PIN, '--plan-only'],
        env=env,
        capture_output=True,
        text=True,
        timeout=300)
    if result.stdout.split()[:1] != ['config']:
        pytest.skip('this machine\'s pip configuration serves no CPU wheel '
                    f'of {PIN}: {result.stderr[-500:]}')
    assert result.returncode == 0
    assert 'download.pytorch.org' not in result.stderr
    assert '+cpu' in result.stderr


# ---------------------------------------------------------------------- #
# tools/run.sh itself, in a copy of the repository with a fake .venv
# ---------------------------------------------------------------------- #
def _fake_repo(tmp_path, stubs):
    python, _, _ = stubs
    repo = tmp_path / 'repo'
    (repo / 'tools').mkdir(parents=True)
    (repo / 'requirements').mkdir()
    shutil.copy(RUN_SH, repo / 'tools' / 'run.sh')
    shutil.copy(CHOICE, repo / 'tools' / 'torch_choice.py')
    (repo / 'requirements' / 'constraints.txt').write_text(f'{PIN}\n')
    (repo / 'setup.py').write_text('')
    state = tmp_path / 'state'
    state.mkdir()
    venv_bin = repo / '.venv' / 'bin'
    venv_bin.mkdir(parents=True)
    # the venv's python: pip is the stub; `import torch` works once the stub
    # "installed" it (reporting its build); the rest is this Python
    _write_exe(
        venv_bin / 'python',
        textwrap.dedent(f'''\
        #!/usr/bin/env bash
        if [[ "$1" == -m && "$2" == pip ]]; then exec "{python}" "$@"; fi
        if [[ "$1" == -m && "$2" == pytest ]]; then
          echo "pytest ${{*:3}}"; exit 0
        fi
        if [[ "$1" == -c && "$2" == *"import torch"* ]]; then
          if [[ -f "{state}/cpu" ]]; then v=2.13.0+cpu
          elif [[ -f "{state}/cuda" ]]; then v=2.13.0
          else exit 1; fi
          [[ "$2" == *split* ]] && v="${{v%%+*}}"
          [[ "$2" == *print* ]] && echo "$v"
          exit 0
        fi
        exec "{sys.executable}" "$@"
        '''))
    return repo, state


def _run_sh(repo, env, *args):
    """``bash tools/run.sh ARGS`` of the fake repository, no stdin."""
    return subprocess.run(
        ['bash', str(repo / 'tools' / 'run.sh'), *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300)


@pytest.mark.parametrize('gpu,config,build', [(False, 'cpu', 'cpu'),
                                              (False, 'cuda', 'cpu'),
                                              (True, 'cpu', 'cuda')])
def test_run_sh_installs_the_chosen_build(stubs, tmp_path, gpu, config, build):
    python, clean_path, gpu_dir = stubs
    if gpu:
        _gpu(gpu_dir)
        config = 'cuda'  # what PyPI resolves
    repo, state = _fake_repo(tmp_path, stubs)
    env = _env(
        tmp_path,
        clean_path,
        gpu_dir if gpu else None,
        STUB_CONFIG=config,
        STUB_INDEX='cpu',
        STUB_STATE=state)
    result = _run_sh(repo, env, 'python', '-c', 'print("ran")')
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith('ran')
    assert 'Make a CPU wheel' not in result.stderr  # never stops for pip
    calls = [
        json.loads(line)
        for line in Path(env['STUB_LOG']).read_text().splitlines()
    ]
    torch_installs = [c for c in _installs(calls) if PIN in c]
    expected = (['--index-url', CPU_INDEX] if
                (build, config) == ('cpu', 'cuda') else [])
    assert torch_installs == [['install', '--quiet', *expected, PIN]]
    assert (state / build).exists()
    suffix = '+cpu' if build == 'cpu' else ''
    assert 'environment ready' in result.stderr
    assert f'(torch 2.13.0{suffix})' in result.stderr
    if build == 'cuda':
        assert 'is a CUDA build' in result.stderr
    # a second run installs nothing
    before = len(calls)
    again = _run_sh(repo, env, 'python', '-c', 'pass')
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(Path(env['STUB_LOG']).read_text().splitlines()) == before


@pytest.mark.parametrize('cpus,variable,workers', [('8', None, '4'),
                                                   ('2', None, '2'),
                                                   ('1', None, '0'),
                                                   ('8', '0', '0'),
                                                   ('1', '3', '3')])
def test_run_sh_test_runs_files_in_parallel(stubs, tmp_path, cpus, variable,
                                            workers):
    """``run.sh test`` gives pytest ``-n``: one process per CPU (nproc,
    stubbed here, without OMP_NUM_THREADS), at most 4, none on one CPU, or
    MMRSA_TEST_WORKERS; the caller's arguments come after (a later ``-n``
    or ``-m`` wins)."""
    _, clean_path, _ = stubs
    repo, state = _fake_repo(tmp_path, stubs)
    # GNU nproc answers OMP_NUM_THREADS where it is set; run.sh unsets it
    bin_dir = tmp_path / 'nproc_bin'
    bin_dir.mkdir()
    _write_exe(bin_dir / 'nproc',
               f'#!/bin/sh\necho "${{OMP_NUM_THREADS:-{cpus}}}"\n')
    extra = {'MMRSA_TEST_WORKERS': variable} if variable else {}
    env = _env(
        tmp_path,
        f'{bin_dir}{os.pathsep}{clean_path}',
        STUB_CONFIG='cpu',
        STUB_STATE=state,
        OMP_NUM_THREADS='1',
        **extra)
    if variable is None:
        env.pop('MMRSA_TEST_WORKERS', None)  # the caller's setting
    result = _run_sh(repo, env, 'test', '-x', 'tests/a.py')
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == (
        f"pytest -m not slow and not gpu -n {workers} -x tests/a.py")


def test_run_sh_test_names_a_bad_worker_count(stubs, tmp_path):
    _, clean_path, _ = stubs
    repo, state = _fake_repo(tmp_path, stubs)
    env = _env(
        tmp_path,
        clean_path,
        STUB_CONFIG='cpu',
        STUB_STATE=state,
        MMRSA_TEST_WORKERS='auto')
    result = _run_sh(repo, env, 'test')
    assert result.returncode != 0
    assert 'pytest' not in result.stdout
    assert 'step 1/3' not in result.stderr  # refused before any install
    assert ('MMRSA_TEST_WORKERS=auto: give a number of processes (0: none)'
            in result.stderr)
