# Copyright (c) mmrsa contributors. All rights reserved.
"""Writing files: one atomic writer and one overwrite rule for every tool
and hook.

:func:`write_atomic` writes through a temporary file in the destination's
folder, flushes and ``fsync``\\ s it, gives it the mode an ordinary file
gets under the process umask, and renames it over the destination
(``os.replace`` is atomic on POSIX and Windows): a crash at any point leaves
either the previous file or the new one, never a partial one. The temporary
file is named ``.<name>.<random>.tmp``; :func:`remove_stale_temporaries`
removes the ones a killed process left behind.

:func:`refuse_existing` is the one "do not destroy a file" rule: it raises
:class:`OverwriteRefusedError` (a ``FileExistsError``) naming the file and
the option that allows replacing it.
"""
import glob
import os
import os.path as osp
import tempfile
from typing import IO, Callable, List, Optional

__all__ = [
    'OverwriteRefusedError', 'refuse_existing', 'write_atomic',
    'write_bytes_atomic', 'temporary_name_pattern', 'remove_stale_temporaries'
]


class OverwriteRefusedError(FileExistsError):
    """Writing would replace a file the user did not ask to replace."""


def refuse_existing(path: str,
                    force: bool = False,
                    *,
                    option: str = '--force',
                    what: str = '') -> None:
    """Refuse to write ``path`` when something is there, unless ``force``.

    A folder is refused even with ``force``: it is never replaced by a file.

    Args:
        path (str): The file about to be written.
        force (bool): The user asked to replace an existing file. Defaults
            to False.
        option (str): How the user asks for that, named in the message.
            Defaults to ``'--force'``.
        what (str): What ``path`` is for (e.g. ``'--out'``), prefixed to the
            message. Defaults to ``''``.

    Raises:
        OverwriteRefusedError: ``path`` is a folder, or it exists and
            ``force`` is False.
    """
    label = f'{what} {path}' if what else str(path)
    if osp.isdir(path):
        raise OverwriteRefusedError(
            f'{label} is a folder; give a file name (a folder is never '
            f'replaced).')
    if osp.lexists(path) and not force:
        raise OverwriteRefusedError(
            f'{label} already exists; pass {option} to overwrite it, or '
            f'choose another file name (nothing was written).')


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_name_pattern(path: str) -> str:
    """The glob pattern of the temporary files :func:`write_atomic` makes
    for ``path``."""
    folder = osp.dirname(osp.abspath(path))
    return osp.join(
        glob.escape(folder), f'.{glob.escape(osp.basename(path))}.*.tmp')


def write_atomic(path: str,
                 write_fn: Callable[[IO[bytes]], None],
                 durable: bool = True) -> None:
    """Write ``path`` so that it is never seen partial.

    ``write_fn(file)`` writes the content to a temporary binary file in the
    same folder; the file is then flushed, ``fsync``\\ ed, given mode
    ``0o666 & ~umask`` (what ``open`` gives a new file) and renamed over
    ``path``. On any error the temporary file is removed and ``path`` is
    left as it was.

    Args:
        path (str): The destination.
        write_fn (callable): ``write_fn(file)`` writes the bytes.
        durable (bool): ``fsync`` before the rename, so that after a power
            loss the file holds its new content or the old one. Defaults to
            True; False (still atomic for other processes and crashes of
            this one) suits bulk files that a completion marker covers.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            write_fn(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def write_bytes_atomic(path: str, data: bytes, durable: bool = True) -> None:
    """:func:`write_atomic` of ``data``."""
    write_atomic(path, lambda f: f.write(data), durable)


def remove_stale_temporaries(folder: str,
                             pattern: str = '.*.tmp',
                             older_than: Optional[float] = None) -> List[str]:
    """Remove temporary files of :func:`write_atomic` left in ``folder`` by a
    process that was killed while writing.

    Args:
        folder (str): The folder to clean (not recursive).
        pattern (str): Glob of the names to remove, e.g.
            ``'.epoch_*.pth.*.tmp'``. Defaults to every temporary file of
            :func:`write_atomic`.
        older_than (float, optional): Keep files modified less than this many
            seconds ago (another live writer may own them). Defaults to
            None (remove all).

    Returns:
        list[str]: The files removed.
    """
    import time
    removed = []
    if not osp.isdir(folder):
        return removed
    now = time.time()
    for path in sorted(glob.glob(osp.join(glob.escape(folder), pattern))):
        name = osp.basename(path)
        if not (name.startswith('.') and name.endswith('.tmp')):
            continue
        if not osp.isfile(path) or osp.islink(path):
            continue
        if older_than is not None and now - osp.getmtime(path) < older_than:
            continue
        try:
            os.remove(path)
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed
