# Copyright (c) mmrsa contributors. All rights reserved.
"""The demo config, killed right after the checkpoint of epoch 1 (before its
validation), resumes with ``--resume`` and ends with the weights of the run
that was not interrupted, bit for bit, under this repository's
``tools/train.py`` and MMAction2's own; also when the crash came between
writing ``epoch_2.pth`` and updating ``last_checkpoint`` (the file missing,
or naming the partial ``epoch_2.pth``)."""
import os
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from run_helpers import DEMO_CONFIG, REPO_ROOT, SMALL_RUN, run_tool
from train_helpers import read_checkpoint as load_checkpoint

# Kills the process (no clean-up, as a crash or a pre-empted job would) once
# the checkpoint of the given epoch is written, before validation.
CRASH_HOOK = textwrap.dedent("""
    import os

    from mmengine.hooks import Hook

    from mmaction.registry import HOOKS


    @HOOKS.register_module()
    class CrashAfterCheckpointHook(Hook):
        priority = 'LOWEST'  # after CheckpointHook

        def __init__(self, epoch):
            self.epoch = epoch

        def after_train_epoch(self, runner):
            if runner.epoch + 1 == self.epoch:
                os._exit(17)
""")


def _mmaction_train_py() -> Path:
    import mmaction
    return Path(mmaction.__file__).parent / '.mim' / 'tools' / 'train.py'


def _train(cwd, config, work_dir, *extra, env=None, upstream=False):
    if upstream:  # MMAction2's tools/train.py: seed 0 is in the config
        tool, seed = _mmaction_train_py(), ['randomness.deterministic=True']
        args = [tool, config, '--work-dir', work_dir, *extra]
    else:
        tool, seed = REPO_ROOT / 'tools' / 'train.py', []
        args = [
            tool, config, '--work-dir', work_dir, '--seed', '0',
            '--deterministic', *extra
        ]
    return run_tool([*args, '--cfg-options', *SMALL_RUN, *seed],
                    cwd=cwd,
                    env=env)


@pytest.fixture(scope='module')
def crashed_run(synth_dir, tmp_path_factory):
    """The work dir of a demo-config run killed after the checkpoint of
    epoch 1 of 2."""
    helpers = tmp_path_factory.mktemp('crash_after_checkpoint')
    (helpers / 'crash_after_checkpoint.py').write_text(CRASH_HOOK)
    config = helpers / 'crash_after_epoch_1.py'
    config.write_text(
        f'_base_ = {DEMO_CONFIG!r}\n'
        "custom_imports = dict(imports=['mmrsa', 'crash_after_checkpoint'], "
        'allow_failed_imports=False)\n'
        "custom_hooks = _base_.custom_hooks + [dict(\n"
        "    type='CrashAfterCheckpointHook', epoch=1)]\n")
    work_dir = synth_dir / 'work_dirs' / 'crashed_after_checkpoint'
    result = _train(
        synth_dir,
        config,
        work_dir,
        env=dict(PYTHONPATH=os.pathsep.join([str(REPO_ROOT),
                                             str(helpers)])))
    assert result.returncode == 17, result.stderr[-3000:]
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir /
                                                             'epoch_1.pth')
    assert not (work_dir / 'epoch_2.pth').exists()
    return work_dir


def _partial_epoch_2(work_dir: Path) -> Path:
    """What a crash while ``epoch_2.pth`` was written in place leaves: the
    first half of a checkpoint."""
    whole = (work_dir / 'epoch_1.pth').read_bytes()
    partial = work_dir / 'epoch_2.pth'
    partial.write_bytes(whole[:len(whole) // 2])
    return partial


def _assert_bit_identical(reference_run: Path, work_dir: Path) -> None:
    expected = load_checkpoint(reference_run / 'epoch_2.pth')
    got = load_checkpoint(work_dir / 'epoch_2.pth')
    assert got['meta']['epoch'] == 2 and got['meta']['iter'] == 4
    assert expected['state_dict'].keys() == got['state_dict'].keys()
    for key, value in expected['state_dict'].items():
        assert torch.equal(value, got['state_dict'][key]), key
    for index, state in expected['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(value, got['optimizer']['state'][index][name])


@pytest.mark.parametrize('last_checkpoint, upstream', [
    ('names epoch_1', False),
    ('missing, epoch_2 partial', False),
    ('names the partial epoch_2', True),
])
def test_resume_after_crash_is_bit_identical(synth_dir, crashed_run,
                                             reference_run, tmp_path,
                                             last_checkpoint, upstream):
    work_dir = tmp_path / 'run'
    shutil.copytree(crashed_run, work_dir)
    epoch_1 = work_dir / 'epoch_1.pth'
    partial = None
    if last_checkpoint == 'names epoch_1':
        (work_dir / 'last_checkpoint').write_text(str(epoch_1))
    elif last_checkpoint == 'missing, epoch_2 partial':
        partial = _partial_epoch_2(work_dir)
        (work_dir / 'last_checkpoint').unlink()
    else:
        partial = _partial_epoch_2(work_dir)
        (work_dir / 'last_checkpoint').write_text(str(partial))

    result = _train(
        synth_dir, DEMO_CONFIG, work_dir, '--resume', upstream=upstream)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    if partial is not None:
        assert f'Skipping checkpoint {partial} for resume' in out
    assert f'Auto resumed from the latest checkpoint {epoch_1}.' in out
    assert 'resumed epoch: 1, iter: 2' in out
    assert 'Restored the random state of the checkpoint.' in out
    _assert_bit_identical(reference_run, work_dir)
    # max_keep_ckpts=1: epoch_1.pth went once epoch_2.pth was written
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['epoch_2.pth']
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir /
                                                             'epoch_2.pth')
