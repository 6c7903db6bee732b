# Copyright (c) mmrsa contributors. All rights reserved.
"""Keep freed CPU memory in the process (glibc ``malloc`` tuning).

A training step allocates and frees the same large activation tensors every
iteration. With its default settings glibc serves blocks above a (dynamic)
threshold with ``mmap`` and unmaps them on ``free``, and returns the top of
the heap to the system once more than ``M_TRIM_THRESHOLD`` bytes are free
there. Either way the next step gets fresh pages and pays one page fault per
4 KiB on first touch, which on virtual machines costs as much as the
arithmetic of a small layer. RSA layers allocate more (and more short-lived)
tensors than a convolution, so they suffer most: on a 2-core VM this tuning
took an RSANet-R50 training step from about 1.56x to about 1.34x the time of
a TSN-R50 step measured beside it (TSN itself unchanged).

:func:`keep_freed_memory` switches ``mmap`` allocations off and never trims
the heap, so freed blocks are reused, as PyTorch's CUDA caching allocator
does on GPUs. The price is that the resident memory stays at its peak.
It is applied by ``tools/train.py``, ``tools/test.py`` and the benchmark
when they run on CPU; ``MMRSA_KEEP_FREED_MEMORY=0`` switches it off.
Alternatives with the same effect are preloading jemalloc or tcmalloc, or
setting ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1`` in the
environment before Python starts.
"""
import ctypes
import ctypes.util
import os
import platform

__all__ = ['keep_freed_memory']

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: M_TRIM_THRESHOLD value that disables trimming (mallopt(3))
_NEVER_TRIM = -1

_applied = False


def _glibc_serves_malloc(libc: ctypes.CDLL) -> bool:
    """Whether the process's ``malloc`` is the C library's own.

    An allocator preloaded before the C library (``LD_PRELOAD``) takes the
    global ``malloc`` symbol; glibc's ``mallopt`` then tunes a heap that
    nobody allocates from.
    """
    try:
        process_malloc = ctypes.CDLL(None).malloc
    except AttributeError:
        return False
    as_address = ctypes.c_void_p
    return (ctypes.cast(process_malloc, as_address).value == ctypes.cast(
        libc.malloc, as_address).value)


def keep_freed_memory() -> bool:
    """Tune glibc ``malloc`` to keep freed memory for reuse.

    Idempotent. Does nothing (and returns False) when the C library is not
    glibc, when ``MMRSA_KEEP_FREED_MEMORY`` is ``0``, when another
    allocator (jemalloc, tcmalloc through ``LD_PRELOAD``) serves ``malloc``
    in place of glibc's, or when ``mallopt`` refuses a setting.

    Returns:
        bool: Whether the tuning is in effect.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get('MMRSA_KEEP_FREED_MEMORY', '1') == '0':
        return False
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not _glibc_serves_malloc(libc):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success
    _applied = bool(
        mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return _applied
