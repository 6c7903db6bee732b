# Copyright (c) mmrsa contributors. All rights reserved.
"""mmrsa.models.common.local_attention and its float64 reference
(attention_reference.py): the self-attention rows of the paper's Table 2."""
import pytest
import torch

from mmaction.registry import MODELS
from mmrsa.models.common import (RSA, LocalSelfAttention,
                                 attention_kernel_reference,
                                 attention_reference)

VARIANTS = [  # (kernel, softmax): the four self-attention rows of Table 2
    ('content+position', True),
    ('content', True),
    ('position', True),
    ('position', False),
]


def _make(channels=16, dtype=torch.float64, seed=0, **kwargs):
    torch.manual_seed(seed)
    layer = LocalSelfAttention(channels, **kwargs).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # P away from its small init
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=dtype))
    return layer


@pytest.mark.parametrize('kernel,softmax', VARIANTS)
@pytest.mark.parametrize('options', [
    dict(num_queries=4, kernel_size=(3, 3, 3)),
    dict(num_queries=2, kernel_size=(1, 3, 5), stride=2),
    dict(num_queries=8, kernel_size=(5, 3, 3)),
])
def test_matches_float64_reference(kernel, softmax, options):
    layer = _make(16, kernel=kernel, softmax=softmax, **options)
    x = torch.randn(2, 16, 3, 4, 5, dtype=torch.float64)
    out = layer(x)
    ref = attention_reference(layer, x)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12)


def test_float32_layer_matches_reference():
    layer = _make(
        16, dtype=torch.float32, num_queries=4, kernel_size=(3, 3, 3))
    x = torch.randn(1, 16, 3, 4, 4)
    assert torch.allclose(
        layer(x).double(), attention_reference(layer, x), atol=1e-5)


@pytest.mark.parametrize('stride,out_hw', [(1, (7, 6)), (2, (4, 3))])
def test_output_shape(stride, out_hw):
    layer = LocalSelfAttention(32, 64, kernel_size=(5, 7, 7), stride=stride)
    out = layer(torch.randn(2, 32, 8, 7, 6))
    assert out.shape == (2, 64, 8) + out_hw


@pytest.mark.parametrize('kernel,softmax', VARIANTS)
def test_parameters(kernel, softmax):
    layer = LocalSelfAttention(
        64,
        kernel_size=(5, 7, 7),
        num_queries=8,
        kernel=kernel,
        softmax=softmax)
    cq = 8
    key = cq if 'content' in kernel else 0
    expected = 64 * (64 + key + cq)
    if 'position' in kernel:
        expected += 5 * 7 * 7 * cq
    assert sum(p.numel() for p in layer.parameters()) == expected


def test_kernels_match_reference_and_sum_to_one():
    layer = _make(16, num_queries=4, kernel_size=(3, 3, 3))
    x = torch.randn(1, 16, 3, 4, 4, dtype=torch.float64)
    kernels = layer.kernels(x)  # [N, L, T, H, W, kt, kh, kw]
    assert kernels.shape == (1, 4, 3, 4, 4, 3, 3, 3)
    sums = kernels.flatten(5).sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums))
    # a corner: the neighbours outside the clip get no weight
    corner = kernels[0, 1, 0, 0, 0]
    assert (corner[0] == 0).all() and (corner[:, 0] == 0).all()
    for query, pos in [(1, (0, 0, 0)), (3, (1, 2, 3))]:
        ref = attention_kernel_reference(layer, x, 0, query, pos)
        got = kernels[0, query, pos[0], pos[1], pos[2]].flatten()
        assert torch.allclose(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('kernel,softmax', VARIANTS)
def test_gradients(kernel, softmax):
    layer = _make(
        8,
        num_queries=2,
        kernel_size=(3, 3, 3),
        kernel=kernel,
        softmax=softmax)
    x = torch.randn(1, 8, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x, ), eps=1e-6, atol=1e-6)
    layer(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in layer.parameters())


def test_involution_is_rsa_basic_kernel_on_basic_context():
    """q P^T without softmax is RSA's kV XV (norm='none'), with
    P = H2 P1^T."""
    torch.manual_seed(0)
    rsa = RSA(
        16,
        num_queries=4,
        kernel_size=(3, 3, 3),
        kernel_type='V',
        context_type='V',
        norm='none').double()
    inv = LocalSelfAttention(
        16,
        num_queries=4,
        kernel_size=(3, 3, 3),
        kernel='position',
        softmax=False).double()
    with torch.no_grad():
        inv.projection.weight.copy_(rsa.projection.weight)
        h2 = rsa.H2.weight.flatten(1).t()  # [M, D]
        inv.position.copy_(h2 @ rsa.P1.t())  # [M, Cq]
    x = torch.randn(2, 16, 4, 5, 5, dtype=torch.float64)
    assert torch.allclose(inv(x), rsa(x), rtol=1e-10, atol=1e-12)


def test_registered():
    layer = MODELS.build(
        dict(type='LocalSelfAttention', in_channels=16, num_queries=4))
    assert isinstance(layer, LocalSelfAttention)


@pytest.mark.parametrize('kwargs,match', [
    (dict(kernel='relational'), "choose one of \\('content\\+position'"),
    (dict(softmax='yes'), 'softmax must be True or False'),
    (dict(num_queries=3), 'not divisible by num_queries=3'),
    (dict(num_queries=0), 'num_queries must be a positive int'),
    (dict(stride=0), 'stride must be a positive int'),
    (dict(kernel_size=(4, 3, 3)), 'positive odd sizes'),
    (dict(kernel_size=(3, 3)), 'sequence of 3 ints'),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LocalSelfAttention(16, **kwargs)


def test_invalid_input():
    layer = LocalSelfAttention(16, num_queries=4, kernel_size=3)
    with pytest.raises(ValueError, match='5-D input'):
        layer(torch.randn(2, 16, 4, 4))
    with pytest.raises(ValueError, match='in_channels=16'):
        layer(torch.randn(1, 8, 2, 4, 4))
