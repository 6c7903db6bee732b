# Copyright (c) mmrsa contributors. All rights reserved.
"""Tests for ``mmrsa.models.backbones.rsa_hybrid``: RSA in MMAction2's own
ResNetTSM and 3D ResNets, the shared ``rsa_blocks`` checks, initialisation
from a fake ImageNet checkpoint, and a few training iterations of the two
SynthMotion hybrid configs."""
import json
import logging
import os.path as osp
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.logging import MMLogger
from run_helpers import REPO_ROOT, SMALL_RUN, run_tool

import mmrsa  # noqa: F401  (registers the modules)
from mmaction.registry import MODELS
from mmrsa.apis.model import build_model
from mmrsa.models.backbones import FrameRSA, RSAHybrid
from mmrsa.models.common import RSA

HYBRIDS = REPO_ROOT / 'configs' / 'recognition' / 'rsanet' / 'hybrids'
TSM_CONFIG = HYBRIDS / 'tsm_rsa_r18_8x1_synthmotion.py'
SLOWONLY_CONFIG = HYBRIDS / 'slowonly_rsa_r18_8x1_synthmotion.py'

# small and fast: 4 frames, small contexts, 32x32 inputs
T = 4
SMALL_RSA = dict(kernel_size=(3, 3, 3), num_queries=4)
EVERY_SECOND_BLOCK = ((1, ), (1, ), (1, ), (1, ))


@pytest.fixture(autouse=True, scope='module')
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tsm18(**kwargs) -> dict:
    cfg = dict(
        type='ResNetTSM',
        depth=18,
        pretrained=None,
        pretrained2d=False,
        num_segments=T,
        norm_eval=False)
    cfg.update(kwargs)
    return cfg


def slowonly18(**kwargs) -> dict:
    cfg = dict(
        type='ResNet3dSlowOnly',
        depth=18,
        pretrained=None,
        pretrained2d=False,
        zero_init_residual=False,
        norm_eval=False)
    cfg.update(kwargs)
    return cfg


def slim_r3d50(**kwargs) -> dict:
    """A ResNet3d-50 with 8 base channels: bottlenecks, strides in conv2."""
    cfg = dict(
        type='ResNet3d',
        depth=50,
        pretrained=None,
        pretrained2d=False,
        base_channels=8,
        inflate=(0, 0, 1, 1),
        norm_eval=False)
    cfg.update(kwargs)
    return cfg


