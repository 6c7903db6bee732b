# Copyright (c) mmrsa contributors. All rights reserved.
"""Auto-resume continues the interrupted run from its newest checkpoint that
loads: ``last_checkpoint`` missing, naming a missing, truncated, text or
older file; truncated and foreign files skipped with a warning that names
them; checkpoints of another run in the same work dir skipped, also in a
folder mixing ``iter_*`` and ``epoch_*`` files."""
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


def _save(path, epoch, run_id=None, iters=None):
    """A small training checkpoint of ``epoch`` (2 iterations each, or
    ``iters``), written by the run ``run_id``."""
    meta = dict(epoch=epoch, iter=2 * epoch if iters is None else iters)
    if run_id is not None:
        meta['run_id'] = run_id
    torch.save(
        dict(
            meta=meta,
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
    partial = _truncate(tmp_path /
                        os.path.basename(_save(tmp_path / 'epoch_2.pth', 2)))
    _last_checkpoint(tmp_path, good)
    assert find_resumable_checkpoint(str(tmp_path)) == good
    skipped = [w for w in warnings_logged() if partial in w]
    assert len(skipped) == 1 and 'truncated' in skipped[0], warnings_logged()


def test_last_checkpoint_names_a_truncated_file(tmp_path, warnings_logged):
    good = _save(tmp_path / 'epoch_1.pth', 1)
    partial = _truncate(tmp_path /
                        os.path.basename(_save(tmp_path / 'epoch_2.pth', 2)))
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
        str(tmp_path),
        filename_tmpls=['ckpt-e{}.pth']) == str(tmp_path / 'ckpt-e3.pth')


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


def test_text_file_next_to_an_intact_checkpoint(tmp_path, warnings_logged):
    good = _save(tmp_path / 'epoch_3.pth', 3)
    (tmp_path / 'epoch_5.pth').write_text('this is not a checkpoint\n')
    _last_checkpoint(tmp_path, good)
    assert find_resumable_checkpoint(str(tmp_path)) == good
    assert any('epoch_5.pth' in w and 'not a PyTorch checkpoint' in w
               for w in warnings_logged()), warnings_logged()


def test_last_checkpoint_names_a_text_file(tmp_path, warnings_logged):
    good = _save(tmp_path / 'epoch_3.pth', 3)
    log = tmp_path / 'run.log'
    log.write_text('epoch 4\n')
    _last_checkpoint(tmp_path, log)
    assert find_resumable_checkpoint(str(tmp_path)) == good
    assert any(
        str(log) in w and 'not a PyTorch checkpoint' in w
        for w in warnings_logged()), warnings_logged()


def test_checkpoint_of_an_abandoned_run_is_skipped(tmp_path, warnings_logged):
    """Run A was abandoned at epoch 9; run B, started afresh in the same
    work dir, is at epoch 2: --resume continues B."""
    foreign = _save(tmp_path / 'epoch_9.pth', 9, run_id='run-a')
    _save(tmp_path / 'epoch_1.pth', 1, run_id='run-b')
    mine = _save(tmp_path / 'epoch_2.pth', 2, run_id='run-b')
    _last_checkpoint(tmp_path, mine)
    assert find_resumable_checkpoint(str(tmp_path)) == mine
    skipped = [w for w in warnings_logged() if foreign in w]
    assert len(skipped) == 1 and 'another run (run id run-a' in skipped[0]


def test_newer_checkpoint_of_the_same_run_wins(tmp_path, warnings_logged):
    """The crash came after epoch_3.pth was written, before
    last_checkpoint named it; an abandoned run's epoch_9.pth is there too."""
    _save(tmp_path / 'epoch_9.pth', 9, run_id='run-a')
    old = _save(tmp_path / 'epoch_2.pth', 2, run_id='run-b')
    new = _save(tmp_path / 'epoch_3.pth', 3, run_id='run-b')
    _last_checkpoint(tmp_path, old)
    assert find_resumable_checkpoint(str(tmp_path)) == new
    assert any(new in w and 'same run' in w for w in warnings_logged())


def test_run_id_file_names_the_run(tmp_path, warnings_logged):
    """No last_checkpoint (the crash came before the first one was
    written): work_dir/run_id says which run to continue."""
    _save(tmp_path / 'epoch_9.pth', 9, run_id='run-a')
    mine = _save(tmp_path / 'epoch_1.pth', 1, run_id='run-b')
    (tmp_path / 'run_id').write_text('run-b\n')
    assert find_resumable_checkpoint(str(tmp_path)) == mine
    # a run that has no checkpoint yet starts from scratch
    (tmp_path / 'run_id').write_text('run-c\n')
    assert find_resumable_checkpoint(str(tmp_path)) is None
    assert any('epoch_9.pth' in w and 'another run' in w
               for w in warnings_logged())


def test_mixed_iter_and_epoch_files_compare_by_iteration(tmp_path):
    """iter_500.pth of another run is not newer than epoch_3.pth;
    iter_7.pth of this run (saved mid-epoch 4) is."""
    _save(tmp_path / 'iter_500.pth', 250, run_id='run-a', iters=500)
    last = _save(tmp_path / 'epoch_3.pth', 3, run_id='run-b')
    _last_checkpoint(tmp_path, last)
    assert find_resumable_checkpoint(str(tmp_path)) == last
    newer = _save(tmp_path / 'iter_7.pth', 3, run_id='run-b', iters=7)
    assert find_resumable_checkpoint(str(tmp_path)) == newer
    # without run ids: the iteration count decides, not the file number
    for path in tmp_path.iterdir():
        path.unlink()
    _save(tmp_path / 'iter_5.pth', 2, iters=5)
    epoch_3 = _save(tmp_path / 'epoch_3.pth', 3)
    assert find_resumable_checkpoint(str(tmp_path)) == epoch_3


# -- with a training run (the toy runner of tests/engine/hooks) ----------- #
def _toy():
    import sys
    from pathlib import Path
    hooks = str(Path(__file__).resolve().parents[1] / 'hooks')
    if hooks not in sys.path:
        sys.path.insert(0, hooks)
    import toy_runner
    return toy_runner


def _meta(path):
    from mmrsa.fileio.checkpoint import safe_torch_load
    return safe_torch_load(str(path), map_location='cpu')['meta']


def test_a_resumed_run_keeps_its_run_id(tmp_path):
    toy = _toy()
    first = toy.build_runner(tmp_path, max_epochs=1)
    first.train()
    run_id = (tmp_path / 'run_id').read_text().strip()
    assert run_id == first.run_id and len(run_id) == 32
    assert _meta(tmp_path / 'epoch_1.pth')['run_id'] == run_id

    resumed = toy.build_runner(tmp_path, max_epochs=2, resume=True)
    resumed.train()
    assert resumed.run_id == run_id
    assert _meta(tmp_path / 'epoch_2.pth')['run_id'] == run_id
    assert (tmp_path / 'run_id').read_text().strip() == run_id

    # a run that starts afresh in the same work dir is another run
    fresh = toy.build_runner(tmp_path, max_epochs=1)
    fresh.train()
    assert fresh.run_id != run_id
    assert (tmp_path / 'run_id').read_text().strip() == fresh.run_id


def test_resume_skips_the_abandoned_runs_newer_checkpoint(tmp_path):
    """Run A stopped at epoch 3; run B started afresh in the same work dir
    and crashed after epoch 1: --resume continues B from epoch 1."""
    toy = _toy()
    toy.build_runner(tmp_path, max_epochs=3).train()  # run A
    abandoned = tmp_path / 'abandoned_epoch_3.pth'
    (tmp_path / 'epoch_3.pth').rename(abandoned)
    run_b = toy.build_runner(
        tmp_path, max_epochs=3, hooks=[toy.CrashAfterEpochHook(epoch=1)])
    with pytest.raises(toy.Crash):
        run_b.train()
    abandoned.rename(tmp_path / 'epoch_3.pth')  # A's newest file is back
    resumed = toy.build_runner(tmp_path, max_epochs=2, resume=True)
    resumed.train()
    assert resumed.run_id == run_b.run_id
    meta = _meta(tmp_path / 'epoch_2.pth')
    assert (meta['epoch'], meta['run_id']) == (2, run_b.run_id)


def test_stale_temporaries_of_the_run_are_removed(tmp_path):
    toy = _toy()
    stale = [
        tmp_path / '.epoch_1.pth.k2j3h4.tmp',
        tmp_path / '.iter_40.pth.abcdef.tmp',
        tmp_path / '.last_checkpoint.x9y8z7.tmp'
    ]
    other = tmp_path / '.predictions.pkl.q1w2e3.tmp'  # not a checkpoint's
    for path in stale + [other]:
        path.write_bytes(b'partial')
    toy.build_runner(tmp_path, max_epochs=1).train()
    assert [p.exists() for p in stale] == [False] * 3
    assert other.exists()
