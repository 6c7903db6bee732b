# Copyright (c) mmrsa contributors. All rights reserved.
"""Tests for ``mmrsa.models.common.rsa_reference``, and of the layer against
a third, per-position evaluation of the paper's equations.

``_naive_rsa`` below evaluates Eq. 6-8 one position at a time in plain
Python arithmetic (lists of floats, no unfold, no einsum, no weight reshapes
into matrices), with the embedding, the three normalisations and the stride
pooling written out from the official code's semantics. The efficient layer
(in both memory layouts) and :func:`rsa_reference` must both match it.
"""
import itertools
import math

import pytest
import torch

from mmrsa.models.common import RSA, RSAReference
from mmrsa.models.common import rsa as rsa_module
from mmrsa.models.common import rsa_reference

L2_EPS = 1e-6  # official ``L2norm``: x / (sum(x ** 2) + 1e-6) ** 0.5


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _make(channels, seed=0, **kwargs) -> RSA:
    """A float64 layer with every parameter (and BN statistic) moved away
    from its init (``I`` off identity, BN off the unit transform)."""
    torch.manual_seed(seed)
    layer = RSA(channels, **kwargs).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        if layer.norm_layer is not None:
            bn = layer.norm_layer
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen))
            bn.running_var.copy_(
                torch.rand(bn.num_features, generator=gen) + 0.5)
    return layer


# --------------------------------------------------------------------------
# the per-position oracle
# --------------------------------------------------------------------------
def _naive_embedding(layer: RSA, x: torch.Tensor):
    """Projection, normalisation and split, in plain Python.

    Returns ``query[b][t][h][w][l] -> [Cq]``, ``key`` (or None) and
    ``value`` ``[b][t][h][w] -> [Cq]`` as lists of floats.
    """
    nb, c_in, nt, nh, nw = x.shape
    nq = layer.num_queries
    cq = layer.out_channels // nq
    ck = cq if 'R' in layer.kernel_type else 0
    n_out = nq * cq + ck + cq
    weight = layer.projection.weight.reshape(n_out, c_in).tolist()
    xs = x.tolist()
    positions = list(
        itertools.product(range(nb), range(nt), range(nh), range(nw)))
    # proj[o][(b, t, h, w)]
    proj = [{
        pos:
        sum(weight[o][c] * xs[pos[0]][c][pos[1]][pos[2]][pos[3]]
            for c in range(c_in))
        for pos in positions
    } for o in range(n_out)]

    if layer.norm == 'bn':
        bn = layer.norm_layer
        gamma, beta = bn.weight.tolist(), bn.bias.tolist()
        for o in range(n_out):
            vals = list(proj[o].values())
            if bn.training:  # batch statistics, biased variance
                mean = sum(vals) / len(vals)
                var = sum((v - mean)**2 for v in vals) / len(vals)
            else:
                mean = float(bn.running_mean[o])
                var = float(bn.running_var[o])
            scale = gamma[o] / math.sqrt(var + bn.eps)
            proj[o] = {
                pos: (v - mean) * scale + beta[o]
                for pos, v in proj[o].items()
            }

    def l2(vec):
        if layer.norm != 'l2':
            return vec
        norm = math.sqrt(sum(v * v for v in vec) + L2_EPS)
        return [v / norm for v in vec]

    def vector(first, pos):
        return l2([proj[first + c][pos] for c in range(cq)])

    query = {
        pos: [vector(l_idx * cq, pos) for l_idx in range(nq)]
        for pos in positions
    }
    key = {pos: vector(nq * cq, pos) for pos in positions} if ck else None
    value = {pos: vector(nq * cq + ck, pos) for pos in positions}
    return query, key, value


