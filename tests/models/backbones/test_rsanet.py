# Copyright (c) mmrsa contributors. All rights reserved.
"""Tests for ``mmrsa.models.backbones.rsanet``."""
import math
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from mmengine.registry import init_default_scope

import mmrsa  # noqa: F401  (registers the modules)
from mmaction.registry import MODELS
from mmaction.structures import ActionDataSample
from mmrsa.fileio.checkpoint import torchvision_url
from mmrsa.models.backbones import (PAPER_RSA_BLOCKS, ClipDropPath, FrameRSA,
                                    RSANet, default_rsa_blocks)

init_default_scope('mmaction')


@pytest.fixture(autouse=True, scope='module')
def single_thread():
    """One intra-op thread: these small graphs run many times faster so
    on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# small and fast: 4 frames, small contexts, 32x32 inputs
T = 4
SMALL_RSA = dict(kernel_size=(3, 3, 3), num_queries=4)


def small_net(**kwargs) -> RSANet:
    cfg = dict(depth=50, num_segments=T, rsa_cfg=SMALL_RSA)
    cfg.update(kwargs)
    return RSANet(**cfg)


def frames(num_clips: int = 1, size: int = 32) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(num_clips * T, 3, size, size)


# --------------------------------------------------------------------- #
# structure
# --------------------------------------------------------------------- #
def test_default_rsa_blocks_is_the_papers_for_r50():
    assert default_rsa_blocks((3, 4, 6, 3)) == PAPER_RSA_BLOCKS
    assert PAPER_RSA_BLOCKS == ((2, ), (1, 3), (1, 3, 5), (1, ))
    assert RSANet(depth=50).rsa_blocks == PAPER_RSA_BLOCKS


def test_rsa_layers_replace_the_selected_3x3_convs():
    net = RSANet(depth=50)
    assert net.rsa_block_names == [
        'layer1.2', 'layer2.1', 'layer2.3', 'layer3.1', 'layer3.3', 'layer3.5',
        'layer4.1'
    ]
    rsa_layers = [m for m in net.modules() if isinstance(m, FrameRSA)]
    assert len(rsa_layers) == 7
    for name, block in net._blocks():
        conv = block.conv2.conv
        if name in net.rsa_block_names:
            assert isinstance(conv, FrameRSA)
            assert conv.in_channels == conv.out_channels == block.planes
            assert conv.kernel_size == (5, 7, 7)
            assert conv.num_queries == 8
            assert conv.latent_dim == block.planes // 8
        else:
            assert isinstance(conv, nn.Conv2d)


def test_rsa_cfg_reaches_every_layer_and_per_stage_values():
    net = RSANet(
        depth=50,
        rsa_cfg=dict(kernel_size=(3, 5, 5), latent_dim=(4, 8, 16, 32)))
    for stage, dim in enumerate((4, 8, 16, 32)):
        layers = [
            m for m in getattr(net, f'layer{stage + 1}').modules()
            if isinstance(m, FrameRSA)
        ]
        assert layers and all(m.latent_dim == dim for m in layers)
        assert all(m.kernel_size == (3, 5, 5) for m in layers)


def test_basic_block_depths_replace_the_second_conv():
    net = RSANet(depth=18, num_segments=T, rsa_cfg=SMALL_RSA)
    assert net.rsa_blocks == default_rsa_blocks((2, 2, 2, 2))
    for name, block in net._blocks():
        assert isinstance(block.conv1.conv, nn.Conv2d)
        if name in net.rsa_block_names:
            assert isinstance(block.conv2.conv, FrameRSA)
    out = net(frames())
    assert out.shape == (T, 512, 1, 1)


def test_rsa_in_a_strided_block_downsamples():
    net = small_net(rsa_blocks=((), (0, ), (), ()))
    layer = net.layer2[0].conv2.conv
    assert isinstance(layer, FrameRSA) and layer.stride == 2
    assert net(frames()).shape == (T, 2048, 1, 1)


@pytest.mark.parametrize('clips', [1, 2])
def test_forward_shapes(clips):
    net = small_net(out_indices=(0, 1, 2, 3))
    net.init_weights()
    outs = net(frames(clips, size=64))
    expected = [(256, 16), (512, 8), (1024, 4), (2048, 2)]
    assert [tuple(o.shape) for o in outs] == [(clips * T, c, s, s)
                                              for c, s in expected]


def test_frame_batch_that_is_not_whole_clips_raises():
    net = small_net()
    with pytest.raises(ValueError, match='num_segments=4'):
        net(torch.randn(T + 1, 3, 32, 32))


def test_clips_are_independent():
    """Two clips in one batch give what each gives alone (eval mode)."""
    net = small_net().eval()
    x = frames(2)
    with torch.no_grad():
        both = net(x)
        first = net(x[:T])
    torch.testing.assert_close(both[:T], first, rtol=1e-4, atol=1e-5)


def test_frame_rsa_matches_rsa_on_clip_tensors():
    layer = FrameRSA(16, 16, num_segments=T, **SMALL_RSA)
    x = torch.randn(2 * T, 16, 6, 6)
    clip = x.reshape(2, T, 16, 6, 6).transpose(1, 2)  # [N, C, T, H, W]
    expected = super(FrameRSA, layer).forward(clip).transpose(1, 2)
    torch.testing.assert_close(layer(x), expected.reshape(2 * T, 16, 6, 6))


# --------------------------------------------------------------------- #
# stochastic depth
# --------------------------------------------------------------------- #
def test_drop_path_rates_grow_linearly():
    net = small_net(drop_path_rate=0.2)
    blocks = [b for _, b in net._blocks()]
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for b in blocks]
    expected = [0.2 * i / (len(blocks) - 1) for i in range(len(blocks))]
    assert rates == pytest.approx(expected)
    assert isinstance(blocks[0].drop_path, nn.Identity)


def test_clip_drop_path_drops_whole_clips():
    drop = ClipDropPath(0.5, num_segments=T).train()
    torch.manual_seed(1)
    out = drop(torch.ones(16 * T, 3, 2, 2))
    per_clip = out.reshape(16, -1)
    # every clip is either all zero or all 1 / keep_prob
    assert set(per_clip.unique().tolist()) <= {0., 2.}
    assert (per_clip == per_clip[:, :1]).all()
    assert 0 < (per_clip[:, 0] == 0).sum() < 16
    drop.eval()
    assert (drop(torch.ones(T, 3)) == 1).all()


def test_clip_drop_path_fused_residual_matches_unfused():
    drop = ClipDropPath(0.5, num_segments=T).train()
    branch = torch.randn(16 * T, 3, 2, 2, requires_grad=True)
    identity = torch.randn(16 * T, 3, 2, 2, requires_grad=True)
    torch.manual_seed(3)
    fused = drop.add_to(branch, identity)
    fused_grads = torch.autograd.grad(fused.sum(), (branch, identity))
    torch.manual_seed(3)
    plain = drop(branch) + identity
    plain_grads = torch.autograd.grad(plain.sum(), (branch, identity))
    torch.testing.assert_close(fused, plain)
    for a, b in zip(fused_grads, plain_grads):
        torch.testing.assert_close(a, b)
    # some clips were dropped: their frames carry only the identity
    dropped = (fused - identity).reshape(16, -1).abs().amax(1) == 0
    assert 0 < int(dropped.sum()) < 16
    drop.eval()
    torch.testing.assert_close(
        drop.add_to(branch, identity), branch + identity)


# --------------------------------------------------------------------- #
# invalid arguments
# --------------------------------------------------------------------- #
def test_invalid_depth():
    with pytest.raises(ValueError, match='depth'):
        RSANet(depth=152)


def test_invalid_num_segments():
    with pytest.raises(ValueError, match='num_segments'):
        RSANet(depth=50, num_segments=0)


def test_invalid_drop_path_rate():
    with pytest.raises(ValueError, match='drop_path_rate'):
        RSANet(depth=50, drop_path_rate=1.0)


def test_invalid_rsa_blocks_length():
    with pytest.raises(ValueError, match='one sequence'):
        RSANet(depth=50, rsa_blocks=((2, ), (1, 3)))


def test_invalid_rsa_block_index():
    with pytest.raises(ValueError, match=r'\[0, 3\)'):
        RSANet(depth=50, rsa_blocks=((3, ), (), (), ()))


def test_unknown_rsa_cfg_key():
    with pytest.raises(ValueError, match='unknown keys'):
        RSANet(depth=50, rsa_cfg=dict(nh=8))


def test_rsa_cfg_not_a_dict():
    with pytest.raises(ValueError, match='rsa_cfg must be a dict'):
        RSANet(depth=50, rsa_cfg=[dict(num_queries=8)])


def test_per_stage_value_of_wrong_length():
    with pytest.raises(ValueError, match='one value per stage'):
        RSANet(depth=50, rsa_cfg=dict(latent_dim=(4, 8)))


def test_rsa_in_a_dilated_stage():
    with pytest.raises(ValueError, match='dilation'):
        RSANet(depth=50, dilations=(1, 1, 1, 2))


def test_pretrained_not_a_str():
    with pytest.raises(ValueError, match='pretrained'):
        RSANet(depth=50, pretrained=True)


def test_torchvision_pretrain_false():
    with pytest.raises(ValueError, match='load_from'):
        RSANet(depth=50, torchvision_pretrain=False)


# --------------------------------------------------------------------- #
# initialisation
# --------------------------------------------------------------------- #
def torchvision_resnet50_state_dict() -> OrderedDict:
    """A fake ImageNet ResNet-50 in torchvision's layout and key names."""
    gen = torch.Generator().manual_seed(0)
    sd = OrderedDict()

    def conv(name, cout, cin, k):
        sd[f'{name}.weight'] = torch.randn(cout, cin, k, k, generator=gen)

    def bn(name, c):
        sd[f'{name}.weight'] = torch.rand(c, generator=gen) + 0.5
        sd[f'{name}.bias'] = torch.randn(c, generator=gen)
        sd[f'{name}.running_mean'] = torch.randn(c, generator=gen)
        sd[f'{name}.running_var'] = torch.rand(c, generator=gen) + 0.5
        sd[f'{name}.num_batches_tracked'] = torch.tensor(7)

    conv('conv1', 64, 3, 7)
    bn('bn1', 64)
    cin = 64
    for stage, (planes, blocks) in enumerate(
            zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for i in range(blocks):
            p = f'layer{stage}.{i}'
            conv(f'{p}.conv1', planes, cin, 1)
            bn(f'{p}.bn1', planes)
            conv(f'{p}.conv2', planes, planes, 3)
            bn(f'{p}.bn2', planes)
            conv(f'{p}.conv3', planes * 4, planes, 1)
            bn(f'{p}.bn3', planes * 4)
            if i == 0:
                conv(f'{p}.downsample.0', planes * 4, cin, 1)
                bn(f'{p}.downsample.1', planes * 4)
            cin = planes * 4
    sd['fc.weight'] = torch.randn(1000, 2048, generator=gen)
    sd['fc.bias'] = torch.randn(1000, generator=gen)
    return sd


class RecordingLogger:
    """Collects what the loader logs."""

    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(('info', msg))

    def warning(self, msg):
        self.lines.append(('warning', msg))


@pytest.fixture(scope='module')
def fake_checkpoint(tmp_path_factory):
    sd = torchvision_resnet50_state_dict()
    path = tmp_path_factory.mktemp('ckpt') / 'resnet50_torchvision.pth'
    torch.save(sd, path)
    return str(path), sd


def test_pretrained_loads_all_but_rsa_blocks(fake_checkpoint):
    path, sd = fake_checkpoint
    net = RSANet(depth=50, pretrained=path)
    net.init_weights()

    # stem and plain blocks: every tensor from the checkpoint
    torch.testing.assert_close(net.conv1.conv.weight, sd['conv1.weight'])
    torch.testing.assert_close(net.conv1.bn.running_var, sd['bn1.running_var'])
    for name, block in net._blocks():
        if name in net.rsa_block_names:
            continue
        torch.testing.assert_close(block.conv2.conv.weight,
                                   sd[f'{name}.conv2.weight'])
        torch.testing.assert_close(block.last_norm.weight,
                                   sd[f'{name}.bn3.weight'])
        assert block.conv1.bn.num_batches_tracked == 7
    torch.testing.assert_close(net.layer1[0].downsample.conv.weight,
                               sd['layer1.0.downsample.0.weight'])
    torch.testing.assert_close(net.layer4[0].downsample.bn.bias,
                               sd['layer4.0.downsample.1.bias'])

    # RSA blocks: MSRA init, unit BNs, zero last-BN gamma
    for name in net.rsa_block_names:
        stage, index = name.split('.')
        block = getattr(net, stage)[int(index)]
        conv1 = block.conv1.conv.weight
        assert not torch.equal(conv1, sd[f'{name}.conv1.weight'])
        fan_out = conv1.shape[0]  # 1x1 kernels
        assert conv1.std().item() == pytest.approx(
            math.sqrt(2. / fan_out), rel=0.2)
        assert (block.conv1.bn.weight == 1).all()
        assert (block.conv2.bn.running_mean == 0).all()
        assert (block.last_norm.weight == 0).all()
        rsa = block.conv2.conv
        torch.testing.assert_close(rsa.I.data, torch.eye(rsa.query_channels))
        proj = rsa.projection.weight
        assert proj.std().item() == pytest.approx(
            math.sqrt(2. / proj.shape[0]), rel=0.2)


def test_pretrained_loading_reports_what_it_did(fake_checkpoint):
    path, _ = fake_checkpoint
    net = RSANet(depth=50)
    logger = RecordingLogger()
    loaded, not_loaded = net.load_imagenet_weights(path, logger)
    assert loaded == ['stem'] + [
        name for name, _ in net._blocks() if name not in net.rsa_block_names
    ]
    assert not_loaded == net.rsa_block_names
    text = '\n'.join(msg for _, msg in logger.lines)
    assert all(level == 'info' for level, _ in logger.lines)
    assert 'layer1.2' in text and 'fc.* (2)' in text
    assert 'layer4.1.* (' in text  # unused tensors of an RSA block


def test_checkpoint_that_does_not_fit_is_reported(tmp_path):
    sd = torchvision_resnet50_state_dict()
    sd['layer1.0.conv2.weight'] = torch.zeros(1)
    path = tmp_path / 'broken.pth'
    torch.save(dict(state_dict=sd), path)
    net = RSANet(depth=50, pretrained=str(path))
    logger = RecordingLogger()
    loaded, not_loaded = net.load_imagenet_weights(str(path), logger)
    assert 'layer1.0' in not_loaded and 'layer1.0' not in loaded
    assert any(level == 'warning' and 'layer1.0.conv2.weight' in msg
               for level, msg in logger.lines)
    net.init_weights()
    assert (net.layer1[0].last_norm.weight == 0).all()  # left at MSRA init


def test_scratch_init_zeroes_every_last_bn():
    net = small_net()
    net.init_weights()
    for _, block in net._blocks():
        assert (block.last_norm.weight == 0).all()
    # each residual branch starts at zero: the blocks are identities + ReLU
    x = torch.rand(T, 256, 8, 8)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net.layer1[1](x), x)


