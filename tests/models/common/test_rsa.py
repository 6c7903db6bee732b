# Copyright (c) mmrsa contributors. All rights reserved.
import itertools
import math

import pytest
import torch

from mmrsa.models.common import RSA, RSAReference, rsa_reference

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
    (16, dict(num_queries=1, corr_groups=1, kernel_size=(3, 3, 3),
              stride=2, norm='none')),
    (32, dict(num_queries=8, corr_groups=2, kernel_size=(5, 7, 7),
              norm='bn')),
    (16, dict(num_queries=2, latent_dim=5, corr_groups=8,
              kernel_size=(1, 3, 5))),
]


@pytest.mark.parametrize('kernel_type,context_type',
                         list(itertools.product(TYPES, TYPES)))
@pytest.mark.parametrize('channels,options', CASES)
def test_efficient_matches_reference_float64(kernel_type, context_type,
                                             channels, options):
    layer = _make(channels, kernel_type=kernel_type,
                  context_type=context_type, **options)
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
    layer = _make(channels, dtype=torch.float32, num_queries=num_queries,
                  corr_groups=corr_groups, norm=norm, latent_dim=6,
                  kernel_size=(3, 5, 5))
    x = torch.randn(1, channels, 5, 7, 6)
    assert _rel_err(layer(x), rsa_reference(layer, x)) <= 1e-5


def test_default_paper_layer_matches_reference():
    """L = 8, D = Cq, M = 5x7x7, G = Cq, both kernels and contexts."""
    layer = _make(64, dtype=torch.float32)
    x = torch.randn(1, 64, 8, 9, 9)
    assert layer.context_size == 245
    assert _rel_err(layer(x), rsa_reference(layer, x)) <= 1e-5
    ref_layer = RSAReference(64)
    ref_layer.load_state_dict(layer.state_dict())
    assert _rel_err(layer(x), ref_layer(x)) <= 1e-5


# --------------------------------------------------------------------------
# an independent, per-position evaluation of the paper's equations
# --------------------------------------------------------------------------
def _naive_rsa(layer: RSA, x: torch.Tensor) -> torch.Tensor:
    """Eq. 6-8 position by position with plain index arithmetic.

    Written without unfold, reshapes of weights into matrices or einsum, so it
    shares nothing with either implementation but the projection.
    """
    n_batch, _, t_len, h_len, w_len = x.shape
    nq, cq, dim = layer.num_queries, layer.query_channels, layer.latent_dim
    kt, kh, kw = layer.kernel_size
    pt, ph, pw = layer.padding
    group_size = cq // layer.corr_groups
    proj = torch.einsum('oi,nithw->nothw', layer.projection.weight[:, :, 0, 0,
                                                                   0], x)
    q = proj[:, :nq * cq]
    k = proj[:, nq * cq:nq * cq + (cq if layer.use_relational_kernel else 0)]
    v = proj[:, -cq:]

    def l2(vec):
        return vec / math.sqrt(float((vec * vec).sum()) + 1e-6)

    offsets = list(itertools.product(range(kt), range(kh), range(kw)))
    out = torch.zeros(n_batch, cq * nq, t_len, h_len, w_len, dtype=x.dtype)
    for b, t, h, w in itertools.product(range(n_batch), range(t_len),
                                        range(h_len), range(w_len)):
        values, keys = [], []
        for (dt, dh, dw) in offsets:
            tt, hh, ww = t + dt - pt, h + dh - ph, w + dw - pw
            inside = 0 <= tt < t_len and 0 <= hh < h_len and 0 <= ww < w_len
            if inside:
                values.append(l2(v[b, :, tt, hh, ww]))
                keys.append(l2(k[b, :, tt, hh, ww]) if k.shape[1] else None)
            else:  # zero padding of the normalised maps
                values.append(torch.zeros(cq, dtype=x.dtype))
                keys.append(torch.zeros(cq, dtype=x.dtype))
        m_size = len(offsets)
        h2 = [[layer.H2.weight[d, 0][offsets[m]] for d in range(dim)]
              for m in range(m_size)]
        # contexts [M][Cq]
        context = [[0.0] * cq for _ in range(m_size)]
        if 'V' in layer.context_type:
            for m in range(m_size):
                for c2 in range(cq):
                    if layer.I is None:
                        context[m][c2] += values[m][c2]
                    else:
                        context[m][c2] += sum(values[m][c] * layer.I[c, c2]
                                              for c in range(cq))
        if layer.use_relational_context:
            for m in range(m_size):
                for c2 in range(cq):
                    context[m][c2] += sum(
                        float(values[m] @ values[j]) *
                        layer.G.weight[c2, 0][offsets[j]]
                        for j in range(m_size))
        for l_idx in range(nq):
            query = l2(q[b, l_idx * cq:(l_idx + 1) * cq, t, h, w])
            kernel = [0.0] * m_size
            if layer.use_basic_kernel:
                # P = H2 P1^T
                for m in range(m_size):
                    kernel[m] += sum(query[c] * sum(
                        h2[m][d] * layer.P1[c, d] for d in range(dim))
                                     for c in range(cq))
            if layer.use_relational_kernel:
                latent = [0.0] * dim
                for m in range(m_size):
                    for g in range(layer.corr_groups):
                        chans = range(g * group_size, (g + 1) * group_size)
                        corr = sum(query[c] * keys[m][c] for c in chans)
                        for d in range(dim):
                            latent[d] += corr * layer.H1.weight[
                                g * dim + d, 0][offsets[m]]
                for m in range(m_size):
                    kernel[m] += sum(latent[d] * h2[m][d] for d in range(dim))
            for c2 in range(cq):
                out[b, c2 * nq + l_idx, t, h, w] = sum(
                    kernel[m] * context[m][c2] for m in range(m_size))
    return out


