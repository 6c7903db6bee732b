# Copyright (c) mmrsa contributors. All rights reserved.
"""The native CPU products (``'cpu_native'``, :mod:`rsa_native`).

- ``pip install`` builds the library where a C compiler is found (here);
- inference and training take it by themselves; its output equals the
  PyTorch path's and the float64 literal Eq. 8 within float32 rounding, its
  gradients (its own backward pass) those of the PyTorch path and of float64
  autograd, for every layer option it takes, any number of threads giving
  the same bits;
- half precision, tracing, other query counts and
  ``MMRSA_DISABLE_NATIVE=1`` stay on PyTorch; under CPU autocast the
  layer's transform is float32 and takes the library;
- a failing library warns once and the layer computes the PyTorch result
  (in a backward pass, where nothing can be recomputed, it raises);
- its single-channel convolution computes ``H1`` in inference and in
  training (:func:`rsa_native.channel_conv`, the filters' gradient
  :func:`rsa_native.channel_conv_weight_grad`): equal to float64
  ``channel_conv3d`` (and its autograd) in both output layouts for
  any banks, filter counts, kernels, sizes and strides it takes, refused
  (None) for the rest;
- its threads are PyTorch's (one OpenMP runtime in the process).
"""
import ast
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from mmrsa.models.common import RSA
from mmrsa.models.common import rsa as rsa_module
from mmrsa.models.common import rsa_native, rsa_ops
from mmrsa.models.common.rsa import force_path, select_path
from mmrsa.models.common.rsa_ops import channel_conv3d
from mmrsa.models.common.rsa_reference import rsa_reference

HAS_COMPILER = os.name == 'posix' and any(
    shutil.which(cc) for cc in ('cc', 'gcc', 'clang'))

needs_library = pytest.mark.skipif(
    not rsa_native.native_available(),
    reason=f'the native RSA products are {rsa_native.native_status()}')


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    """No path or switch from the environment, no failure recorded."""
    monkeypatch.delenv(rsa_module.PATH_ENV, raising=False)
    monkeypatch.delenv(rsa_native.DISABLE_ENV, raising=False)
    monkeypatch.setattr(rsa_native, '_failure', None)


@pytest.fixture
def calls(monkeypatch):
    """Counts the layer's calls of the native products (and records the
    dtypes of their query and key)."""
    counter = {'native': 0, 'dtypes': [], 'conv': [], 'wgrad': 0, 'dgrad': []}
    original = rsa_native.native_products
    original_conv = rsa_native.channel_conv
    original_wgrad = rsa_native.channel_conv_weight_grad
    original_dgrad = rsa_native.channel_conv_input_grad

    def counting_wgrad(*args, **kwargs):
        counter['wgrad'] += 1
        return original_wgrad(*args, **kwargs)

    def counting_dgrad(grad, weight):
        # (banks, filters) of each input gradient the library computed
        counter['dgrad'].append(tuple(weight.shape[:2]))
        return original_dgrad(grad, weight)

    def counting(*args, **kwargs):
        counter['native'] += 1
        counter['dtypes'].append((args[0].dtype, args[1].dtype))
        return original(*args, **kwargs)

    def counting_conv(x, weight, *args, **kwargs):
        out = original_conv(x, weight, *args, **kwargs)
        # (banks, filters) of each convolution the library computed
        if out is not None:
            counter['conv'].append(tuple(weight.shape[:2]))
        return out

    monkeypatch.setattr(rsa_native, 'native_products', counting)
    monkeypatch.setattr(rsa_native, 'channel_conv', counting_conv)
    monkeypatch.setattr(rsa_native, 'channel_conv_weight_grad', counting_wgrad)
    monkeypatch.setattr(rsa_native, 'channel_conv_input_grad', counting_dgrad)
    return counter


def _layer(channels: int, seed: int = 0, **kwargs) -> RSA:
    """An RSA layer in eval mode with every parameter moved off its
    initial value."""
    torch.manual_seed(seed)
    layer = RSA(channels, **kwargs).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return layer


def _with_threads(counts, fn):
    """``fn()`` computed with each of the thread counts ``counts``; the
    thread count is restored afterwards."""
    threads = torch.get_num_threads()
    try:
        results = []
        for n in counts:
            torch.set_num_threads(n)
            results.append(fn())
    finally:
        torch.set_num_threads(threads)
    return results


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.skipif(not HAS_COMPILER, reason='no C compiler to build with')
def test_library_is_built_by_the_install():
    """setup.py builds mmrsa/_rsa_products*.so where a compiler exists (the
    environment of tools/run.sh); a missing library would silently leave
    every inference on the slower path."""
    assert rsa_native.native_available(), rsa_native.native_status()
    assert rsa_native.native_status().startswith('built')


#: Layer options the native products take: (channels, (T, H, W), kwargs).
LAYER_CASES = [
    (64, (3, 9, 11), {}),  # Cq = 8, positions not a multiple of 32
    (128, (4, 6, 5), {}),  # Cq = 16
    (256, (2, 7, 7), {}),  # Cq = 32, H1 as taps in inference
    (64, (3, 9, 8), dict(stride=2)),
    (64, (3, 5, 6), dict(corr_groups=2)),
    (128, (2, 5, 5), dict(num_queries=16)),  # two vectors of queries
    (64, (3, 5, 6), dict(latent_dim=5)),  # D neither Cq nor 8
    (64, (3, 5, 6), dict(kernel_type='R')),  # no P1
    (64, (3, 5, 6), dict(context_type='R')),  # no I
]


