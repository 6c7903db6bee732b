# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/slurm_train.sh requeues a pre-empted job (exit code 75 of
PreemptionHook), also when Slurm signals the batch shell, resumes a requeued
job, exports a per-job MASTER_PORT; tools/slurm_test.sh launches
tools/test.py. ``srun`` and ``scontrol`` are stand-ins that record what
they were given."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from run_helpers import REPO_ROOT

from mmrsa.engine.hooks import PREEMPTED_EXIT_CODE

TRAIN_SH = REPO_ROOT / 'tools' / 'slurm_train.sh'
TEST_SH = REPO_ROOT / 'tools' / 'slurm_test.sh'

FAKE_SRUN = '''#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_LOG/srun.args"
echo "$MASTER_PORT" > "$FAKE_LOG/srun.port"
touch "$FAKE_LOG/srun.started"
sleep "${FAKE_SRUN_SLEEP:-0}"
exit "${FAKE_SRUN_RC:-0}"
'''
FAKE_SCONTROL = '''#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG/scontrol.calls"
'''


@pytest.fixture
def fake_slurm(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('srun', FAKE_SRUN), ('scontrol', FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith('SLURM_') and k != 'MASTER_PORT'
    }
    env.update(
        PATH=f'{bin_dir}{os.pathsep}{env["PATH"]}', FAKE_LOG=str(tmp_path))
    return tmp_path, env


def _run(script, args, env, **extra_env):
    return subprocess.run(['bash', str(script), *args],
                          env=dict(env, **extra_env),
                          capture_output=True,
                          text=True,
                          timeout=60)


def _srun_args(log: Path):
    return (log / 'srun.args').read_text().splitlines()


def _scontrol(log: Path):
    calls = log / 'scontrol.calls'
    return calls.read_text().splitlines() if calls.exists() else []


def test_sbatch_directives_come_before_the_first_command():
    header = []
    for line in TRAIN_SH.read_text().splitlines()[1:]:
        if line.strip() and not line.startswith('#'):
            break
        header.append(line)
    assert '#SBATCH --requeue' in header
    assert '#SBATCH --signal=USR1@90' in header


def test_preempted_batch_job_requeues_itself(fake_slurm):
    log, env = fake_slurm
    result = _run(
        TRAIN_SH, ['part', 'job', 'cfg.py', 'work'],
        env,
        SLURM_JOB_ID='4242',
        FAKE_SRUN_RC=str(PREEMPTED_EXIT_CODE))
    assert result.returncode == 0, result.stderr
    assert _scontrol(log) == ['requeue 4242']
    assert 'pre-empted; requeueing job 4242' in result.stderr
    args = _srun_args(log)
    assert args[args.index('--work-dir') + 1] == 'work'
    assert args[-2:] == ['--launcher', 'slurm']
    assert not any(a.startswith('--signal') for a in args)  # sbatch's
    assert (log / 'srun.port').read_text().strip() == str(20000 + 4242)


def test_requeued_job_resumes(fake_slurm):
    log, env = fake_slurm
    result = _run(
        TRAIN_SH, ['part', 'job', 'cfg.py', 'work', '--amp'],
        env,
        SLURM_JOB_ID='4242',
        SLURM_RESTART_COUNT='1')
    assert result.returncode == 0, result.stderr
    assert _srun_args(log)[-4:] == ['--launcher', 'slurm', '--resume', '--amp']
    assert _scontrol(log) == []


def test_signal_to_the_batch_shell_still_requeues(fake_slurm):
    """Slurm signals the batch script as well as the run; the script waits
    for the run to save and exit 75, then requeues."""
    log, env = fake_slurm
    script = subprocess.Popen(
        ['bash', str(TRAIN_SH), 'p', 'j', 'cfg.py'],
        env=dict(
            env,
            SLURM_JOB_ID='7',
            FAKE_SRUN_SLEEP='2',
            FAKE_SRUN_RC=str(PREEMPTED_EXIT_CODE)),
        stderr=subprocess.PIPE,
        text=True)
    deadline = time.time() + 30
    while not (log / 'srun.started').exists():
        assert time.time() < deadline
        time.sleep(0.05)
    script.send_signal(signal.SIGTERM)
    _, stderr = script.communicate(timeout=30)
    assert script.returncode == 0, stderr
    assert 'got SIGTERM; waiting for the run to save' in stderr
    assert _scontrol(log) == ['requeue 7']


def test_outside_a_batch_job(fake_slurm):
    log, env = fake_slurm
    result = _run(
        TRAIN_SH, ['part', 'job', 'cfg.py'],
        env,
        FAKE_SRUN_RC=str(PREEMPTED_EXIT_CODE))
    assert result.returncode == PREEMPTED_EXIT_CODE
    assert 'run again with --resume' in result.stderr
    assert '--signal=USR1@90' in _srun_args(log)
    assert _scontrol(log) == []
    # another failure is passed on, never requeued
    result = _run(
        TRAIN_SH, ['part', 'job', 'cfg.py'],
        env,
        FAKE_SRUN_RC='1',
        SLURM_JOB_ID='9')
    assert result.returncode == 1 and _scontrol(log) == []


def test_slurm_test_script(fake_slurm):
    log, env = fake_slurm
    result = _run(
        TEST_SH, ['part', 'job', 'cfg.py', 'model.pth', '--dump', 'p.pkl'],
        env,
        GPUS='2',
        GPUS_PER_NODE='2',
        MASTER_PORT='29999')
    assert result.returncode == 0, result.stderr
    args = _srun_args(log)
    assert args[:2] == ['-p', 'part'] and '--ntasks=2' in args
    tool = args.index(str(REPO_ROOT / 'tools' / 'test.py'))
    assert args[tool + 1:] == [
        'cfg.py', 'model.pth', '--launcher', 'slurm', '--dump', 'p.pkl'
    ]
    assert (log / 'srun.port').read_text().strip() == '29999'
    assert _run(TEST_SH, ['part', 'job', 'cfg.py'], env).returncode == 2
