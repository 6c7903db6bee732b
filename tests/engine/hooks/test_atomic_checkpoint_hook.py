# Copyright (c) mmrsa contributors. All rights reserved.
"""AtomicCheckpointHook: a crash while a checkpoint is written leaves the
previous checkpoint and ``last_checkpoint`` whole, and ``max_keep_ckpts=1``
removes the old checkpoint only after the new one is on disk."""
import os

import pytest
from mmengine.hooks import CheckpointHook
from toy_runner import Crash, CrashWhileSavingHook, build_runner, weights

from mmrsa.engine.hooks import AtomicCheckpointHook
from mmrsa.engine.runner import checkpoint_problem


def _crash_while_saving_epoch_2(work_dir, checkpoint_hook):
    runner = build_runner(
        work_dir,
        checkpoint_hook=checkpoint_hook,
        hooks=[CrashWhileSavingHook(epoch=2)])
    with pytest.raises(Crash):
        runner.train()


def test_max_keep_ckpts_keeps_the_only_good_checkpoint(tmp_path):
    work_dir = tmp_path / 'atomic'
    _crash_while_saving_epoch_2(
        work_dir, AtomicCheckpointHook(interval=1, max_keep_ckpts=1))
    assert checkpoint_problem(str(work_dir / 'epoch_1.pth')) is None
    assert not (work_dir / 'epoch_2.pth').exists()
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir /
                                                             'epoch_1.pth')

    # MMEngine's hook removes epoch_1.pth before it writes epoch_2.pth
    upstream = tmp_path / 'upstream'
    _crash_while_saving_epoch_2(upstream,
                                CheckpointHook(interval=1, max_keep_ckpts=1))
    assert not (upstream / 'epoch_1.pth').exists()
    assert not (upstream / 'epoch_2.pth').exists()


def test_old_checkpoints_removed_after_the_new_one(tmp_path):
    runner = build_runner(tmp_path, max_epochs=3)
    runner.train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['epoch_3.pth']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path /
                                                             'epoch_3.pth')
    assert not list(tmp_path.glob('.*.tmp'))  # no temporary file left


def test_no_partial_file_when_the_write_fails(tmp_path, monkeypatch):
    """A write that stops before the rename (a crash, a full disk) leaves
    no file under the checkpoint's name and the previous files intact."""
    runner = build_runner(tmp_path, max_epochs=2)
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == 'epoch_2.pth':
            raise OSError(28, 'No space left on device')
        return real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', replace)
    with pytest.raises(OSError, match='No space left'):
        runner.train()
    assert not (tmp_path / 'epoch_2.pth').exists()
    assert weights(tmp_path / 'epoch_1.pth')
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path /
                                                             'epoch_1.pth')
    assert not list(tmp_path.glob('.*.tmp'))


def test_remote_out_dir_keeps_its_backend():
    hook = AtomicCheckpointHook(interval=1, out_dir='s3://bucket/ckpts')
    assert hook.backend_args is None
    hook = AtomicCheckpointHook(interval=1, backend_args=dict(backend='local'))
    assert hook.backend_args == dict(backend='local')
    assert AtomicCheckpointHook(interval=1).backend_args == dict(
        backend='mmrsa_atomic_local')
