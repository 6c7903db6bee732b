# Copyright (c) mmrsa contributors. All rights reserved.
import itertools

import pytest
import torch
import torch.nn.functional as F

from mmrsa.models.common import RSA
from mmrsa.models.common import rsa as rsa_module
from mmrsa.models.common import rsa_reference
from mmrsa.models.common.rsa_ops import (MAX_LOOP_CONTRACTION, channel_conv3d,
                                         contiguous_grad, per_position_matmul,
                                         use_position_loops)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


# --------------------------------------------------------------------------
# channel_conv3d == grouped conv3d
# --------------------------------------------------------------------------
def _plain_channel_conv(x, weight, padding):
    """Channel c filtered by bank c // (C / banks): ``[N, C, O, T, H, W]``."""
    n, c = x.shape[:2]
    banks, o = weight.shape[:2]
    per_channel = weight.repeat_interleave(c // banks, dim=0)  # [C, O, k..]
    out = F.conv3d(
        x,
        per_channel.reshape(c * o, 1, *weight.shape[2:]),
        padding=padding,
        groups=c)
    return out.view(n, c, o, *out.shape[2:])


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('n,c,banks', [(1, 4, 4), (2, 4, 4), (2, 6, 1),
                                       (1, 6, 1), (2, 6, 3), (1, 4, 2)])
def test_channel_conv3d_matches_grouped_conv(channels_last, n, c, banks):
    torch.manual_seed(0)
    kernel, padding = (3, 5, 3), (1, 2, 1)
    x = torch.randn(n, c, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(
        banks, 3, *kernel, dtype=torch.float64, requires_grad=True)
    out = channel_conv3d(x, weight, padding, channels_last=channels_last)
    expected = _plain_channel_conv(x, weight, padding)
    if channels_last:  # [C, N, T, H, W, O] -> [N, C, O, T, H, W]
        assert out.shape == (c, n, 4, 6, 5, 3)
        out = out.permute(1, 0, 5, 2, 3, 4)
    else:
        assert out.shape == (n, c, 3, 4, 6, 5)
    assert _rel_err(out, expected) <= 1e-12
    grad = torch.randn_like(expected)
    got = torch.autograd.grad(out, (x, weight), grad)
    want = torch.autograd.grad(expected, (x, weight), grad)
    for g, e in zip(got, want):
        assert g.shape == e.shape
        assert _rel_err(g, e) <= 1e-12


@pytest.mark.parametrize('channels_last', [False, True])
def test_channel_conv3d_gradcheck(channels_last):
    x = torch.randn(2, 4, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(
        2, 2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: channel_conv3d(a, b, (1, 1, 1), channels_last),
        (x, weight))


def test_channel_conv3d_float32_and_single_input():
    """float32 runs through oneDNN; gradients for x or weight alone."""
    torch.manual_seed(0)
    x = torch.randn(1, 8, 8, 14, 14, requires_grad=True)
    weight = torch.randn(1, 16, 5, 7, 7, requires_grad=True)
    out = channel_conv3d(x, weight, (2, 3, 3))
    expected = _plain_channel_conv(x, weight, (2, 3, 3))
    assert _rel_err(out, expected) <= 1e-5
    (grad_x, ) = torch.autograd.grad(out.sum(), x)
    (grad_w, ) = torch.autograd.grad(
        channel_conv3d(x.detach(), weight, (2, 3, 3)).sum(), weight)
    want_x, want_w = torch.autograd.grad(expected.sum(), (x, weight))
    assert _rel_err(grad_x, want_x) <= 1e-5
    assert _rel_err(grad_w, want_w) <= 1e-5


def test_channel_conv3d_bad_shapes():
    with pytest.raises(ValueError, match='banks dividing C'):
        channel_conv3d(
            torch.randn(1, 6, 2, 3, 3), torch.randn(4, 2, 1, 3, 3), (0, 1, 1))
    with pytest.raises(ValueError, match=r'x \[N, C, T, H, W\]'):
        channel_conv3d(
            torch.randn(6, 2, 3, 3), torch.randn(1, 2, 1, 3, 3), (0, 1, 1))


# --------------------------------------------------------------------------
# per_position_matmul == matmul
# --------------------------------------------------------------------------
@pytest.mark.parametrize('m,k,n', [(3, 4, 5), (8, 8, 8), (1, 1, 2)])
def test_per_position_matmul_matches_matmul(m, k, n):
    torch.manual_seed(0)
    a = torch.randn(2, m, k, 7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, k, n, 7, dtype=torch.float64, requires_grad=True)
    out = per_position_matmul(a, b)
    expected = torch.matmul(a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2))
    expected = expected.permute(0, 2, 3, 1)
    assert out.shape == (2, m, n, 7)
    assert _rel_err(out, expected) <= 1e-12
    grad = torch.randn_like(expected)
    for g, e in zip(
            torch.autograd.grad(out, (a, b), grad),
            torch.autograd.grad(expected, (a, b), grad)):
        assert _rel_err(g, e) <= 1e-12


def test_per_position_matmul_strided_inputs_and_gradcheck():
    """Transposed views, as the layer passes them."""
    a = torch.randn(1, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    out = per_position_matmul(a.transpose(1, 2), b.transpose(1, 2))
    expected = torch.einsum('nkip,njkp->nijp', a, b)
    assert _rel_err(out, expected) <= 1e-12
    assert torch.autograd.gradcheck(
        lambda x, y: per_position_matmul(x.transpose(1, 2), y.transpose(1, 2)),
        (a, b))


def test_per_position_matmul_half_precision_sums_in_float32():
    """bf16 inputs (autocast) are summed in float32 and rounded once: the
    result is the exact product of the bf16 inputs up to that rounding."""
    torch.manual_seed(0)
    a = torch.randn(1, 4, 64, 50).bfloat16()
    b = torch.randn(1, 64, 4, 50).bfloat16()
    out = per_position_matmul(a, b)
    assert out.dtype == torch.bfloat16
    exact = torch.einsum('nikp,nkjp->nijp', a.double(), b.double())
    # the float32 sum, rounded once to bf16 (8 bits of mantissa)
    assert _rel_err(out.double(), exact.bfloat16().double()) <= 1e-2
    torch.testing.assert_close(out, exact.bfloat16(), rtol=2**-7, atol=0)


def test_per_position_matmul_bad_shapes():
    with pytest.raises(ValueError, match=r'a \[N, m, k, P\]'):
        per_position_matmul(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))


def test_contiguous_grad():
    x = torch.randn(3, 4, requires_grad=True)
    hidden = 2 * x
    y = contiguous_grad(hidden)
    assert torch.equal(y, hidden)
    weight = torch.arange(12.).view(4, 3)
    # without it, the gradient reaching ``hidden`` is a transposed view
    (grad, ) = torch.autograd.grad((y.t() * weight).sum(), hidden)
    assert grad.is_contiguous() and torch.equal(grad, weight.t())


def test_use_position_loops():
    cpu = torch.zeros(1)
    assert use_position_loops(cpu, 8, 8, 8)
    assert use_position_loops(cpu, 8, MAX_LOOP_CONTRACTION)
    assert not use_position_loops(cpu, 8, MAX_LOOP_CONTRACTION + 1)
    assert not use_position_loops(torch.zeros(1, device='meta'), 8, 8)


# --------------------------------------------------------------------------
# the layer through both memory layouts
# --------------------------------------------------------------------------
TYPES = ('V', 'R', 'VR')


@pytest.fixture(params=['positions_last', 'positions_first'])
def layout(request, monkeypatch):
    """Force the layer through one of its two code paths."""
    loops = request.param == 'positions_last'
    monkeypatch.setattr(rsa_module, 'use_position_loops', lambda *args: loops)
    return request.param


def _make(channels, seed=0, dtype=torch.float64, **kwargs):
    torch.manual_seed(seed)
    layer = RSA(channels, **kwargs).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=dtype))
    return layer


