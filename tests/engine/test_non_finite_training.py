# Copyright (c) mmrsa contributors. All rights reserved.
"""A diverging run (tools/train.py, demo config, the learning rate 1e9
times higher from epoch 2) stops at the first non-finite loss, gradient norm
or BatchNorm statistic, naming the iteration, exits 1 and keeps its last
finite checkpoint (before: exit 0, an all-nan ``epoch_3.pth``, the finite
``epoch_1.pth`` deleted by ``max_keep_ckpts=1``). A non-finite checkpoint is
refused by ``publish_checkpoint`` and makes ``tools/test.py`` and
``demo/demo.py`` warn."""
import math
import re

import pytest
import torch
from run_helpers import DEMO_CONFIG, REPO_ROOT, import_tool, run_tool
from train_helpers import read_checkpoint, train

from mmrsa.engine.hooks import NonFiniteWeightsError, non_finite_tensors


@pytest.mark.slow  # about 20-30 s
def test_diverging_run_stops_and_keeps_the_finite_checkpoint(
        synth_dir, tmp_path):
    config = tmp_path / 'diverging.py'
    config.write_text(
        f'_base_ = {DEMO_CONFIG!r}\n'
        '# epoch 1 as usual, then a learning rate 1e9 times higher\n'
        "param_scheduler = [dict(type='MultiStepLR', by_epoch=True, "
        'milestones=[1], gamma=1e9)]\n')
    work_dir = tmp_path / 'diverged'
    result = train(
        synth_dir,
        work_dir,
        config=str(config),
        options=['train_cfg.max_epochs=3'])
    assert result.returncode == 1, result.stderr[-3000:]
    match = re.search(
        r'error: Non-finite (.*) at iteration (\d+) \(epoch (\d+), batch '
        r'\d/2\): training stopped', result.stderr)
    assert match, result.stderr[-3000:]
    what, epoch = match.group(1), int(match.group(3))
    assert re.match('(loss|gradient norm|buffers) ', what), what
    assert epoch >= 2  # epoch 1 trains with the usual learning rate
    kept = work_dir / f'epoch_{epoch - 1}.pth'
    assert sorted(p.name for p in work_dir.glob('*.pth')) == [kept.name]
    assert not non_finite_tensors(read_checkpoint(kept)['state_dict'])
    assert (work_dir / 'last_checkpoint').read_text() == str(kept)


@pytest.fixture(scope='module')
def nan_checkpoint(reference_run, tmp_path_factory):
    """The reference run's epoch_2.pth with every weight nan."""
    checkpoint = read_checkpoint(reference_run / 'epoch_2.pth')
    for value in checkpoint['state_dict'].values():
        if value.is_floating_point():
            value.fill_(math.nan)
    path = tmp_path_factory.mktemp('nan') / 'all_nan.pth'
    torch.save(checkpoint, str(path))
    return path


def test_publish_refuses_non_finite_weights(nan_checkpoint, tmp_path):
    from mmrsa.utils.publish import publish_checkpoint
    with pytest.raises(
            NonFiniteWeightsError,
            match=f'{nan_checkpoint} holds non-finite values '
            r'\(inf/nan\) in \d+ tensors \(backbone.conv1'):
        publish_checkpoint(str(nan_checkpoint), str(tmp_path / 'model'))
    assert not list(tmp_path.iterdir())


def test_test_tool_warns_on_non_finite_scores(synth_dir, nan_checkpoint,
                                              tmp_path):
    result = run_tool([
        REPO_ROOT / 'tools' / 'test.py', DEMO_CONFIG, nan_checkpoint,
        '--work-dir', tmp_path, '--cfg-options',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False'
    ],
                      cwd=synth_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ('4 of 4 test predictions hold non-finite scores (nan/inf)'
            in result.stdout), result.stdout[-3000:]


def test_demo_warns_on_non_finite_scores(synth_dir, nan_checkpoint, capsys,
                                         monkeypatch):
    demo = import_tool('demo/demo.py')
    monkeypatch.chdir(synth_dir)
    demo.main([
        DEMO_CONFIG,
        str(nan_checkpoint), 'data/synthmotion/videos/val_00000.mp4'
    ])
    err = capsys.readouterr().err
    assert 'warning: the scores for data/synthmotion/videos/val_00000.mp4 ' \
           'hold non-finite values (nan/inf)' in err