def hybrid(backbone: dict, **kwargs) -> RSAHybrid:
    cfg = dict(
        type='RSAHybrid',
        backbone=backbone,
        rsa_blocks=EVERY_SECOND_BLOCK,
        rsa_cfg=SMALL_RSA)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def frames(num_clips: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(num_clips * T, 3, 32, 32)


def clips(num_clips: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(num_clips, 3, T, 32, 32)


# --------------------------------------------------------------------- #
# structure and shapes
# --------------------------------------------------------------------- #
def test_tsm_hybrid_keeps_the_shift_and_adds_frame_rsa():
    net = hybrid(tsm18())
    assert net.rsa_block_names == [
        'layer1.1', 'layer2.1', 'layer3.1', 'layer4.1'
    ]
    assert net.num_segments == T  # the backbone's, for the clip checks
    for name, block in net.backbone.named_children():
        if not name.startswith('layer'):
            continue
        for index, b in enumerate(block):
            # the temporal shift of every block stays
            assert type(b.conv1.conv).__name__ == 'TemporalShift'
            conv = b.conv2.conv
            if index == 1:
                assert isinstance(conv, FrameRSA)
                assert conv.num_segments == T
                assert conv.in_channels == conv.out_channels
                assert conv.kernel_size == (3, 3, 3)
                assert conv.num_queries == 4
            else:
                assert isinstance(conv, nn.Conv2d)
    plain = MODELS.build(tsm18())
    x = frames()
    out = net(x)
    assert out.shape == plain(x).shape == (2 * T, 512, 1, 1)
    out.mean().backward()
    assert all(p.grad is not None for _, layer in net.rsa_layers()
               for p in layer.parameters())


def test_3d_hybrid_takes_clips():
    net = hybrid(slowonly18())
    assert net.num_segments is None  # the clip is the input
    layers = net.rsa_layers()
    assert [name for name, _ in layers
            ] == [f'layer{i}.1.conv2.conv' for i in range(1, 5)]
    assert all(type(layer) is RSA for _, layer in layers)
    plain = MODELS.build(slowonly18())
    x = clips()
    assert net(x).shape == plain(x).shape == (2, 512, T, 1, 1)


@pytest.mark.parametrize(
    'backbone, rsa_blocks',
    [
        # 3D bottlenecks: conv2 has the stride (1, 2, 2) of a first block
        (slim_r3d50(out_indices=(0, 1, 2, 3)), ((), (0, ), (0, ), ())),
        # 2D bottlenecks (TSM-R50): conv2 has the stride 2
        (dict(
            type='ResNetTSM',
            depth=50,
            pretrained=None,
            pretrained2d=False,
            num_segments=T,
            out_indices=(0, 1, 2, 3)), ((), (0, ), (), ())),
    ],
    ids=['ResNet3d-50', 'ResNetTSM-50'])
def test_rsa_takes_the_spatial_stride(backbone, rsa_blocks):
    net = hybrid(backbone, rsa_blocks=rsa_blocks)
    plain = MODELS.build(backbone)
    strides = [layer.stride for _, layer in net.rsa_layers()]
    assert strides and strides == [2] * len(strides)
    x = clips() if backbone['type'] == 'ResNet3d' else frames()
    outs, plain_outs = net(x), plain(x)
    # every stage's output as the plain backbone's
    assert [o.shape for o in outs] == [o.shape for o in plain_outs]


def test_frozen_stages_freeze_their_rsa_layers():
    net = hybrid(tsm18(frozen_stages=1))
    net.train()
    layers = dict(net.rsa_layers())
    assert not any(p.requires_grad
                   for p in layers['layer1.1.conv2.conv'].parameters())
    assert all(p.requires_grad
               for p in layers['layer2.1.conv2.conv'].parameters())


def test_default_rsa_blocks_are_the_papers_rule():
    net = MODELS.build(dict(type='RSAHybrid', backbone=tsm18()))
    # ResNet-18 (2, 2, 2, 2): every second block from the third
    assert net.rsa_blocks == ((), (0, ), (0, ), (0, ))


# --------------------------------------------------------------------- #
# invalid arguments (the rsa_blocks/rsa_cfg checks are RSANet's)
# --------------------------------------------------------------------- #
@pytest.mark.parametrize('rsa_blocks, match', [
    (((1, ), (1, )), 'one sequence'),
    (((2, ), (), (), ()), r'\[0, 2\) for stage 0 of ResNetTSM-18'),
    (((True, ), (), (), ()), 'distinct block indices'),
    (((1, 1), (), (), ()), 'distinct block indices'),
    (((-1, ), (), (), ()), r'\[0, 2\)'),
    ((1, (), (), ()), r'rsa_blocks\[0\] must be a sequence'),
    ('abcd', 'one sequence'),
])
def test_invalid_rsa_blocks(rsa_blocks, match):
    with pytest.raises(ValueError, match=match):
        hybrid(tsm18(), rsa_blocks=rsa_blocks)


def test_unknown_rsa_cfg_key():
    with pytest.raises(ValueError, match='unknown keys'):
        hybrid(tsm18(), rsa_cfg=dict(nh=8))


def test_rsa_cfg_not_a_dict():
    with pytest.raises(ValueError, match='rsa_cfg must be a dict'):
        hybrid(tsm18(), rsa_cfg=[dict(num_queries=4)])


def test_per_stage_value_of_wrong_length():
    with pytest.raises(ValueError, match='one value per stage'):
        hybrid(tsm18(), rsa_cfg=dict(num_queries=(4, 4)))


def test_backbone_not_a_config():
    with pytest.raises(ValueError, match='config dict of an MMAction2'):
        MODELS.build(dict(type='RSAHybrid', backbone='ResNetTSM'))


def test_pretrained_set_by_tools_reaches_the_backbone(imagenet_r18):
    # what tools do to a config: model.backbone.pretrained = None / a path
    net = hybrid(
        tsm18(pretrained=str(imagenet_r18), pretrained2d=True),
        pretrained=None)
    assert net.backbone_cfg['pretrained'] is None
    assert net.backbone_cfg['pretrained2d'] is False
    net.init_weights()  # nothing loaded, no error
    net = hybrid(
        dict(type='ResNetTSM', depth=18, num_segments=T),
        pretrained=None)  # pretrained2d defaults to True there
    net.init_weights()
    net = hybrid(tsm18(), pretrained=str(imagenet_r18))
    assert net.backbone_cfg['pretrained'] == str(imagenet_r18)
    with pytest.raises(ValueError, match='pretrained must be a str'):
        hybrid(tsm18(), pretrained=True)


def test_init_cfg_refused():
    with pytest.raises(ValueError, match='takes no init_cfg'):
        hybrid(tsm18(), init_cfg=dict(type='Pretrained', checkpoint='x'))


def test_not_a_resnet():
    with pytest.raises(ValueError, match='ResNet family'):
        hybrid(dict(type='MobileNetV2', pretrained=None))


def test_num_segments_disagrees_with_the_backbone():
    with pytest.raises(ValueError, match='num_segments=8 but the wrapped'):
        hybrid(tsm18(), num_segments=8)


def test_2d_backbone_without_num_segments():
    with pytest.raises(ValueError, match='needs num_segments'):
        hybrid(dict(type='ResNet', depth=18, pretrained=None))


def test_plain_2d_resnet_with_num_segments():
    net = hybrid(
        dict(type='ResNet', depth=18, pretrained=None), num_segments=T)
    assert net.num_segments == T
    assert net(frames()).shape == (2 * T, 512, 1, 1)


@pytest.mark.parametrize('value', [0, True, 2.0])
def test_invalid_num_segments(value):
    with pytest.raises(ValueError, match='num_segments must be a positive'):
        hybrid(tsm18(), num_segments=value)


def test_num_segments_for_a_3d_backbone():
    with pytest.raises(ValueError, match='num_segments is for 2D'):
        hybrid(slowonly18(), num_segments=T)


def test_temporal_stride_refused():
    with pytest.raises(ValueError, match='temporal stride 2'):
        hybrid(
            slim_r3d50(temporal_strides=(1, 2, 1, 1)),
            rsa_blocks=((), (0, ), (), ()))


def test_dilation_refused():
    with pytest.raises(ValueError, match='dilation'):
        hybrid(
            dict(
                type='ResNetTSM',
                depth=50,
                pretrained=None,
                pretrained2d=False,
                num_segments=T,
                strides=(1, 2, 2, 1),
                dilations=(1, 1, 1, 2)),
            rsa_blocks=((), (), (), (1, )))


def test_temporal_pool_refused():
    with pytest.raises(ValueError, match='temporal_pool'):
        hybrid(tsm18(temporal_pool=True))


def test_a_batch_of_partial_clips():
    net = hybrid(tsm18())
    with pytest.raises(ValueError, match=r'whole clips \[N\*4, C, H, W\]'):
        net(torch.randn(6, 3, 32, 32))


# --------------------------------------------------------------------- #
# initialisation
# --------------------------------------------------------------------- #
def torchvision_resnet18_state_dict() -> OrderedDict:
    """A fake ImageNet ResNet-18 in torchvision's layout and names, made
    from MMAction2's 2D ResNet-18 (the names ResNetTSM and the 3D
    inflation map back)."""
    gen = torch.Generator().manual_seed(0)
    net = MODELS.build(dict(type='ResNet', depth=18, pretrained=None))
    sd = OrderedDict()
    for name, module in net.named_modules():
        if not isinstance(module, ConvModule):
            continue
        if 'downsample' in name:
            conv_name, bn_name = f'{name}.0', f'{name}.1'
        else:
            conv_name, bn_name = name, name.replace('conv', 'bn')
        sd[f'{conv_name}.weight'] = torch.randn(
            module.conv.weight.shape, generator=gen)
        c = module.bn.num_features
        sd[f'{bn_name}.weight'] = torch.rand(c, generator=gen) + 0.5
        sd[f'{bn_name}.bias'] = torch.randn(c, generator=gen)
        sd[f'{bn_name}.running_mean'] = torch.randn(c, generator=gen)
        sd[f'{bn_name}.running_var'] = torch.rand(c, generator=gen) + 0.5
    sd['fc.weight'] = torch.randn(1000, 512, generator=gen)
    sd['fc.bias'] = torch.randn(1000, generator=gen)
    return sd


class _Records(logging.Handler):

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def log_records():
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


@pytest.fixture(scope='module')
def imagenet_r18(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('imagenet') / 'resnet18.pth'
    torch.save(torchvision_resnet18_state_dict(), str(path))
    return path


def test_tsm_hybrid_loads_imagenet_except_rsa(imagenet_r18, log_records):
    sd = torchvision_resnet18_state_dict()
    net = hybrid(tsm18(pretrained=str(imagenet_r18), pretrained2d=True))
    net.init_weights()
    b = net.backbone
    # the stem, the blocks without RSA and the other layers of RSA blocks
    torch.testing.assert_close(b.conv1.conv.weight, sd['conv1.weight'])
    torch.testing.assert_close(b.conv1.bn.running_mean, sd['bn1.running_mean'])
    torch.testing.assert_close(b.layer2[0].conv2.conv.weight,
                               sd['layer2.0.conv2.weight'])
    torch.testing.assert_close(b.layer2[1].conv1.conv.net.weight,
                               sd['layer2.1.conv1.weight'])
    torch.testing.assert_close(b.layer2[1].conv2.bn.weight,
                               sd['layer2.1.bn2.weight'])
    # the RSA layers: their own initialisation (I = identity), not loaded
    for _, layer in net.rsa_layers():
        torch.testing.assert_close(layer.I, torch.eye(layer.query_channels))
    text = '\n'.join(log_records)
    assert ("RSA layers with their own initialisation (not loaded) in the "
            "blocks ['layer1.1', 'layer2.1', 'layer3.1', 'layer4.1']") in text
    assert "'layer2.1.conv2.conv.weight'" in text


def test_3d_hybrid_inflates_imagenet_except_rsa(imagenet_r18, log_records):
    sd = torchvision_resnet18_state_dict()
    net = hybrid(slowonly18(pretrained=str(imagenet_r18), pretrained2d=True))
    net.init_weights()
    b = net.backbone
    # layer3 is inflated (3x3x3): the 2D kernel / 3 at every time step
    w2d = sd['layer3.0.conv1.weight']
    w3d = b.layer3[0].conv1.conv.weight
    assert w3d.shape == (256, 128, 3, 3, 3)
    torch.testing.assert_close(w3d, w2d.unsqueeze(2).expand_as(w3d) / 3)
    torch.testing.assert_close(b.layer3[1].conv1.conv.weight[:, :, 1],
                               sd['layer3.1.conv1.weight'] / 3)
    for _, layer in net.rsa_layers():
        torch.testing.assert_close(layer.I, torch.eye(layer.query_channels))
    assert any('ResNet3dSlowOnly-18 initialised by its own init_weights' in m
               for m in log_records)


def test_init_from_scratch_reinitialises_rsa_only_by_its_own_rule():
    net = hybrid(slowonly18())
    for _, layer in net.rsa_layers():
        with torch.no_grad():
            layer.I.zero_()
    net.init_weights()
    for _, layer in net.rsa_layers():
        torch.testing.assert_close(layer.I, torch.eye(layer.query_channels))
    # zero_init_residual=False in the backbone config: unit gammas
    assert torch.all(net.backbone.layer2[1].conv2.bn.weight == 1)


# --------------------------------------------------------------------- #
# the SynthMotion configs: build, forward, a few training iterations
# --------------------------------------------------------------------- #
@pytest.mark.parametrize(
    'config, shape',
    [
        (TSM_CONFIG, (2, 8, 3, 32, 32)),  # Recognizer2D: [N, T, C, H, W]
        (SLOWONLY_CONFIG, (2, 1, 3, 8, 32, 32)),  # Recognizer3D, NCTHW
    ])
def test_hybrid_configs_build_and_classify(config, shape):
    model = build_model(str(config))
    assert type(model.backbone) is RSAHybrid
    assert len(model.backbone.rsa_layers()) == 4
    with torch.no_grad():
        scores, _ = model.extract_feat(torch.randn(shape), stage='head')
    assert scores.shape == (2, 10)
    cfg = model.cfg
    if config == SLOWONLY_CONFIG:
        assert cfg.model.data_preprocessor.format_shape == 'NCTHW'
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader'):
            formats = [
                s['input_format'] for s in cfg[loader].dataset.pipeline
                if s['type'] == 'FormatShape'
            ]
            assert formats == ['NCTHW'], loader


@pytest.mark.parametrize(
    'config', [TSM_CONFIG, SLOWONLY_CONFIG], ids=['tsm_rsa', 'slowonly_rsa'])
def test_hybrid_config_trains(config, synth_dir, tmp_path):
    """Two iterations of tools/train.py on the tiny SynthMotion set, with a
    validation; the checkpoint loads back into the config's model."""
    work_dir = tmp_path / 'work'
    result = run_tool([
        REPO_ROOT / 'tools' / 'train.py', config, '--work-dir', work_dir,
        '--cfg-options', *SMALL_RUN, 'train_cfg.max_epochs=1'
    ],
                      cwd=synth_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert 'RSA layers with their own initialisation (not loaded)' in output
    assert 'Epoch(val) [1][1/1]' in output
    scalars = [
        json.loads(line) for path in work_dir.glob('*/vis_data/scalars.json')
        for line in path.read_text().splitlines()
    ]
    losses = [row['loss'] for row in scalars if 'loss' in row]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert any('acc/top1' in row for row in scalars)
    checkpoint = work_dir / 'epoch_1.pth'
    assert osp.isfile(checkpoint)
    model = build_model(str(config), str(checkpoint))
    assert len(model.backbone.rsa_layers()) == 4
