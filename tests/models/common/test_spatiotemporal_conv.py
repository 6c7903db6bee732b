# Copyright (c) mmrsa contributors. All rights reserved.
"""mmrsa.models.common.spatiotemporal_conv: the static rows of the paper's
Table 2."""
import pytest
import torch
import torch.nn.functional as F

from mmaction.registry import MODELS
from mmrsa.models.common import Conv2Plus1dTransform, Conv3dTransform

LAYERS = [Conv3dTransform, Conv2Plus1dTransform]


@pytest.mark.parametrize('layer_type', LAYERS)
@pytest.mark.parametrize('stride,out_hw', [(1, (7, 6)), (2, (4, 3))])
def test_output_shape(layer_type, stride, out_hw):
    layer = layer_type(16, 32, kernel_size=(5, 7, 7), stride=stride)
    out = layer(torch.randn(2, 16, 8, 7, 6))
    assert out.shape == (2, 32, 8) + out_hw


def test_parameters_are_those_of_table_2():
    """C -> C convolutions: M C^2 for 3D, (kh kw + kt) C^2 for (2+1)D (plus
    the mid batch norm)."""
    c = 32
    conv3d = Conv3dTransform(c, kernel_size=(5, 7, 7))
    assert sum(p.numel() for p in conv3d.parameters()) == 245 * c * c
    conv21 = Conv2Plus1dTransform(c, kernel_size=(5, 7, 7))
    assert sum(p.numel() for p in conv21.parameters()) == 54 * c * c + 2 * c
    linear = Conv2Plus1dTransform(
        c, kernel_size=(5, 7, 7), mid_activation=False)
    assert sum(p.numel() for p in linear.parameters()) == 54 * c * c


def test_conv3d_with_one_frame_kernel_is_a_2d_convolution():
    layer = Conv3dTransform(4, 6, kernel_size=(1, 3, 3), stride=2).double()
    x = torch.randn(2, 4, 3, 5, 5, dtype=torch.float64)
    out = layer(x)
    weight = layer.conv.weight[:, :, 0]
    for t in range(3):
        frame = F.conv2d(x[:, :, t], weight, stride=2, padding=1)
        assert torch.allclose(out[:, :, t], frame)


def test_conv2plus1d_is_spatial_then_temporal():
    layer = Conv2Plus1dTransform(
        4, kernel_size=(3, 3, 3), mid_activation=False).double()
    x = torch.randn(1, 4, 5, 4, 4, dtype=torch.float64)
    spatial = F.conv3d(x, layer.spatial.weight, padding=(0, 1, 1))
    expected = F.conv3d(spatial, layer.temporal.weight, padding=(1, 0, 0))
    assert torch.allclose(layer(x), expected)


@pytest.mark.parametrize('layer_type', LAYERS)
def test_gradients(layer_type):
    layer = layer_type(4, kernel_size=(3, 3, 3)).double()
    x = torch.randn(1, 4, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize('name', ['Conv3dTransform', 'Conv2Plus1dTransform'])
def test_registered(name):
    layer = MODELS.build(dict(type=name, in_channels=8, kernel_size=3))
    assert type(layer).__name__ == name


@pytest.mark.parametrize('layer_type', LAYERS)
@pytest.mark.parametrize('kwargs,match', [
    (dict(kernel_size=(4, 7, 7)), 'positive odd sizes'),
    (dict(kernel_size=(5, 7)), 'sequence of 3 ints'),
    (dict(kernel_size='5x7x7'), 'sequence of 3 ints'),
    (dict(stride=0), 'stride must be a positive int'),
    (dict(out_channels=0), 'out_channels must be a positive int'),
])
def test_invalid_arguments(layer_type, kwargs, match):
    with pytest.raises(ValueError, match=match):
        layer_type(8, **kwargs)


def test_invalid_mid_activation():
    with pytest.raises(ValueError, match='mid_activation must be True or'):
        Conv2Plus1dTransform(8, mid_activation=1)


@pytest.mark.parametrize('layer_type', LAYERS)
def test_invalid_input(layer_type):
    layer = layer_type(8, kernel_size=3)
    with pytest.raises(ValueError, match='5-D input'):
        layer(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match='in_channels=8'):
        layer(torch.randn(1, 4, 2, 4, 4))
