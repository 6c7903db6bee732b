# Copyright (c) mmrsa contributors. All rights reserved.
"""The weight gradients of ``channel_conv3d`` have the strides of the
parameters they belong to, size-1 dimensions included: DistributedDataParallel
compares them with its bucket views ("Grad strides do not match bucket view
strides", a copy per step otherwise)."""
import pytest
import torch

from mmrsa.models.common import RSA
from mmrsa.models.common.rsa_ops import channel_conv3d


@pytest.mark.parametrize('channels_last', [False, True])
def test_channel_conv_weight_grads_have_the_parameter_strides(channels_last):
    # H2 [D, 1, k...] and G [Cq, 1, k...] as one bank, H1 [G*D, 1, k...]
    # as G banks: the views RSA passes
    h2 = torch.nn.Parameter(torch.randn(6, 1, 3, 3, 3))
    g = torch.nn.Parameter(torch.randn(4, 1, 3, 3, 3))
    h1 = torch.nn.Parameter(torch.randn(4 * 6, 1, 3, 3, 3))
    x = torch.randn(2, 4, 3, 5, 5)
    value = channel_conv3d(
        x,
        torch.cat([h2, g]).transpose(0, 1), (1, 1, 1),
        channels_last=channels_last)
    key = channel_conv3d(
        x, h1.view(4, 6, 3, 3, 3), (1, 1, 1), channels_last=channels_last)
    (value.square().sum() + key.square().sum()).backward()
    for param in (h2, g, h1):
        assert param.grad.stride() == param.stride()


@pytest.mark.parametrize('channels, num_queries', [(16, 4), (64, 2)])
def test_rsa_filter_grads_have_the_parameter_strides(channels, num_queries):
    # (16, 4): per-position loops; (64, 2): batched products, filters last
    layer = RSA(channels, kernel_size=(3, 3, 3), num_queries=num_queries)
    layer(torch.randn(1, channels, 2, 4, 4)).sum().backward()
    for conv in (layer.H1, layer.H2, layer.G):
        assert conv.weight.grad.stride() == conv.weight.stride()
