# Copyright (c) mmrsa contributors. All rights reserved.
"""A run killed after its first epoch resumes with ``--resume`` (latest
checkpoint) and ``--resume CHECKPOINT``, restoring the optimizer, the LR
schedule and the counters, and ends where an uninterrupted run ends."""
import os
import shutil
import textwrap

import pytest
from run_helpers import (DEMO_CONFIG, REPO_ROOT, SMALL_RUN, run_tool,
                         train_scalars)
from train_helpers import read_checkpoint as load_checkpoint

ITERS_PER_EPOCH = 2

# A hook that kills the process (no clean-up, as a crash or a pre-empted job
# would) after the validation of the given epoch, i.e. after its checkpoint.
CRASH_HOOK = textwrap.dedent("""
    import os

    from mmengine.hooks import Hook

    from mmaction.registry import HOOKS


    @HOOKS.register_module()
    class CrashAfterEpochHook(Hook):
        priority = 'LOWEST'

        def __init__(self, epoch):
            self.epoch = epoch

        def after_val_epoch(self, runner, metrics=None):
            if runner.epoch == self.epoch:
                os._exit(17)
""")


def _train(cwd, config, work_dir, *extra, env=None):
    return run_tool([
        REPO_ROOT / 'tools' / 'train.py', config, '--work-dir', work_dir,
        '--seed', '0', '--deterministic', *extra, '--cfg-options', *SMALL_RUN
    ],
                    cwd=cwd,
                    env=env)


@pytest.fixture(scope='module')
def crashed_run(synth_dir, tmp_path_factory):
    """The work dir of a demo-config run killed after epoch 1 of 2."""
    helpers = tmp_path_factory.mktemp('crash_hook')
    (helpers / 'crash_hook.py').write_text(CRASH_HOOK)
    config = helpers / 'crash_after_epoch_1.py'
    config.write_text(
        f'_base_ = {DEMO_CONFIG!r}\n'
        "custom_imports = dict(imports=['mmrsa', 'crash_hook'], "
        'allow_failed_imports=False)\n'
        "custom_hooks = [dict(type='CrashAfterEpochHook', epoch=1)]\n")
    work_dir = synth_dir / 'work_dirs' / 'crashed'
    result = _train(
        synth_dir,
        config,
        work_dir,
        env=dict(PYTHONPATH=os.pathsep.join([str(REPO_ROOT),
                                             str(helpers)])))
    assert result.returncode == 17, result.stderr[-3000:]
    assert (work_dir / 'epoch_1.pth').is_file()
    assert not (work_dir / 'epoch_2.pth').exists()
    assert load_checkpoint(work_dir / 'epoch_1.pth')['meta']['epoch'] == 1
    return work_dir


def _assert_resumed_like(reference_run, work_dir):
    final = load_checkpoint(work_dir / 'epoch_2.pth')
    expected = load_checkpoint(reference_run / 'epoch_2.pth')
    assert not list(work_dir.glob('epoch_3.pth'))
    # counters: 2 epochs of ITERS_PER_EPOCH iterations in all
    assert final['meta']['epoch'] == expected['meta']['epoch'] == 2
    assert final['meta']['iter'] == expected['meta']['iter'] == 4
    # optimizer: AdamW's step counts continue from the checkpoint
    for state in final['optimizer']['state'].values():
        assert int(state['step']) == 2 * ITERS_PER_EPOCH
    assert (final['optimizer']['param_groups'][0]['lr'] ==
            expected['optimizer']['param_groups'][0]['lr'])
    # LR schedule: both schedulers are where the uninterrupted run left them
    for got, want in zip(final['param_schedulers'],
                         expected['param_schedulers']):
        assert got['last_step'] == want['last_step']
        assert got['_last_value'] == want['_last_value']
    # only epoch 2 was trained again, with the uninterrupted run's LRs
    resumed = train_scalars(work_dir)[ITERS_PER_EPOCH:]
    reference = train_scalars(reference_run)[ITERS_PER_EPOCH:]
    assert [r['step'] for r in resumed] == [3, 4]
    assert [r['epoch'] for r in resumed] == [2, 2]
    assert [r['lr'] for r in resumed] == [r['lr'] for r in reference]


def test_resume_latest_checkpoint(synth_dir, crashed_run, reference_run,
                                  tmp_path):
    work_dir = tmp_path / 'auto'
    shutil.copytree(crashed_run, work_dir)
    # last_checkpoint holds an absolute path into the crashed run's folder
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_1.pth'))
    result = _train(synth_dir, DEMO_CONFIG, work_dir, '--resume')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Auto resumed from the latest checkpoint' in result.stdout
    assert 'resumed epoch: 1, iter: 2' in result.stdout
    _assert_resumed_like(reference_run, work_dir)


def test_resume_named_checkpoint(synth_dir, crashed_run, reference_run,
                                 tmp_path):
    work_dir = tmp_path / 'named'
    shutil.copytree(crashed_run, work_dir)
    (work_dir / 'last_checkpoint').unlink()
    checkpoint = work_dir / 'epoch_1.pth'
    result = _train(synth_dir, DEMO_CONFIG, work_dir, '--resume', checkpoint)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'resumed epoch: 1, iter: 2' in result.stdout
    _assert_resumed_like(reference_run, work_dir)


def test_resume_auto_means_the_latest_checkpoint():
    """``--resume`` without a value (``'auto'``) resumes from the work dir's
    latest checkpoint (a bare ``--resume`` runs in
    tests/tools/test_train_test.py::test_train_resume)."""
    from mmrsa.apis import build_train_config
    cfg = build_train_config(DEMO_CONFIG, resume='auto')
    assert cfg.resume is True and cfg.load_from is None