def test_torchvision_scheme_resolves_without_torchvision(monkeypatch):
    # torchvision absent, whether or not it is installed here
    monkeypatch.setitem(sys.modules, 'torchvision', None)
    with pytest.raises(ImportError):
        import torchvision  # noqa: F401
    url = torchvision_url('torchvision://resnet50')
    assert url.startswith('https://download.pytorch.org/models/resnet50')
    with pytest.raises(ValueError, match='torchvision'):
        torchvision_url('torchvision://no_such_model')


# --------------------------------------------------------------------- #
# MMAction2 heads and necks
# --------------------------------------------------------------------- #
PREPROCESSOR = dict(
    type='ActionDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    format_shape='NCHW')


def _recognizer(cls_head, neck=None, out_indices=(3, ), test_cfg=None):
    cfg = dict(
        type='Recognizer2D',
        backbone=dict(
            type='RSANet',
            depth=50,
            num_segments=T,
            rsa_cfg=SMALL_RSA,
            drop_path_rate=0.1,
            out_indices=out_indices),
        cls_head=cls_head,
        data_preprocessor=PREPROCESSOR,
        test_cfg=test_cfg)
    if neck is not None:
        cfg['neck'] = neck
    return MODELS.build(cfg)


def _train_and_predict(model, num_classes, clips_in_test=1):
    torch.manual_seed(0)
    model.init_weights()
    samples = [
        ActionDataSample().set_gt_label(i % num_classes) for i in range(2)
    ]
    inputs = torch.randn(2, T, 3, 32, 32)
    model.train()
    losses = model(inputs, samples, mode='loss')
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    loss.backward()
    grads = [
        p.grad for n, p in model.named_parameters()
        if 'conv2.conv' in n and p.requires_grad
    ]
    assert grads and all(g is not None for g in grads)
    model.eval()
    with torch.no_grad():
        test_inputs = torch.randn(2, clips_in_test * T, 3, 32, 32)
        preds = model(test_inputs, samples, mode='predict')
    assert [p.pred_score.shape for p in preds] == [(num_classes, )] * 2


@pytest.mark.parametrize('head', [
    dict(
        type='TSNHead',
        num_classes=5,
        in_channels=2048,
        dropout_ratio=0.3,
        average_clips='prob'),
    dict(
        type='TSMHead',
        num_classes=5,
        in_channels=2048,
        num_segments=T,
        is_shift=False,
        average_clips='prob'),
    dict(
        type='TRNHead',
        num_classes=5,
        in_channels=2048,
        num_segments=T,
        relation_type='TRNMultiScale',
        hidden_dim=64,
        average_clips='prob'),
])
def test_with_mmaction_heads(head):
    # TSN takes two clips per video at test time (twice_sample)
    clips = 2 if head['type'] == 'TSNHead' else 1
    _train_and_predict(_recognizer(head), 5, clips_in_test=clips)


def test_with_tpn_neck():
    neck = dict(
        type='TPN',
        in_channels=(1024, 2048),
        out_channels=1024,
        spatial_modulation_cfg=dict(
            in_channels=(1024, 2048), out_channels=2048),
        temporal_modulation_cfg=dict(downsample_scales=(T, T)),
        upsample_cfg=dict(scale_factor=(1, 1, 1)),
        downsample_cfg=dict(downsample_scale=(1, 1, 1)),
        level_fusion_cfg=dict(
            in_channels=(1024, 1024),
            mid_channels=(1024, 1024),
            out_channels=2048,
            downsample_scales=((1, 1, 1), (1, 1, 1))),
        aux_head_cfg=dict(out_channels=5, loss_weight=0.5))
    head = dict(
        type='TPNHead',
        num_classes=5,
        in_channels=2048,
        spatial_type='avg',
        consensus=dict(type='AvgConsensus', dim=1),
        average_clips='prob')
    model = _recognizer(
        head, neck=neck, out_indices=(2, 3), test_cfg=dict(fcn_test=True))
    _train_and_predict(model, 5)


def test_with_cp_frozen_stages_and_norm_eval():
    net = small_net(
        with_cp=True, frozen_stages=1, norm_eval=True, drop_path_rate=0.1)
    net.init_weights()
    net.train()
    assert not any(p.requires_grad for p in net.layer1.parameters())
    assert not net.layer2[1].conv1.bn.training
    x = frames().requires_grad_()
    net(x).sum().backward()
    assert net.layer2[1].conv2.conv.projection.weight.grad is not None


@pytest.mark.parametrize('zero', [True, False])
def test_zero_init_residual_switch(zero):
    from mmrsa.models import RSANet
    net = RSANet(
        depth=18,
        num_segments=2,
        rsa_blocks=((), (1, ), (), ()),
        rsa_cfg=dict(kernel_size=(1, 3, 3), num_queries=4),
        zero_init_residual=zero)
    net.init_weights()
    gamma = net.layer2[1].last_norm.weight
    assert bool((gamma == 0).all()) is zero
    assert bool((gamma == 1).all()) is (not zero)
