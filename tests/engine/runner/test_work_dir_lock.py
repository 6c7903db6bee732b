# Copyright (c) mmrsa contributors. All rights reserved.
"""One training run per work dir: a second run refuses at once, naming the
first (pid, host); a killed run leaves no lock behind."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmrsa.engine.runner import LOCK_FILE, WorkDirBusyError, WorkDirLock

LOCK_MODULE = (
    Path(__file__).resolve().parents[3] / 'mmrsa' / 'engine' / 'runner' /
    'work_dir_lock.py')

# Holds the lock of argv[1] until killed (loads the module by path: no
# mmaction import, so it starts fast).
HOLDER = '''
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location('work_dir_lock', sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
lock = module.WorkDirLock(sys.argv[1])
lock.acquire()
print('locked', flush=True)
time.sleep(120)
'''


def test_second_lock_is_refused_naming_the_holder(tmp_path):
    with WorkDirLock(str(tmp_path)) as first:
        assert first.held
        with pytest.raises(WorkDirBusyError) as error:
            WorkDirLock(str(tmp_path)).acquire()
    message = str(error.value)
    assert f'pid {os.getpid()} on host {socket.gethostname()}' in message
    assert str(tmp_path) in message and '--work-dir' in message
    # released: the next run takes it
    with WorkDirLock(str(tmp_path)) as again:
        assert again.held
    assert (tmp_path / LOCK_FILE).exists()  # the file stays, unlocked


def test_a_killed_holder_leaves_no_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, '-c', HOLDER,
         str(tmp_path),
         str(LOCK_MODULE)],
        stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(WorkDirBusyError, match=f'pid {holder.pid} '):
            WorkDirLock(str(tmp_path)).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no clean-up
        holder.wait(timeout=30)
    deadline = time.time() + 10
    while True:  # the kernel releases the lock with the process
        try:
            lock = WorkDirLock(str(tmp_path))
            lock.acquire()
            break
        except WorkDirBusyError:
            assert time.time() < deadline
            time.sleep(0.1)
    assert lock.held
    lock.release()


def test_a_training_run_refuses_a_locked_work_dir(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'hooks'))
    from toy_runner import build_runner
    runner = build_runner(tmp_path, max_epochs=1)
    with WorkDirLock(str(tmp_path)):
        with pytest.raises(WorkDirBusyError, match=f'pid {os.getpid()}'):
            runner.train()
    assert not (tmp_path / 'epoch_1.pth').exists()
    build_runner(tmp_path, max_epochs=1).train()  # free again
    assert (tmp_path / 'epoch_1.pth').exists()
