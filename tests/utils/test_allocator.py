# Copyright (c) mmrsa contributors. All rights reserved.
"""keep_freed_memory: freed blocks are reused instead of page-faulted anew.

Each check runs in a fresh interpreter: the tuning is process-wide.
"""
import os
import platform
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))

# allocate and touch 64 MiB a few times; print the minor page faults of
# the last round (and whether the tuning is on)
SCRIPT = r'''
import resource, sys
sys.path.insert(0, {root!r})
import torch
from mmrsa.utils.allocator import keep_freed_memory
on = keep_freed_memory()
assert keep_freed_memory() == on  # idempotent
def touch():
    t = torch.empty(16 * 2**20)  # 64 MiB
    t.fill_(1.0)
    del t
for _ in range(3):  # the heap settles within a couple of rounds
    touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(on, after - before)
'''

glibc_linux = pytest.mark.skipif(
    platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
    reason='the tuning acts on glibc malloc only')


def _run(env_value):
    env = dict(os.environ)
    env.pop('MMRSA_KEEP_FREED_MEMORY', None)
    if env_value is not None:
        env['MMRSA_KEEP_FREED_MEMORY'] = env_value
    out = subprocess.run(
        [sys.executable, '-c', SCRIPT.format(root=ROOT)],
        capture_output=True,
        text=True,
        env=env,
        check=True).stdout.split()
    return out[0] == 'True', int(out[1])


@glibc_linux
def test_freed_memory_is_reused_without_page_faults():
    on, faults = _run(None)
    assert on
    # 64 MiB are 16384 pages of 4 KiB: none of them is faulted in again
    assert faults < 1000


@glibc_linux
def test_switched_off_by_environment():
    on, faults = _run('0')
    assert not on
    # glibc's default: the big block is mapped afresh, every page faults
    assert faults > 8000
