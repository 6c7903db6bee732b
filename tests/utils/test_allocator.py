# Copyright (c) mmrsa contributors. All rights reserved.
"""keep_freed_memory: freed blocks stay in the heap for reuse.

What the tuning controls is where glibc puts a large block and whether it
gives the block back to the system on ``free``; glibc reports both through
``mallinfo2`` (``hblkhd``: bytes in ``mmap``-ed blocks; ``fordblks``: free
bytes the heap keeps). The time this saves (page faults avoided) depends on
the kernel and is measured by ``tools/analysis_tools/benchmark_rsa.py``,
not asserted here.

Each check runs in a fresh interpreter: the tuning is process-wide.
"""
import os
import platform
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))

# allocate a 64 MiB tensor, free it; print whether the tuning is on and
# the MiB glibc reports mapped on their own / kept free, held and freed
SCRIPT = r'''
import ctypes, sys
sys.path.insert(0, {root!r})
import torch
from mmrsa.utils.allocator import keep_freed_memory
on = keep_freed_memory()
assert keep_freed_memory() == on  # idempotent
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',
        'fsmblks', 'uordblks', 'fordblks', 'keepcost')]
libc = ctypes.CDLL('libc.so.6')
libc.mallinfo2.restype = Mallinfo2
def mib():
    info = libc.mallinfo2()
    return info.hblkhd >> 20, info.fordblks >> 20
before = mib()
t = torch.empty(16 * 2**20)  # 64 MiB
t.fill_(1.0)
held = mib()
del t
freed = mib()
print(on, *before, *held, *freed)
'''

glibc_linux = pytest.mark.skipif(
    platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc'
    or tuple(map(int,
                 platform.libc_ver()[1].split('.')[:2])) < (2, 33),
    reason='the tuning acts on glibc malloc only (mallinfo2: glibc 2.33+)')


def _run(env_value, env_extra=None):
    env = dict(os.environ)
    env.pop('MMRSA_KEEP_FREED_MEMORY', None)
    env.pop('LD_PRELOAD', None)
    if env_value is not None:
        env['MMRSA_KEEP_FREED_MEMORY'] = env_value
    env.update(env_extra or {})
    out = subprocess.run(
        [sys.executable, '-c', SCRIPT.format(root=ROOT)],
        capture_output=True,
        text=True,
        env=env,
        check=True).stdout.split()
    on = out[0] == 'True'
    mapped_before, _, mapped_held, _, mapped_freed, kept_freed = map(
        int, out[1:])
    return on, mapped_held - mapped_before, mapped_freed - mapped_before, \
        kept_freed


@glibc_linux
def test_freed_memory_stays_in_the_heap():
    on, mapped_held, mapped_freed, kept_freed = _run(None)
    assert on
    # the 64 MiB block comes from the heap, not from a mapping of its own
    assert mapped_held < 64, mapped_held
    # and after free the heap keeps it for the next step
    assert kept_freed >= 64, kept_freed
    assert mapped_freed <= 0


@glibc_linux
def test_switched_off_by_environment():
    on, mapped_held, mapped_freed, kept_freed = _run('0')
    assert not on
    # glibc's default: the big block is mapped on its own and unmapped on
    # free, so the next step maps (and page-faults) it afresh
    assert mapped_held >= 64, mapped_held
    assert mapped_freed < 64, mapped_freed
    assert kept_freed < 64, kept_freed


@glibc_linux
@pytest.mark.skipif(shutil.which('cc') is None, reason='needs a C compiler')
def test_off_when_another_malloc_is_preloaded(tmp_path):
    # a preloaded malloc (as jemalloc or tcmalloc would be) takes the global
    # symbol: tuning glibc's heap would tune a heap nobody allocates from
    source = tmp_path / 'shim.c'
    source.write_text('#include <stddef.h>\n'
                      'extern void *__libc_malloc(size_t);\n'
                      'void *malloc(size_t n) { return __libc_malloc(n); }\n')
    shim = tmp_path / 'libshim.so'
    subprocess.run(
        ['cc', '-shared', '-fPIC', '-o',
         str(shim), str(source)], check=True)
    on, *_ = _run(None, {'LD_PRELOAD': str(shim)})
    assert not on