@pytest.mark.parametrize('kernel_type,context_type', [('VR', 'VR'),
                                                      ('V', 'R'),
                                                      ('R', 'V')])
def test_matches_naive_per_position_evaluation(kernel_type, context_type):
    layer = _make(8, num_queries=2, latent_dim=3, corr_groups=2,
                  kernel_size=(3, 3, 1), kernel_type=kernel_type,
                  context_type=context_type)
    x = torch.randn(1, 8, 3, 3, 2, dtype=torch.float64)
    with torch.no_grad():
        expected = _naive_rsa(layer, x)
        assert _rel_err(layer(x), expected) <= 1e-10
        assert _rel_err(rsa_reference(layer, x), expected) <= 1e-10


def test_output_channel_order_is_value_major_query_minor():
    """Query l only reaches output channels c * L + l."""
    layer = _make(8, num_queries=4, kernel_type='V', context_type='V',
                  kernel_size=3)
    x = torch.randn(1, 8, 3, 4, 4, dtype=torch.float64)
    base = layer(x)
    with torch.no_grad():  # zero the projection rows of query 1
        layer.projection.weight[2:4] = 0
    changed = (layer(x) - base).abs().amax(dim=(0, 2, 3, 4)) > 0
    expected = torch.tensor([c % 4 == 1 for c in range(8)])
    assert torch.equal(changed, expected)


def test_corr_groups_one_is_dot_product_correlation():
    """G = 1 projects the scalar q.k with H1: kernel(-q) == -kernel(q) and
    equals G = Cq with H1 filters tied across channels."""
    grouped = _make(8, num_queries=1, corr_groups=1, kernel_type='R',
                    context_type='V', kernel_size=3)
    full = RSA(8, num_queries=1, kernel_type='R', context_type='V',
               kernel_size=3).double()
    state = grouped.state_dict()
    state['H1.weight'] = state['H1.weight'].repeat(8, 1, 1, 1, 1)
    full.load_state_dict(state)
    x = torch.randn(1, 8, 3, 4, 4, dtype=torch.float64)
    assert _rel_err(full(x), grouped(x)) <= 1e-12
    assert grouped.H1.weight.numel() == 1 * 27 * 8  # G * M * D


def test_relational_kernel_reacts_to_time_reversal():
    """A clip and its time reversal give outputs that differ beyond a
    flip (the relational kernel sees the order of correlations)."""
    layer = _make(16, num_queries=2, kernel_size=(3, 3, 3))
    x = torch.randn(1, 16, 5, 4, 4, dtype=torch.float64)
    out = layer(x)
    out_rev = layer(x.flip(2)).flip(2)
    assert not torch.allclose(out, out_rev)