def _naive_rsa(layer: RSA, x: torch.Tensor) -> torch.Tensor:
    """Eq. 6-8 position by position, then the official stride pooling."""
    nb, _, nt, nh, nw = x.shape
    nq, dim = layer.num_queries, layer.latent_dim
    cq = layer.out_channels // nq
    groups = layer.corr_groups
    group_size = cq // groups
    kt, kh, kw = layer.kernel_size
    pt, ph, pw = kt // 2, kh // 2, kw // 2
    query, key, value = _naive_embedding(layer, x)
    offsets = list(itertools.product(range(kt), range(kh), range(kw)))
    m_size = len(offsets)

    def taps(conv):  # filter o at context index m: [O][M]
        w = conv.weight.tolist()
        return [[w[o][0][a][b][c] for (a, b, c) in offsets]
                for o in range(len(w))]

    h2 = taps(layer.H2)  # [D][M]
    h1 = taps(layer.H1) if layer.H1 is not None else None  # [G*D][M]
    g_w = taps(layer.G) if layer.G is not None else None  # [Cq][M]
    p1 = layer.P1.tolist() if layer.P1 is not None else None  # [Cq][D]
    ident = layer.I.tolist() if layer.I is not None else None  # [Cq][Cq]
    zeros = [0.0] * cq

    full = [[[[[0.0] * nw for _ in range(nh)] for _ in range(nt)]
             for _ in range(cq * nq)] for _ in range(nb)]
    for b, t, h, w in itertools.product(
            range(nb), range(nt), range(nh), range(nw)):
        values, keys = [], []
        for (dt, dh, dw) in offsets:
            pos = (b, t + dt - pt, h + dh - ph, w + dw - pw)
            inside = (0 <= pos[1] < nt and 0 <= pos[2] < nh
                      and 0 <= pos[3] < nw)
            # zero padding of the normalised maps
            values.append(value[pos] if inside else zeros)
            if key is not None:
                keys.append(key[pos] if inside else zeros)
        # contexts [M][Cq]
        context = [[0.0] * cq for _ in range(m_size)]
        if 'V' in layer.context_type:
            for m in range(m_size):
                for c2 in range(cq):
                    context[m][c2] += (
                        values[m][c2] if ident is None else sum(
                            values[m][c] * ident[c][c2] for c in range(cq)))
        if 'R' in layer.context_type:
            gram = [[
                sum(a * b_ for a, b_ in zip(values[i], values[j]))
                for j in range(m_size)
            ] for i in range(m_size)]
            for m in range(m_size):
                for c2 in range(cq):
                    context[m][c2] += sum(gram[m][j] * g_w[c2][j]
                                          for j in range(m_size))
        for l_idx in range(nq):
            q = query[(b, t, h, w)][l_idx]
            kernel = [0.0] * m_size
            if 'V' in layer.kernel_type:  # q P^T, P = H2 P1^T
                for m in range(m_size):
                    kernel[m] += sum(q[c] * sum(h2[d][m] * p1[c][d]
                                                for d in range(dim))
                                     for c in range(cq))
            if 'R' in layer.kernel_type:
                latent = [0.0] * dim
                for m in range(m_size):
                    for g in range(groups):
                        chans = range(g * group_size, (g + 1) * group_size)
                        corr = sum(q[c] * keys[m][c] for c in chans)
                        for d in range(dim):
                            latent[d] += corr * h1[g * dim + d][m]
                for m in range(m_size):
                    kernel[m] += sum(latent[d] * h2[d][m] for d in range(dim))
            for c2 in range(cq):
                full[b][c2 * nq + l_idx][t][h][w] = sum(
                    kernel[m] * context[m][c2] for m in range(m_size))

    s = layer.stride
    if s == 1:
        return torch.tensor(full, dtype=x.dtype)
    # AvgPool3d((1, 3, 3), stride (1, s, s), padding (0, 1, 1)): the mean of
    # the 3x3 window centred at (i*s, j*s), zero padding counted
    out_h, out_w = -(-nh // s), -(-nw // s)
    pooled = [[[[[
        sum(full[b][c][t][i * s + di][j * s + dj] for di in (-1, 0, 1)
            for dj in (-1, 0, 1)
            if 0 <= i * s + di < nh and 0 <= j * s + dj < nw) / 9
        for j in range(out_w)
    ] for i in range(out_h)] for t in range(nt)] for c in range(cq * nq)]
              for b in range(nb)]
    return torch.tensor(pooled, dtype=x.dtype)


# kernel_type, context_type, norm (bn: in training or eval mode), kernel
# size, stride, batch, corr_groups
NAIVE_CASES = {
    'VR-VR-l2': ('VR', 'VR', 'l2', (3, 3, 1), 1, 1, 2),
    'V-R-l2': ('V', 'R', 'l2', (3, 3, 1), 1, 1, 2),
    'R-V-l2': ('R', 'V', 'l2', (3, 3, 1), 1, 1, 2),
    'VR-VR-l2-3x3x3-stride2': ('VR', 'VR', 'l2', (3, 3, 3), 2, 2, 2),
    'VR-VR-bn_train-stride2': ('VR', 'VR', 'bn_train', (3, 3, 3), 2, 2, 2),
    'VR-R-bn_eval': ('VR', 'R', 'bn_eval', (3, 3, 3), 1, 2, None),
    'R-VR-none-stride2': ('R', 'VR', 'none', (3, 3, 3), 2, 2, 1),
    'V-V-none': ('V', 'V', 'none', (1, 3, 3), 1, 2, None),
}

#: The layer's implementations of Eq. 12 that run on a CPU: positions last
#: with vectorised loops, positions first with bmm, and the plain grouped
#: convolutions of other devices.
CPU_PATHS = ('cpu_loops', 'cpu_bmm', 'plain')


@pytest.mark.parametrize('case', list(NAIVE_CASES))
def test_layer_and_reference_match_naive_per_position_evaluation(case):
    kernel_type, context_type, norm, kernel_size, stride, batch, groups = (
        NAIVE_CASES[case])
    layer = _make(
        8,
        num_queries=2,
        latent_dim=3,
        corr_groups=groups,
        kernel_size=kernel_size,
        stride=stride,
        kernel_type=kernel_type,
        context_type=context_type,
        norm=norm.split('_')[0])
    layer.train(norm != 'bn_eval')
    torch.manual_seed(1)
    # H = 5, W = 4: a strided output of ceil(5 / 2) x ceil(4 / 2)
    x = torch.randn(batch, 8, 3, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        expected = _naive_rsa(layer, x)
        assert expected.shape == (batch, 8, 3, -(-5 // stride),
                                  -(-4 // stride))
        assert _rel_err(rsa_reference(layer, x), expected) <= 1e-10
        # both memory layouts of the efficient form
        for path in CPU_PATHS:
            with rsa_module.force_path(path):
                assert _rel_err(layer(x), expected) <= 1e-10, path


def test_the_three_norms_give_three_layers():
    """The three ``norm`` choices give three different layers (same
    weights), so the per-position oracle can tell them apart."""
    outs = {}
    x = torch.randn(2, 8, 3, 4, 4, dtype=torch.float64)
    for norm in ('l2', 'bn', 'none'):
        layer = _make(8, num_queries=2, kernel_size=3, norm=norm).eval()
        with torch.no_grad():
            outs[norm] = layer(x)
    for a, b in itertools.combinations(outs, 2):
        assert _rel_err(outs[a], outs[b]) > 1e-2, (a, b)


# --------------------------------------------------------------------------
# the reference is its own code and not a model part
# --------------------------------------------------------------------------
def test_reference_does_not_use_the_layers_embedding_or_stride(monkeypatch):
    """Break every piece of the layer the reference might borrow: it still
    computes the right output (and the layer does not)."""
    layer = _make(8, num_queries=2, kernel_size=3, stride=2, norm='bn')
    x = torch.randn(2, 8, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        expected = rsa_reference(layer, x)

    def broken(*args, **kwargs):
        raise AssertionError('the reference called the layer')

    for name in ('check_input', 'embed', 'split_embedding', 'downsample',
                 'attend'):
        monkeypatch.setattr(layer, name, broken)
    monkeypatch.setattr(rsa_module, 'l2_normalize', broken)
    monkeypatch.setattr(layer.norm_layer, 'forward', broken)
    with torch.no_grad():
        torch.testing.assert_close(
            rsa_reference(layer, x), expected, rtol=0, atol=0)
        with pytest.raises(AssertionError, match='called the layer'):
            layer(x)


def test_reference_batch_norm_keeps_running_statistics():
    layer = _make(8, num_queries=2, kernel_size=3, norm='bn').train()
    before = {k: v.clone() for k, v in layer.norm_layer.state_dict().items()}
    with torch.no_grad():
        rsa_reference(layer, torch.randn(1, 8, 2, 3, 3, dtype=torch.float64))
    for k, v in layer.norm_layer.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_reference_checks_its_input():
    layer = RSA(8, num_queries=2, kernel_size=3)
    with pytest.raises(ValueError, match=r'\[N, 8, T, H, W\].*\(1, 6, 2, 3'):
        rsa_reference(layer, torch.randn(1, 6, 2, 3, 3))
    with pytest.raises(ValueError, match=r'\[N, 8, T, H, W\]'):
        rsa_reference(layer, torch.randn(8, 2, 3, 3))


def test_reference_module_loads_a_layer_checkpoint():
    """``RSAReference`` has the layer's parameters: a state dict moves
    between the two strictly and gives the same output."""
    layer = _make(16, num_queries=2, kernel_size=(3, 3, 3), norm='bn').eval()
    reference = RSAReference(
        16, num_queries=2, kernel_size=(3, 3, 3), norm='bn').double().eval()
    reference.load_state_dict(layer.state_dict(), strict=True)
    x = torch.randn(1, 16, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        assert _rel_err(reference(x), layer(x)) <= 1e-10


def test_reference_is_importable_but_not_registered():
    import mmrsa  # noqa: F401  (registers the modules)
    from mmaction.registry import MODELS
    from mmrsa.models import common
    assert 'RSAReference' in common.__all__
    assert MODELS.get('RSA') is RSA
    assert 'RSAReference' not in MODELS.module_dict
    assert MODELS.get('RSAReference') is None
    with pytest.raises(KeyError, match='RSAReference'):
        MODELS.build(dict(type='RSAReference', in_channels=8))


# --------------------------------------------------------------------------
# the kernels, the weights and the chunks
# --------------------------------------------------------------------------
def _reference_module():
    import sys
    return sys.modules['mmrsa.models.common.rsa_reference']


@pytest.mark.parametrize(
    'kernel_type,context_type,groups',
    [(k, c, None)
     for k, c in itertools.product(('V', 'R', 'VR'), ('V', 'R', 'VR'))] +
    [('VR', 'VR', 2), ('R', 'V', 1)])
def test_reference_kernels_rebuild_the_output(kernel_type, context_type,
                                              groups):
    """``kV + kR`` of every position applied to its context ``XV + XR``
    (built here from the layer's embedding) is the layer's output there."""
    reference = _reference_module()
    layer = _make(
        8,
        num_queries=2,
        latent_dim=3,
        corr_groups=groups,
        kernel_size=(3, 3, 3),
        kernel_type=kernel_type,
        context_type=context_type).eval()
    x = torch.randn(2, 8, 3, 4, 5, dtype=torch.float64)
    nq, cq, m = 2, 4, 27
    with torch.no_grad():
        kernels = reference.reference_kernels(layer, x)
        _, _, v = layer.embed(x)
        out = layer(x)
    assert (kernels['basic'] is None) != ('V' in kernel_type)
    assert (kernels['relational'] is None) != ('R' in kernel_type)
    kernel = sum(k for k in kernels.values() if k is not None)
    assert kernel.shape == (2, 3 * 4 * 5, nq, m)  # [N, THW, L, M]
    values = reference.unfold_context(v, layer.kernel_size, layer.padding)
    context = 0
    if 'V' in context_type:
        context = context + (
            values @ layer.I if layer.I is not None else values)
    if 'R' in context_type:
        g = layer.G.weight.reshape(cq, m).t()  # [M, Cq]
        context = context + values @ values.transpose(-1, -2) @ g
    expected = out.permute(0, 2, 3, 4, 1).reshape(2, -1, cq, nq)
    torch.testing.assert_close(
        (kernel @ context).transpose(-1, -2), expected, rtol=1e-10, atol=1e-12)


def test_reference_kernels_at_chosen_positions():
    reference = _reference_module()
    layer = _make(8, num_queries=2, kernel_size=(3, 3, 3)).eval()
    x = torch.randn(2, 8, 3, 4, 5, dtype=torch.float64)
    positions = [(0, 0, 0), (2, 3, 4), (1, 2, 0), (1, 2, 0)]
    with torch.no_grad():
        every = reference.reference_kernels(layer, x)
        chosen = reference.reference_kernels(layer, x, positions)
    rows = [(t * 4 + h) * 5 + w for t, h, w in positions]
    for name in ('basic', 'relational'):
        assert chosen[name].shape == (2, 4, 2, 27)  # [N, P, L, M]
        torch.testing.assert_close(
            chosen[name], every[name][:, rows], rtol=0, atol=0)
    for bad in ((3, 0, 0), (0, 4, 0), (0, 0, -1)):
        with pytest.raises(ValueError, match='outside the 3x4x5'):
            reference.reference_kernels(layer, x, [bad])
    with pytest.raises(ValueError, match='empty'):
        reference.reference_kernels(layer, x, [])
    with pytest.raises(ValueError, match=r'\[N, 8, T, H, W\]'):
        reference.reference_kernels(layer, x[:, :6])


def test_reference_reads_plain_weights_and_works_in_chunks(monkeypatch):
    """:class:`RSAWeights` give what the layer gives, and the chunks of
    positions (a few rows of one frame each) change nothing."""
    reference = _reference_module()
    layer = _make(
        8,
        num_queries=2,
        latent_dim=3,
        corr_groups=2,
        kernel_size=(3, 3, 3),
        stride=2).eval()
    x = torch.randn(2, 8, 3, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        whole = rsa_reference(layer, x)
        kernels = reference.reference_kernels(layer, x)
        weights = reference.weights_of(layer)
        torch.testing.assert_close(
            rsa_reference(weights, x), whole, rtol=0, atol=0)
        monkeypatch.setattr(reference, 'CHUNK_ELEMENTS', 1)  # one row each
        assert len(list(reference._chunks(weights, x.shape))) == 3 * 5
        torch.testing.assert_close(
            rsa_reference(layer, x), whole, rtol=0, atol=1e-14)
        chunked = reference.reference_kernels(layer, x)
    for name, kernel in kernels.items():
        torch.testing.assert_close(chunked[name], kernel, rtol=0, atol=0)
