# Copyright (c) mmrsa contributors. All rights reserved.
"""``CheckpointFitHook``: a checkpoint of another architecture or config is
refused, listing the keys, for testing, the demo and resuming."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from run_helpers import DEMO_CONFIG, REPO_ROOT, SMALL_RUN, run_tool

import mmrsa  # noqa: F401
from mmaction.registry import MODELS
from mmrsa.engine import CheckpointMismatchError, check_checkpoint_fits

TSN_CONFIG = str(REPO_ROOT / 'configs' / 'recognition' / 'rsanet' /
                 'baselines' / 'tsn_r18_8x1_synthmotion.py')


def _cfg() -> Config:
    cfg = Config.fromfile(DEMO_CONFIG)
    init_default_scope('mmaction')
    return cfg


@pytest.fixture
def tsn_checkpoint(tmp_path):
    """A checkpoint of the TSN baseline (plain ResNet-18, no RSA)."""
    cfg = Config.fromfile(TSN_CONFIG)
    init_default_scope('mmaction')
    path = tmp_path / 'tsn.pth'
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), path)
    return path


def test_checkpoint_of_another_architecture_names_the_keys(tsn_checkpoint):
    model = MODELS.build(_cfg().model)
    checkpoint = torch.load(tsn_checkpoint)
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_fits(model, checkpoint, str(tsn_checkpoint))
    message = str(info.value)
    assert message.startswith(f'{tsn_checkpoint} does not fit the model '
                              f'Recognizer2D built from the config')
    # the RSA layer of res3 (layer2.1) is a 3x3 conv in TSN
    assert 'model keys missing from the checkpoint: ' in message
    assert 'backbone.layer2.1.conv2.conv.P1' in info.value.missing
    assert 'backbone.layer2.1.conv2.conv.weight' in info.value.unexpected


def test_checkpoint_with_other_shapes_names_them(tmp_path):
    cfg = _cfg()
    model = MODELS.build(cfg.model)
    cfg.model.cls_head.num_classes = 174
    other = MODELS.build(cfg.model)
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_fits(model, dict(state_dict=other.state_dict()))
    assert ('2 tensors of another shape: cls_head.fc_cls.weight (checkpoint '
            '[174, 512], model [10, 512]), cls_head.fc_cls.bias (checkpoint '
            '[174], model [10])') in str(info.value)
    check_checkpoint_fits(other, dict(state_dict=other.state_dict()))


def test_demo_refuses_another_architecture(tsn_checkpoint, synth_dir):
    video = synth_dir / 'data' / 'synthmotion' / 'videos' / 'val_00000.mp4'
    result = run_tool(
        [REPO_ROOT / 'demo' / 'demo.py', video, DEMO_CONFIG, tsn_checkpoint],
        cwd=synth_dir)
    assert result.returncode == 1
    assert 'does not fit the model Recognizer2D' in result.stderr
    assert 'backbone.layer2.1.conv2.conv.P1' in result.stderr


def test_test_tool_refuses_another_architecture(tsn_checkpoint, synth_dir,
                                                tmp_path):
    result = run_tool([
        REPO_ROOT / 'tools' / 'test.py', DEMO_CONFIG, tsn_checkpoint,
        '--work-dir', tmp_path / 'work_dir', '--cfg-options',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False'
    ],
                      cwd=synth_dir)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert f'error: {tsn_checkpoint} does not fit the model' in result.stderr
    assert 'backbone.layer2.1.conv2.conv.P1' in result.stderr
    assert 'Epoch(test)' not in result.stdout  # nothing was evaluated


def _resume_args(work_dir, checkpoint):
    return [
        REPO_ROOT / 'tools' / 'train.py', DEMO_CONFIG, '--work-dir', work_dir,
        '--resume', checkpoint, '--cfg-options', *SMALL_RUN
    ]


@pytest.mark.parametrize('change, expected', [
    ('model.backbone.rsa_cfg.kernel_size=[3,3,3]',
     'tensors of another shape: backbone.layer1.1.conv2.'),
    ('model.backbone.rsa_blocks=[[1],[1],[],[1]]', 'backbone.layer3.1.conv2.'),
])
def test_resume_with_another_config_names_the_keys(synth_dir, reference_run,
                                                   tmp_path, change, expected):
    """Checked before the epoch, optimizer or schedulers are restored."""
    checkpoint = reference_run / 'epoch_2.pth'
    args = _resume_args(tmp_path / 'work_dir', checkpoint) + [change]
    result = run_tool(args, cwd=synth_dir)
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert f'error: {checkpoint} does not fit the model' in result.stderr
    assert expected in result.stderr
    assert 'resumed epoch' not in result.stdout + result.stderr


def test_resume_from_weights_only_checkpoint_says_use_load_from(
        synth_dir, tmp_path):
    cfg = _cfg()
    path = tmp_path / 'weights.pth'
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), path)
    result = run_tool(_resume_args(tmp_path / 'work_dir', path), cwd=synth_dir)
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'holds weights but no training state' in result.stderr
    assert f"load_from='{path}'" in result.stderr
