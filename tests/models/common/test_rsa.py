# Copyright (c) mmrsa contributors. All rights reserved.
import itertools
import math

import pytest
import torch

from mmrsa.models.common import RSA, l2_normalize, rsa_reference

TYPES = ('V', 'R', 'VR')


def _perturbed(layer: RSA, scale: float = 0.3, seed: int = 0) -> RSA:
    """Move every parameter away from its init (e.g. ``I`` off identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return layer


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _make(channels, dtype=torch.float64, seed=0, **kwargs):
    torch.manual_seed(seed)
    return _perturbed(RSA(channels, **kwargs).to(dtype), seed=seed)


# --------------------------------------------------------------------------
# efficient (Eq. 12) == literal (Eq. 8)
# --------------------------------------------------------------------------
CASES = [
    # channels, options
    (16, dict(num_queries=2, latent_dim=3, kernel_size=(3, 5, 5))),
    (16,
     dict(
         num_queries=1,
         corr_groups=1,
         kernel_size=(3, 3, 3),
         stride=2,
         norm='none')),
    (32, dict(num_queries=8, corr_groups=2, kernel_size=(5, 7, 7), norm='bn')),
    (16,
     dict(num_queries=2, latent_dim=5, corr_groups=8, kernel_size=(1, 3, 5))),
]


@pytest.mark.parametrize('kernel_type,context_type',
                         list(itertools.product(TYPES, TYPES)))
@pytest.mark.parametrize('channels,options', CASES)
def test_efficient_matches_reference_float64(kernel_type, context_type,
                                             channels, options):
    layer = _make(
        channels,
        kernel_type=kernel_type,
        context_type=context_type,
        **options)
    x = torch.randn(2, channels, 4, 6, 5, dtype=torch.float64)
    out = layer(x)
    ref = rsa_reference(layer, x)
    assert out.shape == ref.shape
    assert _rel_err(out, ref) <= 1e-10


@pytest.mark.parametrize('num_queries', [1, 2, 8])
@pytest.mark.parametrize('corr_groups', [1, 2, None])
@pytest.mark.parametrize('norm', ['l2', 'none', 'bn'])
def test_efficient_matches_reference_float32(num_queries, corr_groups, norm):
    channels = 32
    layer = _make(
        channels,
        dtype=torch.float32,
        num_queries=num_queries,
        corr_groups=corr_groups,
        norm=norm,
        latent_dim=6,
        kernel_size=(3, 5, 5))
    x = torch.randn(1, channels, 5, 7, 6)
    assert _rel_err(layer(x), rsa_reference(layer, x)) <= 1e-5


def test_default_paper_layer_matches_reference():
    """L = 8, D = Cq, M = 5x7x7, G = Cq, both kernels and contexts."""
    layer = _make(64, dtype=torch.float32)
    x = torch.randn(1, 64, 8, 9, 9)
    assert layer.context_size == 245
    assert _rel_err(layer(x), rsa_reference(layer, x)) <= 1e-5


# --------------------------------------------------------------------------
# properties of the equations (the per-position oracle of Eq. 6-8 is in
# test_rsa_reference.py)
# --------------------------------------------------------------------------
def test_output_channel_order_is_value_major_query_minor():
    """Query l only reaches output channels c * L + l."""
    layer = _make(
        8, num_queries=4, kernel_type='V', context_type='V', kernel_size=3)
    x = torch.randn(1, 8, 3, 4, 4, dtype=torch.float64)
    base = layer(x)
    with torch.no_grad():  # zero the projection rows of query 1
        layer.projection.weight[2:4] = 0
    changed = (layer(x) - base).abs().amax(dim=(0, 2, 3, 4)) > 0
    expected = torch.tensor([c % 4 == 1 for c in range(8)])
    assert torch.equal(changed, expected)


def test_corr_groups_one_is_dot_product_correlation():
    """G = 1 projects the scalar q.k with H1: it equals G = Cq with the H1
    filters tied across channels, and, q.k being linear in q,
    kernel(-q) == -kernel(q): negating the query negates the output."""
    grouped = _make(
        8,
        num_queries=1,
        corr_groups=1,
        kernel_type='R',
        context_type='V',
        kernel_size=3)
    full = RSA(
        8, num_queries=1, kernel_type='R', context_type='V',
        kernel_size=3).double()
    state = grouped.state_dict()
    state['H1.weight'] = state['H1.weight'].repeat(8, 1, 1, 1, 1)
    full.load_state_dict(state)
    x = torch.randn(1, 8, 3, 4, 4, dtype=torch.float64)
    out = grouped(x)
    assert _rel_err(full(x), out) <= 1e-12
    assert grouped.H1.weight.numel() == 1 * 27 * 8  # G * M * D
    with torch.no_grad():  # q -> -q (the L2 norm keeps the sign)
        grouped.projection.weight[:8].neg_()
    torch.testing.assert_close(grouped(x), -out, rtol=1e-12, atol=1e-14)


def _time_reversal_change(layer: RSA, x: torch.Tensor) -> float:
    """How far ``layer`` is from commuting with time reversal."""
    with torch.no_grad():
        return _rel_err(layer(x.flip(2)).flip(2), layer(x))


def test_relational_kernel_reacts_to_time_reversal():
    """The relational kernel sees the temporal order of the query-key
    correlations: with every other filter symmetric in time, the layer
    commutes with time reversal exactly while H1 is symmetric too (the
    relational kernel blind to the order), and not once H1 is not."""
    layer = _make(
        16,
        num_queries=2,
        kernel_size=(3, 3, 3),
        kernel_type='VR',
        context_type='VR')
    with torch.no_grad():
        for conv in (layer.H2, layer.G):  # [O, 1, kt, kh, kw]
            conv.weight.copy_(conv.weight + conv.weight.flip(2))
    x = torch.randn(1, 16, 5, 4, 4, dtype=torch.float64)
    h1 = layer.H1.weight.detach().clone()
    with torch.no_grad():
        layer.H1.weight.copy_(h1 + h1.flip(2))
    assert _time_reversal_change(layer, x) <= 1e-12
    with torch.no_grad():
        layer.H1.weight.copy_(h1)
    assert _time_reversal_change(layer, x) > 1e-2


# --------------------------------------------------------------------------
# gradients, shapes, dtypes
# --------------------------------------------------------------------------
@pytest.mark.parametrize('kernel_type,context_type', [('VR', 'VR'), ('R', 'R'),
                                                      ('V', 'V')])
def test_gradcheck(kernel_type, context_type):
    layer = _make(
        4,
        num_queries=2,
        latent_dim=3,
        kernel_size=(3, 3, 3),
        kernel_type=kernel_type,
        context_type=context_type)
    x = torch.randn(1, 4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    params = tuple(layer.parameters())

    def func(inp, *weights):
        return torch.func.functional_call(layer, {
            name: w
            for (name, _), w in zip(layer.named_parameters(), weights)
        }, (inp, ))

    assert torch.autograd.gradcheck(func, (x, ) + params, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize('stride,size,expected', [(1, 7, 7), (2, 7, 4),
                                                  (2, 8, 4), (3, 9, 3)])
def test_output_shape(stride, size, expected):
    layer = RSA(16, 32, num_queries=4, kernel_size=(3, 5, 5), stride=stride)
    out = layer(torch.randn(2, 16, 3, size, size + 1))
    assert out.shape == (2, 32, 3, expected, (size + 1 - 1) // stride + 1)


@pytest.mark.parametrize('size', [6, 7])
def test_stride_matches_official_pooling(size):
    """The official stride (``AvgPool3d((1, 3, 3), stride (1, 2, 2),
    padding (0, 1, 1))``): output (i, j) is the sum of the unstrided 3x3
    neighbourhood of (2i, 2j) divided by 9, the zero padding counted."""
    layer = _make(8, num_queries=2, kernel_size=3, stride=2)
    unstrided = RSA(8, num_queries=2, kernel_size=3).double()
    unstrided.load_state_dict(layer.state_dict())
    x = torch.randn(2, 8, 2, size, size + 1, dtype=torch.float64)
    with torch.no_grad():
        full, out = unstrided(x), layer(x)
    out_h, out_w = (size + 1) // 2, (size + 2) // 2
    assert out.shape == (2, 8, 2, out_h, out_w)
    for i, j in itertools.product(range(out_h), range(out_w)):
        window = full[...,
                      max(2 * i - 1, 0):2 * i + 2,
                      max(2 * j - 1, 0):2 * j + 2]
        torch.testing.assert_close(out[..., i, j], window.sum((-2, -1)) / 9)


def test_l2_norm_keeps_zero_input_finite():
    layer = RSA(8, num_queries=2, kernel_size=3)
    x = torch.zeros(1, 8, 2, 3, 3, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.count_nonzero(out) == 0


# --------------------------------------------------------------------------
# half precision: squares of float16 activations above ~256 overflow
# --------------------------------------------------------------------------
SCALES = [1., 100., 1000.]


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('scale', SCALES)
def test_l2_normalize_half_precision_matches_float64(dtype, scale):
    torch.manual_seed(0)
    x = (torch.randn(2, 4, 16, 3, 5) * scale).to(dtype)
    out = l2_normalize(x, dim=2)
    assert out.dtype == dtype
    expected = l2_normalize(x.double(), dim=2)
    # one rounding to the half type: 2**-11 (float16), 2**-8 (bfloat16)
    assert _rel_err(out.double(),
                    expected) <= (2e-3 if dtype == torch.float16 else 1e-2)
    norms = out.double().norm(dim=2)
    torch.testing.assert_close(
        norms, torch.ones_like(norms), rtol=0, atol=1e-2)
    zeros = l2_normalize(torch.zeros(1, 4, dtype=dtype), dim=1)
    assert zeros.dtype == dtype and torch.count_nonzero(zeros) == 0


def _float16_error(channels: int, num_queries: int, scale: float,
                   device: str) -> float:
    """Relative error of ``layer.half()`` on ``device`` against the same
    layer in float64 (both fed the same float16-rounded input)."""
    layer = _make(channels, num_queries=num_queries, kernel_size=(3, 3, 3))
    half = RSA(
        channels, num_queries=num_queries,
        kernel_size=(3, 3, 3)).half().to(device)
    half.load_state_dict(layer.state_dict())
    torch.manual_seed(1)
    x = (torch.randn(2, channels, 3, 5, 5) * scale).half()
    with torch.no_grad():
        out = half(x.to(device))
        expected = layer(x.double())
    assert out.dtype == torch.float16
    return _rel_err(out.double().cpu(), expected)


# Cq = 16: positions last (vectorised loops) on CPU; Cq = 32: batched bmm
@pytest.mark.parametrize(
    'channels,num_queries', [(32, 2), (64, 2)], ids=['Cq16', 'Cq32'])
@pytest.mark.parametrize('scale', SCALES)
def test_float16_layer_matches_float64(channels, num_queries, scale):
    """``RSA.half()``, as GPU AMP runs it, at input scales of 1, 100 and
    1000 (before the norm was summed in float32, 100x gave an error of 0.8
    and 1000x an output of noise)."""
    assert _float16_error(channels, num_queries, scale, 'cpu') <= 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('scale', SCALES)
def test_float16_layer_matches_float64_cuda(scale):
    for channels in (32, 64):
        assert _float16_error(channels, 2, scale, 'cuda') <= 1e-2


# --------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------
def _expected_params(c_in, c_out, L, D, G, M, kernel_type, context_type, norm):
    cq = c_out // L
    key = cq if 'R' in kernel_type else 0
    proj_out = L * cq + key + cq
    total = c_in * proj_out  # projection
    total += 2 * proj_out if norm == 'bn' else 0
    total += G * D * M if 'R' in kernel_type else 0  # H1
    total += D * M  # H2
    total += cq * D if 'V' in kernel_type else 0  # P1
    total += cq * M if 'R' in context_type else 0  # G
    total += cq * cq if context_type == 'VR' else 0  # I
    return total


@pytest.mark.parametrize('kernel_type,context_type',
                         list(itertools.product(TYPES, TYPES)))
@pytest.mark.parametrize('c,L,D,G,ks,norm', [
    (64, 8, None, None, (5, 7, 7), 'l2'),
    (256, 8, 16, 4, (3, 5, 5), 'bn'),
    (128, 4, 8, 1, (3, 7, 7), 'none'),
])
def test_parameter_count(kernel_type, context_type, c, L, D, G, ks, norm):
    layer = RSA(
        c,
        num_queries=L,
        latent_dim=D,
        corr_groups=G,
        kernel_size=ks,
        kernel_type=kernel_type,
        context_type=context_type,
        norm=norm)
    cq = c // L
    expected = _expected_params(c, c, L, D or cq, G or cq, math.prod(ks),
                                kernel_type, context_type, norm)
    assert sum(p.numel() for p in layer.parameters()) == expected


def test_paper_layer_shapes():
    """The official layout: one projection, H1 grouped, H2/G from 1 channel."""
    layer = RSA(256)  # Cq = 32, D = 32, M = 5x7x7
    assert layer.projection.weight.shape == (8 * 32 + 32 + 32, 256, 1, 1, 1)
    assert layer.H1.weight.shape == (32 * 32, 1, 5, 7, 7)
    assert layer.H1.groups == 32
    assert layer.H2.weight.shape == (32, 1, 5, 7, 7)
    assert layer.G.weight.shape == (32, 1, 5, 7, 7)
    assert layer.P1.shape == (32, 32)
    torch.testing.assert_close(layer.I.detach(), torch.eye(32))
    # the 7 layers of RSANet-R50 hold 2,630,288 parameters
    total = sum(
        sum(p.numel() for p in RSA(c).parameters()) * n
        for c, n in ((64, 1), (128, 2), (256, 3), (512, 1)))
    assert total == 2_630_288


def test_optional_parts_are_none():
    layer = RSA(16, num_queries=2, kernel_type='V', context_type='V')
    assert layer.H1 is None and layer.G is None and layer.I is None
    assert layer.norm_layer is None and layer.P1 is not None
    layer = RSA(16, num_queries=2, kernel_type='R', context_type='R')
    assert layer.P1 is None and layer.I is None and layer.G is not None


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize('kwargs,match', [
    (dict(in_channels=30, num_queries=8), r'out_channels=30 .*num_queries=8'),
    (dict(in_channels=32, out_channels=20,
          num_queries=8), r'out_channels=20 .*num_queries=8'),
    (dict(in_channels=32, kernel_size=(4, 7, 7)), r'kernel_size.*odd'),
    (dict(in_channels=32, kernel_size=(0, 3, 3)), r'kernel_size.*odd'),
    (dict(in_channels=32, kernel_size=(-3, 3, 3)), r'kernel_size.*odd'),
    (dict(in_channels=32, kernel_size=(3, 3)), r'kernel_size.*3 ints'),
    (dict(in_channels=32, kernel_size=(1, 1, 1)), r'kernel_size=\(1, 1, 1\)'),
    (dict(in_channels=32, kernel_size=1), r'context of itself alone'),
    (dict(in_channels=32, num_queries=2,
          corr_groups=3), r"corr_groups=3 must divide.*Cq.*16"),
    (dict(in_channels=32, corr_groups=0), r'corr_groups=0'),
    (dict(in_channels=32,
          kernel_type='VplusR'), r"kernel_type='VplusR'.*\('V', 'R', 'VR'\)"),
    (dict(in_channels=32,
          context_type='X'), r"context_type='X'.*\('V', 'R', 'VR'\)"),
    (dict(in_channels=32,
          norm='layer'), r"norm='layer'.*\('l2', 'none', 'bn'\)"),
    (dict(in_channels=32, latent_dim=0), r'latent_dim.*0'),
    (dict(in_channels=32, stride=0), r'stride.*0'),
    (dict(in_channels=0), r'in_channels.*0'),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RSA(**kwargs)


def test_input_not_5d():
    layer = RSA(16, num_queries=2, kernel_size=3)
    with pytest.raises(
            ValueError, match=r'5-D input \[N, C, T, H, W\].*'
            r'\(8, 16, 7, 7\)'):
        layer(torch.randn(8, 16, 7, 7))


def test_input_wrong_channels():
    layer = RSA(16, num_queries=2, kernel_size=3)
    with pytest.raises(ValueError, match='in_channels=16 .* 12 channels'):
        layer(torch.randn(1, 12, 2, 4, 4))


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------
def test_build_from_registry():
    import mmrsa  # noqa: F401
    from mmaction.registry import MODELS
    layer = MODELS.build(
        dict(
            type='RSA',
            in_channels=32,
            num_queries=4,
            latent_dim=4,
            kernel_size=(3, 5, 5),
            kernel_type='R',
            context_type='VR'))
    assert isinstance(layer, RSA)
    assert layer.latent_dim == 4 and layer.kernel_type == 'R'
    out = layer(torch.randn(1, 32, 2, 5, 5))
    assert out.shape == (1, 32, 2, 5, 5)
