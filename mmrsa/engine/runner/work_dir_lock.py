# Copyright (c) mmrsa contributors. All rights reserved.
"""One training run per work dir.

Two runs started with the same ``--work-dir`` both write ``epoch_N.pth`` and
``last_checkpoint``: each replaces the other's files, ``max_keep_ckpts``
removes the other's checkpoints, and a later ``--resume`` continues a mix of
the two. :class:`WorkDirLock` lets one of them run: it holds an exclusive
``fcntl.flock`` on ``<work_dir>/train.lock`` while the run trains, and a
second run refuses at once with :class:`WorkDirBusyError`, which names the
run holding the lock (pid, host, start time, command line).

The operating system releases a ``flock`` when the process that holds it
ends, however it ends (``kill -9``, an out-of-memory kill, a node reboot for
a local disk): a crashed run never leaves the work dir locked, and nothing
has to be cleaned up by hand. The lock file itself stays (it is not the
lock, the ``flock`` on it is); its text names the last run that held it.

The lock file is the one file of a work dir that is not written through
:func:`mmrsa.fileio.atomic.write_atomic`: the lock lives on its inode, and
an atomic replacement would make a new inode, unlocked.

Data-loading workers forked while the lock is held share its open file; a
worker that outlives its run keeps the lock until it ends too.

On a file system without ``flock`` support (some network file systems) the
run goes on without the lock, with a warning.
"""
import datetime
import errno
import json
import logging
import os
import os.path as osp
import socket
import sys
from typing import Optional

from mmengine.logging import print_log

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

__all__ = ['LOCK_FILE', 'WorkDirBusyError', 'WorkDirLock', 'lock_holder']

#: The name of the lock file in the work dir.
LOCK_FILE = 'train.lock'


class WorkDirBusyError(RuntimeError):
    """Another training run holds the work dir."""


def _describe(holder: dict) -> str:
    if not holder:
        return 'a run that is starting (it has not written its pid yet)'
    parts = [f"pid {holder.get('pid')} on host {holder.get('host')}"]
    if holder.get('started'):
        parts.append(f"started {holder['started']}")
    if holder.get('command'):
        parts.append(f"command: {holder['command']}")
    return ', '.join(parts)


def lock_holder(path: str) -> dict:
    """What the run holding the lock file ``path`` wrote in it ({} when
    nothing could be read)."""
    try:
        with open(path) as f:
            holder = json.loads(f.read() or '{}')
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


class WorkDirLock:
    """An exclusive lock on a work dir for one training run.

    Args:
        work_dir (str): The run's work dir (created if missing).

    Use as a context manager, or :meth:`acquire` / :meth:`release`.
    """

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.path = osp.join(work_dir, LOCK_FILE)
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock.

        Returns:
            bool: True if it is held now; False on a file system that does
            not lock (the run goes on, with a warning).

        Raises:
            WorkDirBusyError: Another process holds it.
        """
        if self._fd is not None:
            return True
        if fcntl is None:
            print_log(
                f'No fcntl on this platform: {self.work_dir} is not locked '
                f'against a second run.',
                logger='current',
                level=logging.WARNING)
            return False
        os.makedirs(self.work_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WorkDirBusyError(
                    f'{self.work_dir} is in use by another training run '
                    f'({_describe(lock_holder(self.path))}). Two runs in '
                    f'one work dir overwrite each other\'s checkpoints: '
                    f'wait for that run to end, stop it, or pass another '
                    f'--work-dir. (The lock, {self.path}, is released by '
                    f'the system when that process ends.)') from None
            print_log(
                f'Cannot lock {self.path} ({error}): {self.work_dir} is not '
                f'protected against a second run.',
                logger='current',
                level=logging.WARNING)
            return False
        holder = dict(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.datetime.now().isoformat(timespec='seconds'),
            command=' '.join(sys.argv))
        # who holds it, for the message of a second run (the lock is the
        # flock on this very file, so it is written in place, not replaced)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        """Let the lock go (the lock file stays)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> 'WorkDirLock':
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: B902  (interpreter shutdown)
            pass
