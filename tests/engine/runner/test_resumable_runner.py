# Copyright (c) mmrsa contributors. All rights reserved.
"""Auto-resume picks the newest checkpoint that loads: ``last_checkpoint``
missing, naming a missing, truncated or older file; truncated and foreign
files skipped with a warning that names them."""
import logging
import os

import pytest
import torch
from mmengine.logging import MMLogger

from mmrsa.engine.runner import checkpoint_problem, find_resumable_checkpoint


@pytest.fixture
def warnings_logged():
    """The warnings MMEngine's current logger receives during the test."""
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield lambda: [r.getMessage() for r in records]
    logger.removeHandler(handler)


def _save(path, epoch):
    """A small training checkpoint of ``epoch`` (2 iterations each)."""
    torch.save(
        dict(
            meta=dict(epoch=epoch, iter=2 * epoch),
            state_dict=dict(weight=torch.full((3, ), float(epoch)))),
        str(path))
    return str(path)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return str(path)


def _last_checkpoint(work_dir, target):
    (work_dir / 'last_checkpoint').write_text(str(target))


def test_no_last_checkpoint_takes_the_highest_number(tmp_path):
    for epoch in (1, 2, 9, 10):
        _save(tmp_path / f'epoch_{epoch}.pth', epoch)
    # numbers, not names: epoch_10 is newer than epoch_9
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path /
                                                            'epoch_10.pth')


def test_last_checkpoint_names_a_missing_file(tmp_path, warnings_logged):
    good = _save(tmp_path / 'epoch_1.pth', 1)
    _last_checkpoint(tmp_path, tmp_path / 'epoch_2.pth')  # removed since
    assert find_resumable_checkpoint(str(tmp_path)) == good
    assert any('epoch_2.pth' in w and 'no such file' in w
               for w in warnings_logged())


def test_truncated_checkpoint_is_skipped_with_a_warning(
        tmp_path, warnings_logged):
    """The crash came while epoch_2.pth was written, before
    last_checkpoint was updated."""
    good = _save(tmp_path / 'epoch_1.pth', 1)
    partial = _truncate(tmp_path / os.path.basename(
        _save(tmp_path / 'epoch_2.pth', 2)))
    _last_checkpoint(tmp_path, good)
    assert find_resumable_checkpoint(str(tmp_path)) == good
    skipped = [w for w in warnings_logged() if partial in w]
    assert len(skipped) == 1 and 'truncated' in skipped[0], warnings_logged()


def test_last_checkpoint_names_a_truncated_file(tmp_path, warnings_logged):
    good = _save(tmp_path / 'epoch_1.pth', 1)
    partial = _truncate(tmp_path / os.path.basename(
        _save(tmp_path / 'epoch_2.pth', 2)))
    _last_checkpoint(tmp_path, partial)
    assert find_resumable_checkpoint(str(tmp_path)) == good
    assert any(partial in w for w in warnings_logged())


def test_a_newer_complete_checkpoint_wins_over_last_checkpoint(
        tmp_path, warnings_logged):
    """The crash came after epoch_2.pth was complete, before
    last_checkpoint named it."""
    old = _save(tmp_path / 'epoch_1.pth', 1)
    new = _save(tmp_path / 'epoch_2.pth', 2)
    _last_checkpoint(tmp_path, old)
    assert find_resumable_checkpoint(str(tmp_path)) == new
    assert any(new in w and 'newest' in w for w in warnings_logged())


def test_last_checkpoint_in_another_folder(tmp_path):
    """CheckpointHook(out_dir=...) saves elsewhere than the work dir."""
    work_dir, out_dir = tmp_path / 'work', tmp_path / 'out'
    work_dir.mkdir()
    out_dir.mkdir()
    _save(out_dir / 'epoch_1.pth', 1)
    _truncate(out_dir / os.path.basename(_save(out_dir / 'epoch_2.pth', 2)))
    _last_checkpoint(work_dir, out_dir / 'epoch_2.pth')
    assert find_resumable_checkpoint(str(work_dir)) == str(out_dir /
                                                           'epoch_1.pth')


def test_iteration_and_custom_names(tmp_path):
    _save(tmp_path / 'iter_500.pth', 1)
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path /
                                                           'iter_500.pth')
    _save(tmp_path / 'ckpt-e3.pth', 3)
    assert find_resumable_checkpoint(
        str(tmp_path), filename_tmpls=['ckpt-e{}.pth']) == str(tmp_path /
                                                               'ckpt-e3.pth')


def test_nothing_loads(tmp_path, warnings_logged):
    (tmp_path / 'epoch_2.pth').write_bytes(b'')
    torch.save(dict(weight=torch.ones(2)), str(tmp_path / 'epoch_1.pth'))
    assert find_resumable_checkpoint(str(tmp_path)) is None
    logged = warnings_logged()
    assert any('epoch_2.pth' in w and 'empty' in w for w in logged), logged
    assert any('epoch_1.pth' in w and 'not a training checkpoint' in w
               for w in logged), logged
    assert find_resumable_checkpoint(str(tmp_path / 'no_such_dir')) is None


def test_checkpoint_problem(tmp_path):
    assert checkpoint_problem(_save(tmp_path / 'epoch_1.pth', 1)) is None
    assert checkpoint_problem(str(tmp_path / 'nothing.pth')) == 'no such file'
    (tmp_path / 'text.pth').write_text('not a checkpoint')
    assert 'not a PyTorch checkpoint' in checkpoint_problem(
        str(tmp_path / 'text.pth'))
