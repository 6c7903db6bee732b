# Copyright (c) mmrsa contributors. All rights reserved.
"""RSANet's ``transform``: the Table 2 transforms at any block."""
import pytest
import torch

from mmrsa.models.backbones.rsanet import (TRANSFORMS, FrameRSA,
                                           FrameTransform, RSANet)
from mmrsa.models.common import (Conv2Plus1dTransform, Conv3dTransform,
                                 LocalSelfAttention)

LAYER_TYPES = {
    'conv3d': Conv3dTransform,
    'conv2plus1d': Conv2Plus1dTransform,
    'sa': LocalSelfAttention,
    'sa-content': LocalSelfAttention,
    'sa-position': LocalSelfAttention,
    'involution': LocalSelfAttention,
}


def _net(transform, **kwargs):
    kwargs.setdefault('rsa_blocks', ((), (0, ), (1, ), ()))
    kwargs.setdefault('rsa_cfg', dict(kernel_size=(3, 3, 3)))
    return RSANet(
        18, num_segments=4, transform=transform, pretrained=None, **kwargs)


@pytest.mark.parametrize('transform', sorted(LAYER_TYPES))
def test_transform_at_selected_blocks(transform):
    net = _net(transform)
    net.init_weights()
    assert net.rsa_block_names == ['layer2.0', 'layer3.1']
    for name in net.rsa_block_names:
        frame = net.get_submodule(name).conv2.conv
        assert isinstance(frame, FrameTransform)
        assert type(frame.layer) is LAYER_TYPES[transform]
    # BasicBlock strides in conv1: the transform keeps conv2's stride 1
    assert net.layer2[0].conv2.conv.layer.stride == 1
    x = torch.randn(8, 3, 32, 32, requires_grad=True)
    out = net(x)
    assert out.shape == (8, 512, 1, 1)
    out.sum().backward()
    layer = net.layer3[1].conv2.conv.layer
    assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize('transform', ['conv2plus1d', 'sa'])
def test_bottleneck_stride_goes_to_the_transform(transform):
    net = RSANet(
        50,
        num_segments=2,
        transform=transform,
        pretrained=None,
        rsa_blocks=((), (0, ), (), ()),
        rsa_cfg=dict(kernel_size=3))
    layer = net.layer2[0].conv2.conv.layer
    assert layer.stride == 2
    out = net.layer2[0](torch.randn(2, 256, 8, 8))
    assert out.shape == (2, 512, 4, 4)


def test_attention_variants_are_data():
    kinds = {
        t: (TRANSFORMS[t][2]['kernel'], TRANSFORMS[t][2]['softmax'])
        for t in ('sa', 'sa-content', 'sa-position', 'involution')
    }
    assert kinds == {
        'sa': ('content+position', True),
        'sa-content': ('content', True),
        'sa-position': ('position', True),
        'involution': ('position', False),
    }
    net = _net('sa-position', rsa_cfg=dict(kernel_size=3, num_queries=4))
    layer = net.layer3[1].conv2.conv.layer
    assert layer.kernel == 'position' and layer.num_queries == 4


def test_rsa_stays_the_default():
    net = RSANet(
        18,
        num_segments=4,
        rsa_blocks=((), (), (1, ), ()),
        rsa_cfg=dict(kernel_size=3),
        pretrained=None)
    assert net.transform == 'rsa'
    assert isinstance(net.layer3[1].conv2.conv, FrameRSA)


def test_unknown_transform():
    with pytest.raises(ValueError, match="choose one of \\('rsa', 'conv3d'"):
        _net('nonlocal')


def test_rsa_key_for_another_transform():
    with pytest.raises(
            ValueError,
            match="unknown keys \\['latent_dim'\\] "
            "for transform='conv3d'"):
        _net('conv3d', rsa_cfg=dict(kernel_size=3, latent_dim=4))


def test_frames_must_make_whole_clips():
    net = _net('conv3d')
    with pytest.raises(ValueError):
        net.layer3[1].conv2.conv(torch.randn(6, 256, 2, 2))
