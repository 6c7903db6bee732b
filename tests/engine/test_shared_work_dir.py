# Copyright (c) mmrsa contributors. All rights reserved.
"""Two tools/train.py runs in one work dir: the second refuses at once,
naming the first (pid, host); once the first is killed (no clean-up), the
work dir is free again."""
import signal
import socket
import subprocess
import sys
import time

import pytest
from run_helpers import SMALL_RUN, tool_env
from train_helpers import TRAIN, helper_config, train

# Holds the run in its first epoch until the file `release` exists.
WAIT_HOOK = '''
import os
import time

from mmengine.hooks import Hook

from mmaction.registry import HOOKS


@HOOKS.register_module()
class WaitForFileHook(Hook):

    def __init__(self, path, timeout=120):
        self.path, self.timeout = path, timeout

    def before_train_epoch(self, runner):
        deadline = time.time() + self.timeout
        while not os.path.exists(self.path) and time.time() < deadline:
            time.sleep(0.2)
'''


@pytest.mark.slow  # three runs, about 30 s
def test_second_run_refuses_and_a_killed_run_frees_the_work_dir(
        synth_dir, tmp_path):
    release = tmp_path / 'release'
    config, env = helper_config(
        tmp_path, 'wait_hook', WAIT_HOOK,
        f'dict(type=\'WaitForFileHook\', path={str(release)!r})')
    work_dir = tmp_path / 'shared'
    first = subprocess.Popen([
        sys.executable,
        str(TRAIN), config, '--work-dir',
        str(work_dir), '--cfg-options', *SMALL_RUN
    ],
                             cwd=synth_dir,
                             env=tool_env(env),
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        lock = work_dir / 'train.lock'
        deadline = time.time() + 120
        while f'"pid": {first.pid},' not in (lock.read_text()
                                             if lock.exists() else ''):
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.2)

        started = time.time()
        second = train(synth_dir, work_dir)
        assert second.returncode == 1, second.stderr[-3000:]
        assert (f'error: {work_dir} is in use by another training run (pid '
                f'{first.pid} on host {socket.gethostname()}, started '
                ) in second.stderr, second.stderr[-3000:]
        assert time.time() - started < 60  # before any training
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGKILL)  # a crash: no clean-up
        first.wait(timeout=60)

    # the kernel released the dead run's lock: the next run trains
    third = train(synth_dir, work_dir, options=['train_cfg.max_epochs=1'])
    assert third.returncode == 0, third.stderr[-3000:]
    assert (work_dir / 'epoch_1.pth').exists()
