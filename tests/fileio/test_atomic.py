# Copyright (c) mmrsa contributors. All rights reserved.
"""The one writer: flushed and fsync'ed before the rename, never partial,
mode from the umask; the one overwrite rule."""
import os
import time

import pytest

from mmrsa.fileio import atomic
from mmrsa.fileio.atomic import (OverwriteRefusedError, refuse_existing,
                                 remove_stale_temporaries, write_atomic,
                                 write_bytes_atomic)


def test_fsync_comes_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(('fsync', os.readlink(f'/proc/self/fd/{fd}')))
        return real_fsync(fd)

    def replace(src, dst):
        calls.append(('replace', str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, 'fsync', fsync)
    monkeypatch.setattr(atomic.os, 'replace', replace)
    path = tmp_path / 'ckpt.pth'
    write_bytes_atomic(str(path), b'data')
    assert [c[0] for c in calls] == ['fsync', 'replace']
    # the file synced is the one renamed, and it is renamed onto the target
    assert calls[0][1] == calls[1][1]
    assert calls[1][2] == str(path)
    assert path.read_bytes() == b'data'


def test_not_durable_skips_only_the_fsync(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(atomic.os, 'fsync', lambda fd: synced.append(fd))
    write_bytes_atomic(str(tmp_path / 'a'), b'x', durable=False)
    assert synced == [] and (tmp_path / 'a').read_bytes() == b'x'


def test_a_crash_between_write_and_rename_keeps_the_old_file(
        tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pth'
    path.write_bytes(b'old')

    def crash(src, dst):
        raise KeyboardInterrupt  # the process dies between the two steps

    monkeypatch.setattr(atomic.os, 'replace', crash)
    with pytest.raises(KeyboardInterrupt):
        write_bytes_atomic(str(path), b'new' * 1000)
    assert path.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['ckpt.pth']  # no temporary left


def test_a_failing_writer_leaves_nothing(tmp_path):

    def half(f):
        f.write(b'half')
        raise OSError(28, 'No space left on device')

    with pytest.raises(OSError, match='No space'):
        write_atomic(str(tmp_path / 'x.pth'), half)
    assert os.listdir(tmp_path) == []


def test_refuse_existing(tmp_path):
    path = tmp_path / 'out.pkl'
    refuse_existing(str(path))  # nothing there
    path.write_bytes(b'mine')
    with pytest.raises(OverwriteRefusedError) as info:
        refuse_existing(str(path), option='--overwrite', what='--out')
    message = str(info.value)
    assert message.startswith(f'--out {path} already exists')
    assert '--overwrite' in message
    assert isinstance(info.value, FileExistsError)
    refuse_existing(str(path), force=True)
    with pytest.raises(OverwriteRefusedError, match='is a folder'):
        refuse_existing(str(tmp_path), force=True)
    link = tmp_path / 'dangling'
    link.symlink_to(tmp_path / 'nowhere')
    with pytest.raises(OverwriteRefusedError):
        refuse_existing(str(link))


def test_stale_temporaries_are_removed_by_pattern_and_age(tmp_path):
    old = tmp_path / '.epoch_3.pth.abc123.tmp'
    fresh = tmp_path / '.epoch_4.pth.def456.tmp'
    other = tmp_path / '.notes.txt.tmp'
    keep = tmp_path / 'epoch_3.pth'
    for p in (old, fresh, other, keep):
        p.write_bytes(b'x')
    past = time.time() - 3600
    os.utime(old, (past, past))
    removed = remove_stale_temporaries(
        str(tmp_path), '.epoch_*.pth.*.tmp', older_than=60)
    assert removed == [str(old)]
    assert fresh.exists() and other.exists() and keep.exists()
    removed = remove_stale_temporaries(str(tmp_path), '.epoch_*.pth.*.tmp')
    assert removed == [str(fresh)] and other.exists() and keep.exists()