@needs_library
@pytest.mark.parametrize(
    'channels,size,kwargs',
    LAYER_CASES + [(64, (3, 5, 6), dict(kernel_size=(3, 3, 3)))])
def test_inference_takes_native_and_matches(calls, channels, size, kwargs):
    layer = _layer(channels, **kwargs)
    x = torch.randn(2, channels, *size)
    with torch.no_grad():
        sizes = (layer.num_queries, layer.query_channels, layer.latent_dim)
        assert select_path(x, sizes, True) == 'cpu_native'
        got = layer(x)
        assert calls['native'] == 1
        with force_path('cpu_bmm'):
            torch_out = layer(x)
        assert calls['native'] == 1
        want = rsa_reference(layer.double(), x.double())
    assert got.shape == want.shape
    assert _rel_err(got, want.float()) <= 1e-5
    assert _rel_err(got, torch_out) <= 1e-5
    # H1 by the library's convolution where D is a multiple of 8 (the value
    # filters stay PyTorch's); not on the forced PyTorch path
    banks = layer.corr_groups
    want_conv = [] if layer.latent_dim % 8 else [(banks, layer.latent_dim)]
    assert calls['conv'] == want_conv


@needs_library
def test_threads_give_the_same_bits():
    """Each position is computed alone, whichever thread takes it, in the
    forward and the backward pass (the sums over positions, for P1 and I,
    are PyTorch's, as are the convolutions' gradients)."""
    layer = _layer(128)
    x = torch.randn(2, 128, 3, 10, 9)
    operands = _operands(2, 3, 37, 8, 16, 16)

    def run():
        with torch.no_grad():
            out = layer(x)
        return out, rsa_native.native_products_backward(
            *operands, num_queries=8, query_eps=1e-6)

    outs, grads = zip(*_with_threads((1, 2, 3), run))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    for other in grads[1:]:  # the backward pass: every gradient
        assert all(torch.equal(a, b) for a, b in zip(other, grads[0]))


@needs_library
def test_float32_training_and_inference(calls, monkeypatch):
    layer = _layer(64)
    x = torch.randn(1, 64, 3, 6, 6)
    cpu = torch.zeros(1)
    sizes = (8, 8, 8)
    # training: gradients flow through the library's backward pass
    out = layer(x.requires_grad_())
    out.sum().backward()
    assert x.grad is not None and calls['native'] == 1
    assert select_path(cpu, sizes, True) == 'cpu_native'
    with torch.no_grad():
        assert select_path(cpu, sizes, True) == 'cpu_native'
        assert select_path(cpu.bfloat16(), sizes, True) == 'cpu_bmm'
        assert select_path(cpu.double(), sizes, True) == 'cpu_bmm'
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert select_path(cpu, sizes, True) == 'cpu_bmm'
        assert select_path(cpu, sizes, False) == 'cpu_bmm'  # no R kernel
        assert select_path(cpu, (4, 8, 8), True) == 'cpu_bmm'  # L = 4
        assert select_path(cpu, sizes, True, 'plain') == 'plain'
        monkeypatch.setenv(rsa_native.DISABLE_ENV, '1')
        assert select_path(cpu, sizes, True) == 'cpu_bmm'
        assert 'switched off' in rsa_native.native_status()
        with force_path('cpu_native'), pytest.raises(
                ValueError, match='switched off'):
            select_path(cpu, sizes, True)
    # training without the library: the loops of small products
    assert select_path(cpu, sizes, True) == 'cpu_loops'
    with torch.inference_mode():
        monkeypatch.delenv(rsa_native.DISABLE_ENV)
        assert select_path(cpu, sizes, True) == 'cpu_native'