@pytest.mark.parametrize('kernel_type,context_type',
                         list(itertools.product(TYPES, TYPES)))
@pytest.mark.parametrize('batch', [1, 2])
def test_layouts_match_reference(layout, kernel_type, context_type, batch):
    layer = _make(
        16,
        num_queries=2,
        latent_dim=3,
        corr_groups=4,
        kernel_size=(3, 3, 5),
        kernel_type=kernel_type,
        context_type=context_type)
    x = torch.randn(
        batch, 16, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    expected = rsa_reference(layer, x)
    assert _rel_err(out, expected) <= 1e-10
    grad = torch.randn_like(out)
    inputs = (x, ) + tuple(layer.parameters())
    for g, e in zip(
            torch.autograd.grad(out, inputs, grad),
            torch.autograd.grad(expected, inputs, grad)):
        assert _rel_err(g, e) <= 1e-10


@pytest.mark.parametrize('kernel_type,context_type', [('VR', 'VR'), ('R', 'R'),
                                                      ('V', 'V')])
def test_layouts_gradcheck(layout, kernel_type, context_type):
    layer = _make(
        4,
        num_queries=2,
        latent_dim=3,
        kernel_size=(3, 3, 3),
        kernel_type=kernel_type,
        context_type=context_type)
    x = torch.randn(2, 4, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    names = [name for name, _ in layer.named_parameters()]

    def func(inp, *weights):
        return torch.func.functional_call(layer, dict(zip(names, weights)),
                                          (inp, ))

    assert torch.autograd.gradcheck(
        func, (x, ) + tuple(layer.parameters()), eps=1e-6, atol=1e-5)


def test_layouts_agree_in_float32(layout):
    """The paper's layer (Cq = 8) in float32, against the reference."""
    layer = _make(64, dtype=torch.float32)
    x = torch.randn(2, 64, 4, 9, 8)
    assert _rel_err(layer(x), rsa_reference(layer, x)) <= 1e-5


# --------------------------------------------------------------------------
# FLOP counting sees the paper's multiply-adds
# --------------------------------------------------------------------------
def _paper_macs(channels, num_pos, num_queries=8, kernel=5 * 7 * 7):
    """Multiply-adds per position of the efficient form (Eq. 12) times the
    positions: projection, H1, H2 + G, kernel, context and output
    contractions."""
    cq = channels // num_queries
    dim = cq
    per_pos = (
        channels * (num_queries * cq + 2 * cq) + cq * dim * kernel + cq *
        (dim + cq) * kernel + num_queries * cq * dim + cq * cq * dim +
        num_queries * dim * cq)
    return per_pos * num_pos


@pytest.mark.parametrize('channels', [64, 256])  # loops / bmm on CPU
def test_flop_count_is_the_papers(channels):
    from mmengine.analysis import FlopAnalyzer
    layer = RSA(channels).eval()
    x = torch.randn(1, channels, 4, 6, 5)
    analyzer = FlopAnalyzer(layer, (x, ))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    assert analyzer.total() == _paper_macs(channels, 4 * 6 * 5)


@pytest.mark.parametrize('channels', [64, 256])
def test_traced_layer_matches_eager(channels):
    layer = _make(channels, dtype=torch.float32).eval()
    x = torch.randn(2, channels, 3, 6, 5)
    with torch.no_grad():
        traced = torch.jit.trace(layer, (x, ))
        assert _rel_err(traced(x), layer(x)) <= 1e-5
    # the traced graph uses the plain ops the FLOP counters know
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert 'prim::PythonOp' not in kinds


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    """On CUDA the layer takes its batched-matmul path."""
    layer = _make(64, dtype=torch.float32)
    x = torch.randn(2, 64, 4, 9, 8, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    layer_gpu = _make(64, dtype=torch.float32).cuda()
    x_gpu = x.detach().cuda().requires_grad_()
    out_gpu = layer_gpu(x_gpu)
    out_gpu.sum().backward()
    assert _rel_err(out_gpu.cpu(), out) <= 1e-4
    assert _rel_err(x_gpu.grad.cpu(), x.grad) <= 1e-4
