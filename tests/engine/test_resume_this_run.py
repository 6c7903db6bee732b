# Copyright (c) mmrsa contributors. All rights reserved.
"""``--resume`` continues this run (tools/train.py, demo config): a
higher-numbered checkpoint of a run abandoned in the same work dir (also an
``iter_*`` file among ``epoch_*`` files) is named in a warning and skipped;
a text file named ``epoch_5.pth``, and ``last_checkpoint`` naming a text
file, are skipped instead of ending the run. ``reference_run`` (a finished
2-epoch run) stands for the earlier run."""
import pytest
from train_helpers import copy_run, read_checkpoint, train


def test_unreadable_files_are_skipped(synth_dir, reference_run, tmp_path):
    work_dir = copy_run(reference_run, tmp_path / 'run')
    text = work_dir / 'epoch_5.pth'
    text.write_text('this is not a checkpoint\n')
    log = next(work_dir.glob('*/*.log'))
    (work_dir / 'last_checkpoint').write_text(str(log))

    result = train(
        synth_dir, work_dir, '--resume', options=['train_cfg.max_epochs=3'])
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for skipped in (text, log):
        assert (f'Skipping checkpoint {skipped} for resume: {skipped} is '
                f'not a PyTorch checkpoint') in out
    epoch_2 = work_dir / 'epoch_2.pth'
    assert f'Auto resumed from the latest checkpoint {epoch_2}.' in out
    assert 'resumed epoch: 2, iter: 4' in out
    assert read_checkpoint(work_dir / 'epoch_3.pth')['meta']['epoch'] == 3


@pytest.mark.slow  # two runs, about 25 s
def test_checkpoints_of_an_abandoned_run_are_skipped(synth_dir, reference_run,
                                                     tmp_path):
    """Run A was abandoned after epoch 2; run B started afresh in the same
    work dir and stopped after epoch 1; --resume continues B (MMEngine, and
    this runner before run ids, took A's epoch_2.pth or iter_100.pth)."""
    work_dir = copy_run(reference_run, tmp_path / 'run')
    run_a = (work_dir / 'run_id').read_text().strip()
    iter_file = work_dir / 'iter_100.pth'  # an iteration-based save of A
    iter_file.write_bytes((work_dir / 'epoch_2.pth').read_bytes())
    result = train(synth_dir, work_dir, options=['train_cfg.max_epochs=1'])
    assert result.returncode == 0, result.stderr[-3000:]
    run_b = (work_dir / 'run_id').read_text().strip()
    assert run_b != run_a

    result = train(
        synth_dir, work_dir, '--resume', options=['train_cfg.max_epochs=2'])
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for name in ('epoch_2.pth', 'iter_100.pth'):
        assert (f'Skipping checkpoint {work_dir / name} for resume: it was '
                f'written by another run (run id {run_a};') in out, name
    epoch_1 = work_dir / 'epoch_1.pth'
    assert f'Auto resumed from the latest checkpoint {epoch_1}.' in out
    assert 'resumed epoch: 1, iter: 2' in out
    assert f'Run id {run_b} (kept from the resumed checkpoint).' in out
    meta = read_checkpoint(work_dir / 'epoch_2.pth')['meta']
    assert (meta['epoch'], meta['iter'], meta['run_id']) == (2, 4, run_b)