# --------------------------------------------------------------------------
# gradients, shapes, dtypes
# --------------------------------------------------------------------------
@pytest.mark.parametrize('kernel_type,context_type', [('VR', 'VR'),
                                                      ('R', 'R'),
                                                      ('V', 'V')])
def test_gradcheck(kernel_type, context_type):
    layer = _make(4, num_queries=2, latent_dim=3, kernel_size=(3, 3, 3),
                  kernel_type=kernel_type, context_type=context_type)
    x = torch.randn(1, 4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    params = tuple(layer.parameters())

    def func(inp, *weights):
        return torch.func.functional_call(
            layer, {name: w for (name, _), w in
                    zip(layer.named_parameters(), weights)}, (inp, ))

    assert torch.autograd.gradcheck(func, (x, ) + params, eps=1e-6,
                                    atol=1e-5)


@pytest.mark.parametrize('stride,size,expected', [(1, 7, 7), (2, 7, 4),
                                                   (2, 8, 4), (3, 9, 3)])
def test_output_shape(stride, size, expected):
    layer = RSA(16, 32, num_queries=4, kernel_size=(3, 5, 5), stride=stride)
    out = layer(torch.randn(2, 16, 3, size, size + 1))
    assert out.shape == (2, 32, 3, expected, (size + 1 - 1) // stride + 1)


def test_stride_matches_official_pooling():
    layer = RSA(8, num_queries=2, kernel_size=3, stride=2)
    x = torch.randn(1, 8, 2, 6, 6)
    unstrided = RSA(8, num_queries=2, kernel_size=3)
    unstrided.load_state_dict(layer.state_dict())
    expected = torch.nn.functional.avg_pool3d(
        unstrided(x), (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    torch.testing.assert_close(layer(x), expected)


def test_l2_norm_keeps_zero_input_finite():
    layer = RSA(8, num_queries=2, kernel_size=3)
    x = torch.zeros(1, 8, 2, 3, 3, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.count_nonzero(out) == 0


# --------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------
def _expected_params(c_in, c_out, L, D, G, M, kernel_type, context_type,
                     norm):
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
    layer = RSA(c, num_queries=L, latent_dim=D, corr_groups=G,
                kernel_size=ks, kernel_type=kernel_type,
                context_type=context_type, norm=norm)
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
    (dict(in_channels=32, out_channels=20, num_queries=8),
     r'out_channels=20 .*num_queries=8'),
    (dict(in_channels=32, kernel_size=(4, 7, 7)), r'kernel_size.*odd'),
    (dict(in_channels=32, kernel_size=(0, 3, 3)), r'kernel_size.*odd'),
    (dict(in_channels=32, kernel_size=(-3, 3, 3)), r'kernel_size.*odd'),
    (dict(in_channels=32, kernel_size=(3, 3)), r'kernel_size.*3 ints'),
    (dict(in_channels=32, num_queries=2, corr_groups=3),
     r"corr_groups=3 must divide.*Cq.*16"),
    (dict(in_channels=32, corr_groups=0), r'corr_groups=0'),
    (dict(in_channels=32, kernel_type='VplusR'),
     r"kernel_type='VplusR'.*\('V', 'R', 'VR'\)"),
    (dict(in_channels=32, context_type='X'),
     r"context_type='X'.*\('V', 'R', 'VR'\)"),
    (dict(in_channels=32, norm='layer'),
     r"norm='layer'.*\('l2', 'none', 'bn'\)"),
    (dict(in_channels=32, latent_dim=0), r'latent_dim.*0'),
    (dict(in_channels=32, stride=0), r'stride.*0'),
    (dict(in_channels=0), r'in_channels.*0'),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RSA(**kwargs)


def test_input_not_5d():
    layer = RSA(16, num_queries=2, kernel_size=3)
    with pytest.raises(ValueError, match=r'5-D input \[N, C, T, H, W\].*'
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
        dict(type='RSA', in_channels=32, num_queries=4, latent_dim=4,
             kernel_size=(3, 5, 5), kernel_type='R', context_type='VR'))
    assert isinstance(layer, RSA)
    assert layer.latent_dim == 4 and layer.kernel_type == 'R'
    out = layer(torch.randn(1, 32, 2, 5, 5))
    assert out.shape == (1, 32, 2, 5, 5)