def _train_step(layer: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """Output and the gradients of the input and of every parameter."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    out = layer(x)
    out.backward(grad)
    grads = {'x': x.grad}
    grads.update({k: p.grad for k, p in layer.named_parameters()})
    return out.detach(), grads


@needs_library
@pytest.mark.parametrize('channels,size,kwargs',
                         LAYER_CASES + [(64, (3, 5, 6), dict(norm='bn'))])
def test_training_takes_native_and_matches(calls, channels, size, kwargs):
    """A train step through the library's forward and backward passes:
    the output and every gradient (input, convolutions, P1, I) those of the
    PyTorch path within float32 rounding."""
    layer = _layer(channels, **kwargs).train()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, channels, *size, generator=gen)
    with torch.no_grad():
        grad = torch.randn(layer(x).shape, generator=gen)
    calls['native'], calls['conv'] = 0, []
    got, got_grads = _train_step(layer, x, grad)
    assert calls['native'] == 1
    # H1's forward pass by the library's convolution where D is a multiple
    # of 8 (its backward pass is PyTorch's)
    want_conv = [] if layer.latent_dim % 8 else [(layer.corr_groups,
                                                  layer.latent_dim)]
    assert calls['conv'] == want_conv
    # and its filters' gradient from 32 filters on
    native_wgrad = bool(want_conv) and (layer.latent_dim
                                        >= rsa_ops.MIN_NATIVE_WGRAD_FILTERS)
    assert calls['wgrad'] == int(native_wgrad)
    # the input's gradient of H1 (D a multiple of 8), and of the value
    # filters from 64 of them (value first: backward runs in reverse)
    value = tuple(layer._value_filters().shape[:2])
    want_dgrad = ([value] if value[1] >= rsa_ops.MIN_NATIVE_DGRAD_FILTERS
                  and value[1] % 8 == 0 else []) + want_conv
    assert calls['dgrad'] == want_dgrad
    with force_path('cpu_bmm'):
        want, want_grads = _train_step(layer, x, grad)
    assert calls['native'] == 1 and calls['conv'] == want_conv
    assert calls['wgrad'] == int(native_wgrad)
    assert calls['dgrad'] == want_dgrad
    assert _rel_err(got, want) <= 1e-5
    assert got_grads.keys() == want_grads.keys()
    for name, want_grad in want_grads.items():
        assert _rel_err(got_grads[name], want_grad) <= 1e-4, name


@needs_library
def _frames_case(channels: int, **kwargs):
    """A FrameRSA layer (train mode) of ``channels`` with every parameter
    moved off its initial value, frames of 2 clips of 3 frames and an output
    gradient."""
    from mmrsa.models.backbones.rsanet import FrameRSA
    torch.manual_seed(0)
    layer = FrameRSA(channels, channels, num_segments=3, **kwargs).train()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape))
    x = torch.randn(6, channels, 9, 7)  # [N*T, C, H, W]
    grad = torch.randn(6, channels, 9, 7)
    return layer, x, grad


@pytest.mark.parametrize('kwargs', [{}, dict(norm='none')])
def test_training_frames_layer(calls, kwargs):
    """FrameRSA in training: the query's normalisation inside the library
    (forward and backward), the output frames written directly; every
    gradient that of the PyTorch path, channels-last frames too."""
    layer, x, grad = _frames_case(128, **kwargs)
    got, got_grads = _train_step(layer, x, grad)
    assert calls['native'] == 1
    channels_last, cl_grads = _train_step(
        layer, x.contiguous(memory_format=torch.channels_last), grad)
    assert calls['native'] == 2
    with force_path('cpu_bmm'):
        want, want_grads = _train_step(layer, x, grad)
    for out, grads in ((got, got_grads), (channels_last, cl_grads)):
        assert _rel_err(out, want) <= 1e-5
        for name, want_grad in want_grads.items():
            assert _rel_err(grads[name], want_grad) <= 1e-4, name


@needs_library
def test_traced_graph_keeps_pytorch(calls):
    layer = _layer(64)
    x = torch.randn(1, 64, 3, 6, 6)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        # (check_trace would rerun the layer eagerly, which takes the
        # library)
        traced = torch.jit.trace(layer, x, check_trace=False)
        assert calls['native'] == 0
        assert _rel_err(traced(x), layer(x)) <= 1e-5
    # the eager call after tracing took the library
    assert calls['native'] == 1


@needs_library
@pytest.mark.parametrize(
    'function,channels', [('mmrsa_rsa_products_f32', 64),
                          ('mmrsa_channel_conv_f32', 128)],
    ids=['products', 'conv'])
def test_failure_warns_once_and_falls_back(calls, monkeypatch, function,
                                           channels):
    """The library out of memory (the products, or the convolution of H1):
    one warning, the library given up for the process, the layer's PyTorch
    result (exactly when the products failed: the layer computes them again
    on the PyTorch path; within rounding when the convolution failed and the
    products still ran); forced, the failure is raised, not hidden."""
    layer = _layer(channels)
    x = torch.randn(1, channels, 3, 6, 6)
    sizes = (8, channels // 8, channels // 8)
    with torch.no_grad(), force_path('cpu_bmm'):
        want = layer(x)
    library = rsa_native._load()[0]
    monkeypatch.setattr(library, function, lambda *args: 2)
    with torch.no_grad():
        with pytest.warns(RuntimeWarning, match='out of memory'):
            got = layer(x)
        if function == 'mmrsa_rsa_products_f32':
            assert torch.equal(got, want)
        else:
            assert calls['conv'] == [] and _rel_err(got, want) <= 1e-5
        # from then on the PyTorch path, with no other warning
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            assert select_path(x, sizes, True) == 'cpu_bmm'
            assert torch.equal(layer(x), want)
    assert 'given up' in rsa_native.native_status()
    monkeypatch.setattr(rsa_native, '_failure', None)
    with torch.no_grad(), force_path('cpu_native'), pytest.raises(
            RuntimeError, match='out of memory'):
        layer(x)


def _products(q, key, value, p1, eye, num_queries, eps=None):
    """What native_products computes, in float64 with einsum (Eq. 12 as the
    layer's bmm path orders it)."""
    n, t, _, hw = q.shape
    cq, dim = key.shape[1], key.shape[2]
    # [N, T, L*Cq, HW] -> [N*T*HW, L, Cq]
    q = q.double().reshape(n, t, num_queries, cq, hw).permute(0, 1, 4, 2, 3)
    q = q.reshape(-1, num_queries, cq)
    if eps is not None:
        q = q / (q.pow(2).sum(-1, keepdim=True) + eps).sqrt()
    kernel = q @ (key.double() + (0 if p1 is None else p1.double()))
    h2, g = value.double().split([dim, cq], dim=2)
    g = g + (0 if eye is None else eye.double())
    y = g.transpose(1, 2) @ h2 @ kernel.transpose(1, 2)  # [P, Cq, L]
    return y.reshape(n, t, hw, cq * num_queries).transpose(2, 3)


def _operands(n, t, hw, nq, cq, dim, seed=0):
    """q, key, value, P1, I and the gradient of the output, with strides
    as the layers hold them: the query a slice of the frames' projection,
    key and value channel-major (the filter banks' output), the gradient in
    the clip layout."""
    gen = torch.Generator().manual_seed(seed)
    positions = n * t * hw
    q = torch.randn(n, t, nq * cq + 2 * cq, hw, generator=gen)[:, :, :nq * cq]
    key = torch.randn(cq, positions, dim, generator=gen).transpose(0, 1)
    value = torch.randn(cq, positions, dim + cq, generator=gen).transpose(0, 1)
    p1 = torch.randn(cq, dim, generator=gen)
    eye = torch.randn(cq, cq, generator=gen)
    grad = torch.randn(n, cq * nq, t, hw, generator=gen).transpose(1, 2)
    return q, key, value, p1, eye, grad


@needs_library
@pytest.mark.parametrize('eps', [None, 1e-6])
@pytest.mark.parametrize(
    'sizes',
    [
        (2, 3, 21, 8, 8, 8),  # HW: one block and a part
        (1, 2, 16, 16, 4, 5),  # two vectors of queries, D != Cq
        (1, 2, 9, 8, 12, 20),  # sizes not multiples of 8
    ])
@pytest.mark.parametrize('with_p1_eye', [True, False])
def test_backward_equals_float64_autograd(eps, sizes, with_p1_eye):
    """products() in a graph: its gradients (the library's backward pass,
    through the query's normalisation with ``eps``) equal float64 autograd
    of the literal products, with the strides of the operands kept."""
    nq = sizes[3]
    q, key, value, p1, eye, grad = _operands(*sizes)
    if not with_p1_eye:
        p1 = eye = None
    inputs = [
        x if x is None else x.detach().requires_grad_()
        for x in (q, key, value, p1, eye)
    ]
    out = rsa_native.products(
        *inputs, layout='clips', num_queries=nq, query_eps=eps)
    # clips [N, Cq*L, T, HW]
    out.transpose(1, 2).backward(grad)
    reference = [
        x if x is None else x.detach().double().requires_grad_()
        for x in (q, key, value, p1, eye)
    ]
    want = _products(*reference, nq, eps)
    want.backward(grad.double())
    assert _rel_err(out.transpose(1, 2), want.float()) <= 1e-6
    for name, got, ref in zip(('q', 'key', 'value', 'P1', 'I'), inputs,
                              reference):
        if got is None:
            continue
        assert _rel_err(got.grad, ref.grad.float()) <= 1e-6, name
    assert inputs[1].grad.stride() == key.stride()
    assert inputs[2].grad.stride() == value.stride()


@needs_library
@pytest.mark.parametrize('with_p1_eye', [True, False])
@pytest.mark.parametrize('half', ['kv', 'qy', 'both'])
def test_bfloat16_operands(half, with_p1_eye):
    """bfloat16 key and value (the filters under autocast with AMX) and/or
    a bfloat16 query and output (the projection under autocast), read with
    any strides: the output is bit for bit the float32 one of the same
    values, rounded to nearest even where bfloat16; so is every gradient of
    a bfloat16 operand (the operands' dtypes and strides), those of the
    float32 ones equal; those of P1 and I are float32 sums of the rounded
    gradients (bf16 precision)."""
    nq = 8
    q, key, value, p1, eye, grad = _operands(2, 3, 21, nq, 8, 8)
    if not with_p1_eye:
        p1 = eye = None
    if half in ('kv', 'both'):  # the filters' channel-major layout
        key = key.transpose(0, 1).bfloat16().transpose(0, 1)
        value = value.transpose(0, 1).bfloat16().transpose(0, 1)
    if half in ('qy', 'both'):  # a slice of a bfloat16 projection
        q, grad = q.bfloat16(), grad.bfloat16()
    results = []
    for operands in ((q, key, value), (q.float(), key.float(), value.float())):
        inputs = [
            x if x is None else x.detach().requires_grad_()
            for x in (*operands, p1, eye)
        ]
        out = rsa_native.products(
            *inputs, layout='clips', num_queries=nq, query_eps=1e-6)
        out.transpose(
            1,
            2).backward(grad.float() if out.dtype == torch.float32 else grad)
        results.append((out, inputs))
    (got, low), (want, full) = results
    assert got.dtype == q.dtype
    assert torch.equal(got, want.to(q.dtype))
    for i, operand in enumerate((q, key, value)):
        assert low[i].grad.dtype == operand.dtype
        assert torch.equal(low[i].grad, full[i].grad.to(operand.dtype))
    for i, operand in ((1, key), (2, value)):
        assert low[i].grad.stride() == operand.stride()
    for i in (3, 4):  # P1, I
        if with_p1_eye:
            assert low[i].grad.dtype == torch.float32
            assert _rel_err(low[i].grad, full[i].grad) <= 1e-2


@needs_library
def test_products_frames_and_no_grad(calls):
    """products(): frames or clips out, a new tensor; without gradients
    no graph; a bad layout named."""
    q, key, value, p1, eye, _ = _operands(2, 3, 10, 8, 8, 8)
    n, t, _, hw = q.shape
    frames = rsa_native.products(
        q, key, value, p1, eye, layout='frames', num_queries=8)
    clips = rsa_native.products(
        q, key, value, p1, eye, layout='clips', num_queries=8)
    assert frames.shape == (n * t, 64, hw) and clips.shape == (n, 64, t, hw)
    assert not frames.requires_grad and calls['native'] == 2
    assert torch.equal(frames.view(n, t, 64, hw), clips.transpose(1, 2))
    with pytest.raises(ValueError, match='layout'):
        rsa_native.products(
            q, key, value, p1, eye, layout='rows', num_queries=8)


@needs_library
def test_training_failure(monkeypatch):
    """A forward pass that fails warns once and the layer trains on the
    PyTorch path; a failing backward pass raises (nothing to fall back
    on)."""
    layer = _layer(64).train()
    x = torch.randn(1, 64, 3, 6, 6)
    grad = torch.randn(1, 64, 3, 6, 6)
    with force_path('cpu_bmm'):
        want, want_grads = _train_step(layer, x, grad)
    library = rsa_native._load()[0]
    backward = library.mmrsa_rsa_products_backward_f32
    monkeypatch.setattr(library, 'mmrsa_rsa_products_backward_f32',
                        lambda *args: 2)
    out = layer(x.requires_grad_())
    with pytest.raises(RuntimeError, match='out of memory'):
        out.backward(grad)
    monkeypatch.setattr(library, 'mmrsa_rsa_products_backward_f32', backward)
    monkeypatch.setattr(library, 'mmrsa_rsa_products_f32', lambda *args: 2)
    with pytest.warns(RuntimeWarning, match='out of memory'):
        got, got_grads = _train_step(layer, x, grad)
    assert 'given up' in rsa_native.native_status()
    assert torch.equal(got, want)
    for name, g in want_grads.items():
        assert torch.equal(got_grads[name], g), name


@needs_library
@pytest.mark.parametrize('eps', [None, 1e-6])
def test_products_and_their_checks(eps):
    gen = torch.Generator().manual_seed(0)
    n, t, hw, nq, cq, dim = 2, 3, 21, 16, 4, 5  # HW: one block and a part
    q = torch.randn(n, t, nq * cq, hw, generator=gen)
    key = torch.randn(n * t * hw, cq, dim, generator=gen)
    value = torch.randn(n * t * hw, cq, dim + cq, generator=gen)
    p1 = torch.randn(cq, dim, generator=gen)
    eye = torch.randn(cq, cq, generator=gen)
    want = _products(q, key, value, p1, eye, nq, eps)
    out = torch.full((n, t, cq * nq, hw), float('nan'))
    assert rsa_native.native_products(
        q, key, value, p1, eye, out, num_queries=nq, query_eps=eps)
    assert _rel_err(out, want.float()) <= 1e-6
    # any strides: D-major key, q read from a wider tensor, out written
    # into one (clip layout [N, C, T, HW] seen as [N, T, C, HW])
    strided = key.transpose(1, 2).contiguous().transpose(1, 2)
    wide_q = torch.randn(n, t, nq * cq + 3, hw)
    wide_q[:, :, :nq * cq] = q
    clip = torch.full((n, cq * nq + 2, t, hw), float('nan'))
    assert rsa_native.native_products(
        wide_q[:, :, :nq * cq],
        strided,
        value,
        p1,
        eye,
        clip[:, 1:-1].transpose(1, 2),
        num_queries=nq,
        query_eps=eps)
    assert torch.equal(clip[:, 1:-1].transpose(1, 2), out)
    assert clip[:, [0, -1]].isnan().all()  # nothing written outside
    # without P1 and I
    assert rsa_native.native_products(
        q, key, value, None, None, out, num_queries=nq, query_eps=eps)
    want = _products(q, key, value, None, None, nq, eps)
    assert _rel_err(out, want.float()) <= 1e-6

    def call(**changes):
        args = dict(
            q=q, key=key, value=value, p1=p1, eye=eye, out=out, num_queries=nq)
        args.update(changes)
        return rsa_native.native_products(**args)

    with pytest.raises(ValueError, match='multiple of 8'):
        call(q=q[:, :, :4 * cq], out=out[:, :, :4 * cq], num_queries=4)
    with pytest.raises(ValueError, match='float32'):
        call(q=q.double())
    with pytest.raises(ValueError, match='D \\+ Cq'):
        call(value=value[..., :-1])
    with pytest.raises(ValueError, match='both float32 or both bfloat16'):
        call(key=key.bfloat16())  # the value float32
    with pytest.raises(ValueError, match='and so q and out'):
        call(q=q.bfloat16())  # out float32
    # a channels-last query
    assert rsa_native.native_products(
        q.transpose(2, 3).contiguous().transpose(2, 3),
        key,
        value,
        None,
        None,
        out,
        num_queries=nq,
        query_eps=eps)
    assert _rel_err(out, want.float()) <= 1e-6
    with pytest.raises(ValueError, match='unit stride'):
        call(out=torch.empty(n, t, hw, cq * nq).transpose(2, 3))


ONE_RUNTIME = r"""
import torch
from mmrsa.models.common import RSA, rsa_native
assert rsa_native.native_available(), rsa_native.native_status()
with torch.no_grad():
    RSA(64).eval()(torch.randn(1, 64, 3, 6, 6))
with open('/proc/self/maps') as f:
    print(sorted({line.split()[-1] for line in f
                  if 'libgomp' in line or 'libiomp' in line}))
"""


@needs_library
@pytest.mark.skipif(
    not sys.platform.startswith('linux'), reason='reads /proc/self/maps')
def test_one_openmp_runtime():
    """The library's OpenMP threads are PyTorch's: a second runtime would
    compete with PyTorch's spinning workers (measured: the products took
    2-3x their time). A fresh process, as other tests load other runtimes
    (scikit-learn ships its own)."""
    result = subprocess.run([sys.executable, '-c', ONE_RUNTIME],
                            capture_output=True,
                            text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    runtimes = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert len(runtimes) == 1, runtimes
    assert 'torch' in runtimes[0], runtimes


@needs_library
@pytest.mark.parametrize('amx', [True, False], ids=['amx', 'fp32-filters'])
def test_autocast_frames_layer(calls, amx, monkeypatch):
    """FrameRSA under CPU bf16 autocast, training: the projection in bf16,
    the native products (float32 sums) reading the query from the bf16
    projection's frames, the key and value in bf16 where the filters run in
    bf16 (AMX), writing bf16 frames close to the float32 layer's output;
    float32 gradients close to its."""
    monkeypatch.setattr(rsa_module, 'amx_filters', lambda: amx)
    layer, x, grad = _frames_case(64)
    want, want_grads = _train_step(layer, x, grad)
    assert calls['native'] == 1
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got, got_grads = _train_step(layer, x, grad)
    assert calls['native'] == 2
    bf16 = torch.bfloat16
    filters = bf16 if amx else torch.float32
    assert calls['dtypes'] == [(torch.float32, ) * 2, (bf16, filters)]
    assert got.dtype == torch.bfloat16
    assert _rel_err(got.float(), want) <= 2e-2
    for name, want_grad in want_grads.items():
        assert got_grads[name].dtype == torch.float32
        assert _rel_err(got_grads[name], want_grad) <= 5e-2, name


@needs_library
@pytest.mark.parametrize(
    'kwargs',
    [{}, dict(norm='none'),
     dict(norm='bn'), dict(stride=2)])
def test_frames_layer(calls, kwargs):
    """RSANet's FrameRSA: frames in, frames out. With L2 or no norm and
    stride 1 the native products read the query from the projection of the
    frames and write the output frames (attend_frames); otherwise they run
    inside attend. Either way: the PyTorch result."""
    layer, x, _ = _frames_case(64, **kwargs)
    layer.eval()
    with torch.no_grad():
        frames = layer.attend_frames(
            layer.projection.weight.new_zeros(6, layer.projection.out_channels,
                                              9, 7), 3)
        assert (frames is not None) == (kwargs in ({}, dict(norm='none')))
        calls['native'] = 0
        got = layer(x)
        assert calls['native'] == 1
        with force_path('cpu_bmm'):
            want = layer(x)
        assert calls['native'] == 1
        # channels-last frames (a channels-last projection) as well
        channels_last = layer(x.contiguous(memory_format=torch.channels_last))
        assert calls['native'] == 2
    assert got.shape == want.shape
    assert _rel_err(got, want) <= 1e-5
    assert _rel_err(channels_last, want) <= 1e-5


@needs_library
def test_a_stale_build_is_not_used(monkeypatch):
    """A library built from another version of the C source (an editable
    install not rebuilt) would be called with the wrong arguments: it is
    refused, with the fix, and the layers run PyTorch."""
    monkeypatch.setattr(rsa_native, 'ABI', rsa_native.ABI + 1)
    rsa_native._load.cache_clear()
    try:
        assert not rsa_native.native_available()
        assert 'another version' in rsa_native.native_status()
        assert 'pip install -e .' in rsa_native.native_status()
        with torch.no_grad():
            assert select_path(torch.zeros(1), (8, 8, 8), True) == 'cpu_bmm'
    finally:
        rsa_native._load.cache_clear()


def test_without_the_library_the_layers_run_pytorch(monkeypatch):
    """No compiler at install time: no library, a status that says how to
    get it, and the PyTorch path."""
    monkeypatch.setattr(rsa_native, '_library_path', lambda: None)
    rsa_native._load.cache_clear()
    try:
        assert not rsa_native.native_available()
        assert rsa_native.native_status().startswith('not built')
        assert 'C compiler' in rsa_native.native_status()
        layer = _layer(64)
        x = torch.randn(1, 64, 3, 6, 6)
        with torch.no_grad():
            assert select_path(x, (8, 8, 8), True) == 'cpu_bmm'
            got = layer(x)
            want = rsa_reference(layer.double(), x.double())
        assert _rel_err(got, want.float()) <= 1e-5
        with pytest.raises(RuntimeError, match='not built'):
            rsa_native.native_products(
                torch.zeros(1, 1, 8, 1),
                torch.zeros(1, 1, 1),
                torch.zeros(1, 1, 2),
                None,
                None,
                torch.zeros(1, 1, 8, 1),
                num_queries=8)
    finally:
        rsa_native._load.cache_clear()


# ---------------------------------------------------------------------- #
# the single-channel convolution (inference)
# ---------------------------------------------------------------------- #
def _channel_conv_float64(x: torch.Tensor, weight: torch.Tensor,
                          padding) -> torch.Tensor:
    """float64 ``channel_conv3d``, positions first ``[N*THW, C, O]``."""
    n, c = x.shape[:2]
    out = channel_conv3d(x.double(), weight.double(), padding)
    # [N, C, O, T, H, W] -> [N, T, H, W, C, O]
    return out.permute(0, 3, 4, 5, 1, 2).reshape(-1, c, weight.shape[1])


#: (x [N, C, T, H, W], weight [banks, O, kt, kh, kw]) of the library's
#: convolution: every tile shape (8 filters; 16, 32 and 64 as one to four
#: vectors; 24 and 48 filters as vectors of 8 and 16; 128 as two tiles),
#: rows of 1 to 15 positions (tiles of 8, of 6 with four vectors, and the
#: rest), one bank, groups and a bank per channel, frames and rows shorter
#: than the kernel, 1x1x1 and non-square kernels; with AVX-512, 8 and 24
#: filters in tiles along W of one or two vectors of 16 positions (rows of
#: 1 to 37: full, partial and several tiles).
CONV_CASES = [
    ((2, 8, 8, 9, 12), (8, 8, 5, 7, 7)),  # H1 at stage 1, Cq = D = 8
    ((1, 16, 3, 5, 15), (16, 16, 5, 7, 7)),
    ((1, 4, 4, 6, 13), (4, 32, 3, 3, 3)),
    ((1, 4, 2, 3, 7), (2, 64, 5, 7, 7)),  # groups
    ((1, 6, 3, 5, 9), (3, 24, 3, 3, 5)),
    ((1, 3, 2, 4, 11), (1, 48, 5, 7, 7)),  # one bank (the value filters)
    ((1, 2, 3, 4, 14), (2, 128, 3, 5, 3)),
    ((1, 2, 1, 1, 1), (2, 8, 1, 1, 1)),
    ((2, 3, 1, 2, 3), (3, 16, 5, 7, 7)),  # everything smaller than kernel
    ((1, 2, 3, 4, 37), (2, 8, 5, 7, 7)),  # along W: 32 + 5 positions
    ((1, 3, 2, 3, 16), (3, 24, 3, 5, 7)),  # along W: one full vector
    ((1, 2, 2, 3, 20), (1, 24, 3, 3, 5)),  # along W: 20 of 32, one bank
]


@needs_library
@pytest.mark.parametrize('x_shape,w_shape', CONV_CASES)
def test_channel_conv_equals_float64(x_shape, w_shape):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=gen)
    weight = torch.randn(w_shape, generator=gen)
    padding = tuple(k // 2 for k in w_shape[2:])
    want = _channel_conv_float64(x, weight, padding)
    with torch.no_grad():
        got = rsa_native.channel_conv(x, weight, padding)
    assert got.shape == want.shape and got.is_contiguous()
    assert _rel_err(got, want.float()) <= 1e-6
    # channels first, [C, N, T, H, W, O]: the same values
    channels = rsa_native.channel_conv(x, weight, padding, layout='channels')
    assert channels.is_contiguous()
    n, c, t, h, w = x.shape
    assert torch.equal(
        channels.permute(1, 2, 3, 4, 0, 5).reshape(got.shape), got)
    # channels of a wider tensor (the key of a key-value projection): read
    # in place; a channels-last clip: copied first
    wide = torch.randn(x.shape[0], 2 * x.shape[1] + 1, *x.shape[2:])
    wide[:, 1:x.shape[1] + 1] = x
    channels_last = x.contiguous(memory_format=torch.channels_last_3d)
    for strided in (wide[:, 1:x.shape[1] + 1], channels_last):
        assert torch.equal(
            rsa_native.channel_conv(strided, weight, padding), got)


def _float64_conv_backward(x_shape, w_shape, wrt: str):
    """float64 ``channel_conv3d`` (channels last, ``[C, N, T, H, W, O]``)
    of random ``x`` and ``weight``, differentiated with respect to ``wrt``
    (``'x'`` or ``'weight'``) for a random gradient: ``x``, ``weight``,
    ``padding`` and that gradient."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64)
    weight = torch.randn(w_shape, generator=gen, dtype=torch.float64)
    padding = tuple(k // 2 for k in w_shape[2:])
    dict(x=x, weight=weight)[wrt].requires_grad_()
    out = channel_conv3d(x, weight, padding, channels_last=True)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    out.backward(grad)
    return x, weight, padding, grad


@needs_library
@pytest.mark.parametrize('x_shape,w_shape', CONV_CASES)
def test_channel_conv_weight_grad_equals_float64(x_shape, w_shape):
    """The filters' gradient of the library (the backward pass of H1 in
    training) against float64 autograd of ``channel_conv3d``; read from a
    key whose channels are the outer dimension, as the layer saves it."""
    x, weight, _, grad = _float64_conv_backward(x_shape, w_shape, 'weight')
    # [N, C, T, H, W] with C the outer dimension in memory
    x_saved = x.float().transpose(0, 1).contiguous().transpose(0, 1)
    got = rsa_native.channel_conv_weight_grad(x_saved, grad.float(), w_shape)
    assert got.shape == weight.shape
    assert _rel_err(got.double(), weight.grad) <= 1e-5
    # rows of taps shared out among 1 or 3 threads: the same sums
    sums = _with_threads((1, 3), lambda: rsa_native.channel_conv_weight_grad(
        x_saved, grad.float(), w_shape))
    assert torch.equal(sums[0], got) and torch.equal(sums[1], got)
    every_other = torch.randn(*grad.shape[:-1], 2 * grad.shape[-1])[..., ::2]
    with pytest.raises(RuntimeError, match='unit stride along O'):
        rsa_native.channel_conv_weight_grad(x_saved, every_other, w_shape)


@needs_library
@pytest.mark.parametrize('x_shape,w_shape', CONV_CASES)
def test_channel_conv_input_grad_equals_float64(x_shape, w_shape):
    """The input's gradient of the library (the backward pass of H1 and of
    the value filters in training) against float64 autograd of
    ``channel_conv3d``, from a gradient in the layer's [C, N, T, H, W, O]
    layout; the same sums with 1 and 3 threads."""
    x, weight, padding, grad = _float64_conv_backward(x_shape, w_shape, 'x')
    assert rsa_native.channel_conv_input_grad_applies(grad.float(),
                                                      weight.float(), padding)
    got = rsa_native.channel_conv_input_grad(grad.float(), weight.float())
    assert got.shape == x.shape
    assert _rel_err(got.double(), x.grad) <= 1e-5
    # whole channels shared out among 1 or 3 threads: the same sums
    sums = _with_threads((1, 3), lambda: rsa_native.channel_conv_input_grad(
        grad.float(), weight.float()))
    assert torch.equal(sums[0], got) and torch.equal(sums[1], got)
    # a gradient whose positions are not contiguous rows: the same values
    wide = torch.zeros(*grad.shape[:-2], 2 * grad.shape[-2], grad.shape[-1])
    wide[..., ::2, :] = grad.float()
    assert torch.equal(
        rsa_native.channel_conv_input_grad(wide[..., ::2, :], weight.float()),
        got)
    every_other = torch.randn(*grad.shape[:-1], 2 * grad.shape[-1])[..., ::2]
    with pytest.raises(RuntimeError, match='unit stride along O'):
        rsa_native.channel_conv_input_grad(every_other, weight.float())


@needs_library
def test_channel_conv_input_grad_refuses_what_it_does_not_compute():
    """Not applicable (the PyTorch backward pass) to kernels wider than 7,
    even kernels, other padding, other dtypes, O not a multiple of 8 or
    different from the gradient's; the library itself refuses them too."""
    grad = torch.randn(4, 1, 3, 5, 6, 8)
    weight = torch.randn(2, 8, 3, 3, 3)
    pad = (1, 1, 1)
    assert rsa_native.channel_conv_input_grad_applies(grad, weight, pad)
    refused = [
        (grad, torch.randn(2, 8, 3, 3, 9), (1, 1, 4)),  # 9 taps along W
        (grad, torch.randn(2, 8, 2, 3, 3), pad),  # even kt
        (grad, weight, (0, 1, 1)),  # not half the kernel
        (grad.double(), weight.double(), pad),
        (torch.randn(4, 1, 3, 5, 6, 12), torch.randn(2, 12, 3, 3, 3), pad),
        (torch.randn(4, 1, 3, 5, 6, 16), weight, pad),  # O differs
        (torch.randn(3, 1, 3, 5, 6, 8), weight, pad),  # 2 banks, C = 3
    ]
    for args in refused:
        assert not rsa_native.channel_conv_input_grad_applies(*args)
    with pytest.raises(RuntimeError, match='filters it computes'):
        rsa_native.channel_conv_input_grad(grad, torch.randn(2, 8, 3, 3, 9))
    library = rsa_native._load()[0]
    dx = torch.empty(4, 1, 3, 5, 6)
    filters = weight.permute(0, 2, 3, 4, 1).contiguous()
    strides = grad.permute(1, 2, 3, 4, 0, 5).stride()[:5]

    def call(o=8, kw=3, banks=2):
        return library.mmrsa_channel_conv_dgrad_f32(grad.data_ptr(), *strides,
                                                    filters.data_ptr(),
                                                    dx.data_ptr(),
                                                    dx.stride(1), dx.stride(0),
                                                    1, 4, 3, 5, 6, banks, o, 3,
                                                    3, kw, 1)

    assert call() == 0
    assert call(o=12) == 1 and call(kw=9) == 1 and call(kw=2) == 1
    assert call(banks=3) == 1


@needs_library
def test_channel_conv_threads_give_the_same_bits():
    x = torch.randn(2, 8, 4, 9, 10)
    weight = torch.randn(8, 16, 5, 7, 7)
    outs = _with_threads((1, 2, 3),
                         lambda: rsa_native.channel_conv(x, weight, (2, 3, 3)))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@needs_library
def test_channel_conv_refuses_what_it_does_not_compute(monkeypatch):
    """None (the caller's PyTorch path) for gradients, other dtypes and
    devices, filter counts that are not a multiple of 8, even kernels,
    another padding, banks that do not divide the channels; the library
    itself refuses sizes it does not handle."""
    x = torch.randn(1, 4, 3, 5, 6)
    weight = torch.randn(2, 8, 3, 3, 3)
    pad = (1, 1, 1)
    assert rsa_native.channel_conv(x, weight, pad) is not None
    refused = [
        (x.requires_grad_(), weight, pad),
        (x.detach().double(), weight.double(), pad),
        (x.detach(), torch.randn(2, 12, 3, 3, 3), pad),  # O = 12
        (x.detach(), torch.randn(2, 8, 2, 3, 3), (1, 1, 1)),  # even kt
        (x.detach(), weight, (0, 1, 1)),  # not half the kernel
        (x.detach(), torch.randn(3, 8, 3, 3, 3), pad),  # 3 banks, C = 4
        (x.detach()[:, :0], weight[:0], pad),  # nothing to compute
    ]
    for args in refused:
        assert rsa_native.channel_conv(*args) is None
    with torch.no_grad():  # no gradient recorded: computed
        assert rsa_native.channel_conv(x, weight, pad) is not None
    monkeypatch.setenv(rsa_native.DISABLE_ENV, '1')
    assert rsa_native.channel_conv(x.detach(), weight, pad) is None
    monkeypatch.delenv(rsa_native.DISABLE_ENV)
    library = rsa_native._load()[0]
    # the library's own checks (0 = done, 1 = not handled)
    out = torch.empty(1 * 3 * 5 * 6, 4, 8)
    filters = weight.permute(0, 2, 3, 4, 1).contiguous()

    # [N, T, H, W, C, O]: the strides along (n, t, h, w, c)
    out_strides = out.view(1, 3, 5, 6, 4, 8).stride()[:5]

    def call(o=8, kt=3, banks=2, c=4):
        return library.mmrsa_channel_conv_f32(x.data_ptr(),
                                              *x.stride()[:2],
                                              filters.data_ptr(),
                                              out.data_ptr(), *out_strides, 1,
                                              c, 3, 5, 6, banks, o, kt, 3, 3,
                                              1)

    assert call() == 0
    assert call(o=12) == 1 and call(kt=2) == 1 and call(banks=3) == 1
    assert call(c=0, banks=1) == 1
    with pytest.raises(ValueError, match="'positions' or 'channels'"):
        rsa_native.channel_conv(x.detach(), weight, pad, layout='frames')
