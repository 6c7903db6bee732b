# Copyright (c) mmrsa contributors. All rights reserved.
"""RSA and RSANet under mixed precision, ``torch.compile`` and gradient
checkpointing.

- bfloat16 autocast (what ``--amp`` gives on a CPU): outputs and gradients
  stay close to float32, and the output has the dtype autocast gives the
  same layer written with plain torch ops (:class:`RSAReference`).
- ``torch.compile``: the compiled layer / backbone computes what eager mode
  computes, forward and backward, in one graph (``fullgraph=True``).
- ``with_cp=True``: the same outputs and gradients as without, with far
  fewer bytes saved for backward.
"""
import contextlib
import shutil
from typing import Dict

import pytest
import torch

import mmrsa  # noqa: F401  (registers the modules)
from mmrsa.models.backbones import RSANet
from mmrsa.models.common import RSA, RSAReference
from mmrsa.utils import saved_bytes

T = 4  # frames per clip
BF16 = torch.bfloat16

# Tolerances of bfloat16 (8 mantissa bits, relative rounding 2**-9): one
# layer lands within ~1e-2 of float32 (measured 0.008), its gradients too.
LAYER_FWD_TOL = 3e-2
LAYER_GRAD_TOL = 5e-2


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ``|a - b| / |b|`` (Frobenius norms, in float32)."""
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm()).item()


def _perturb(module: torch.nn.Module,
             scale: float = 0.3,
             seed: int = 0) -> torch.nn.Module:
    """Move every parameter away from its init (``I`` off the identity,
    ``P1`` off its tiny init), so every part of the layer matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return module


def _grads(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {
        name: p.grad.clone()
        for name, p in module.named_parameters() if p.grad is not None
    }


def small_rsanet(**kwargs) -> RSANet:
    """ResNet-18 RSANet with one RSA block per stage, 3x3x3 contexts.

    ``zero_init_residual=False`` so that the RSA branches (whose last BN
    would otherwise start at zero) take part in the output.
    """
    cfg = dict(
        depth=18,
        num_segments=T,
        rsa_blocks=((1, ), (1, ), (1, ), (1, )),
        rsa_cfg=dict(kernel_size=(3, 3, 3), num_queries=4),
        pretrained=None,
        zero_init_residual=False)
    cfg.update(kwargs)
    torch.manual_seed(0)
    net = RSANet(**cfg)
    net.init_weights()
    return net


def frames(num_clips: int = 2, size: int = 32) -> torch.Tensor:
    """``[N*T, 3, size, size]`` frames of ``num_clips`` clips."""
    torch.manual_seed(1)
    return torch.randn(num_clips * T, 3, size, size)


# --------------------------------------------------------------------- #
# bfloat16 autocast: one layer
# --------------------------------------------------------------------- #
# (channels, RSA options); Cq = channels / num_queries. Up to Cq = 16 a CPU
# evaluates the per-position products positions last (vectorised loops),
# beyond it positions first (bmm): both layouts are covered.
LAYER_CASES = {
    'V-V': (32, dict(kernel_size=(3, 3, 3), kernel_type='V',
                     context_type='V')),
    'R-R': (32, dict(kernel_size=(3, 3, 3), kernel_type='R',
                     context_type='R')),
    'VR-VR': (32, dict(kernel_size=(3, 3, 3))),
    'default': (32, dict()),  # VR kernel, VR context, 5x7x7, L = 8
    'VR-VR-Cq32': (64, dict(kernel_size=(3, 3, 3), num_queries=2)),
}


def _layer_case(name: str):
    channels, options = LAYER_CASES[name]
    torch.manual_seed(0)
    layer = _perturb(RSA(channels, **options))
    torch.manual_seed(1)
    x = torch.randn(2, channels, T, 8, 8, requires_grad=True)
    return layer, x, options


@pytest.mark.parametrize('name', list(LAYER_CASES))
def test_autocast_bf16_forward_and_backward_close_to_fp32(name):
    layer, x, _ = _layer_case(name)
    torch.manual_seed(2)
    weights = torch.randn(x.shape)  # a loss whose gradient is not ~ out

    out32 = layer(x)
    (out32 * weights).sum().backward()
    grads32, grad_x32 = _grads(layer), x.grad.clone()
    layer.zero_grad(set_to_none=True)
    x.grad = None

    with torch.autocast('cpu', dtype=BF16):
        out16 = layer(x)
    assert out16.shape == out32.shape
    assert _rel_err(out16, out32) < LAYER_FWD_TOL
    (out16.float() * weights).sum().backward()
    grads16 = _grads(layer)

    assert set(grads16) == set(grads32) == {
        n
        for n, p in layer.named_parameters()
    }
    assert torch.isfinite(x.grad).all()
    assert _rel_err(x.grad, grad_x32) < LAYER_GRAD_TOL
    for param_name, grad in grads16.items():
        # parameters stay float32 and so do their gradients
        assert grad.dtype == torch.float32, param_name
        assert torch.isfinite(grad).all(), param_name
        assert _rel_err(grad, grads32[param_name]) < LAYER_GRAD_TOL, (
            param_name)


@pytest.mark.parametrize('name', LAYER_CASES)
def test_autocast_output_dtype(name):
    """Under autocast the layer returns what the same layer written with
    plain torch ops (convolutions and matrix products, which autocast runs
    in bfloat16) returns, whichever memory layout evaluates it."""
    layer, x, options = _layer_case(name)
    reference = RSAReference(layer.in_channels, **options)
    reference.load_state_dict(layer.state_dict())
    with torch.autocast('cpu', dtype=BF16), torch.no_grad():
        dtype, expected = layer(x).dtype, reference(x).dtype
    assert expected == BF16
    assert dtype == expected


@pytest.mark.parametrize('amx', [False, True], ids=['fp32-filters', 'amx'])
@pytest.mark.parametrize('native', [True, False], ids=['native', 'no-native'])
@pytest.mark.parametrize('name', ['default', 'VR-VR-Cq32', 'V-V'])
def test_autocast_transform_is_float32(name, native, amx, monkeypatch):
    """Under CPU bf16 autocast the projection runs in bf16 and the rest of
    the layer with autocast off, its output rounded to bf16: bit for bit the
    float32 transform of the bf16 projection, forward and backward, on the
    float32 path the layer reports (the native products where they are
    built, or without them). With AMX (:func:`amx_filters`, forced here on
    any CPU) the single-channel filters of the positions-first paths run as
    the taps convolution in bf16."""
    from mmrsa.models.common import rsa as rsa_module
    from mmrsa.models.common import rsa_native
    monkeypatch.setattr(rsa_module, 'amx_filters', lambda: amx)
    taps_dtypes = []
    taps = rsa_module.taps_channel_conv

    def spy(x, weight, padding):
        taps_dtypes.append(x.dtype)
        return taps(x, weight, padding)

    monkeypatch.setattr(rsa_module, 'taps_channel_conv', spy)
    layer, x, _ = _layer_case(name)
    torch.manual_seed(2)
    grad = torch.randn(x.shape).to(BF16)
    switch = rsa_native.disabled() if not native else contextlib.nullcontext()
    with switch:
        with torch.autocast('cpu', dtype=BF16):
            got = layer(x)
            path = layer.transform_path(x)
        got.backward(grad)
        got_grads, got_grad_x = _grads(layer), x.grad.clone()
        layer.zero_grad(set_to_none=True)
        x.grad = None
        autocast_taps, taps_dtypes[:] = list(taps_dtypes), []
        # the same by hand: bf16 projection, float32 transform (with the
        # filters' dtype the layer set for it)
        proj = torch.nn.functional.conv3d(
            x.to(BF16), layer.projection.weight.to(BF16))
        monkeypatch.setattr(rsa_module, '_filter_dtype', BF16 if amx else None)
        want = layer.attend(proj.float()).to(BF16)
        monkeypatch.setattr(rsa_module, '_filter_dtype', None)
        want.backward(grad)
        float32_path = layer.transform_path(x)
    assert got.dtype == BF16
    assert torch.equal(got, want)
    assert torch.equal(x.grad, got_grad_x)
    want_grads = _grads(layer)
    assert set(got_grads) == set(want_grads)
    for param_name, want_grad in want_grads.items():
        assert torch.equal(got_grads[param_name], want_grad), param_name
    assert path == float32_path
    fast = 'cpu_native' if native and rsa_native.native_available() else None
    if name == 'default' and fast:  # native: R kernel and context, L = 8
        assert path == fast
    else:
        assert path in ('cpu_loops', 'cpu_bmm')
    # bf16 taps for the key (if any) and the value, on positions-first paths
    filters = 1 + (name != 'V-V')
    bf16_taps = [BF16] * filters if amx and path != 'cpu_loops' else []
    assert autocast_taps == bf16_taps
    assert rsa_module._filter_dtype is None  # restored


def test_autocast_disabled_inside_is_float32():
    """Autocast switched off again inside leaves the layer in float32."""
    layer, x, _ = _layer_case('VR-VR')
    with torch.autocast('cpu', dtype=BF16):
        with torch.autocast('cpu', enabled=False):
            out = layer(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, layer(x))


# --------------------------------------------------------------------- #
# bfloat16 autocast: a whole (tiny) RSANet
# --------------------------------------------------------------------- #
def _bf16_errors(net: RSANet, x: torch.Tensor, training: bool):
    """Relative bf16-vs-fp32 errors of the features and of all parameter
    gradients (as one vector) of ``net``; checks they are finite."""
    net.train(training)
    torch.manual_seed(3)
    weights = torch.randn(x.shape[0], 512, 1, 1)
    feats32 = net(x)
    (feats32 * weights).sum().backward()
    grads32 = _grads(net)
    net.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=BF16):
        feats16 = net(x)
    assert feats16.shape == feats32.shape
    assert feats16.dtype == BF16  # the last op is a (bf16) convolution
    (feats16.float() * weights).sum().backward()
    grads16 = _grads(net)
    net.zero_grad(set_to_none=True)
    assert set(grads16) == set(grads32)
    assert all(torch.isfinite(g).all() for g in grads16.values())
    flat16 = torch.cat([grads16[k].flatten() for k in sorted(grads16)])
    flat32 = torch.cat([grads32[k].flatten() for k in sorted(grads32)])
    return _rel_err(feats16, feats32), _rel_err(flat16, flat32)


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
def test_rsanet_bf16_close_to_fp32_and_no_worse_than_resnet(training):
    """The error bf16 brings to a whole network comes from its depth (and,
    in training mode, from batch statistics over 8 frames), not from RSA:
    the tiny RSANet is as close to float32 as the same ResNet-18 without
    RSA blocks."""
    x = frames()
    rsanet = small_rsanet()
    assert len(rsanet.rsa_block_names) == 4
    resnet = small_rsanet(rsa_blocks=((), (), (), ()))
    feat_err, grad_err = _bf16_errors(rsanet, x, training)
    base_feat_err, base_grad_err = _bf16_errors(resnet, x, training)
    # measured: eval 0.016 / train 0.053 (features), 0.18 / 0.42 (grads)
    assert feat_err < (0.05 if not training else 0.1)
    assert feat_err < 1.5 * base_feat_err + 0.01
    assert grad_err < 1.5 * base_grad_err + 0.05


def test_recognizer_loss_backward_under_bf16():
    """The real training path: ``Recognizer2D`` loss (head included) under
    bf16 autocast, as ``--amp`` runs it on a CPU, with finite gradients."""
    from mmengine.registry import init_default_scope

    from mmaction.registry import MODELS
    from mmaction.structures import ActionDataSample
    init_default_scope('mmaction')
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='Recognizer2D',
            backbone=dict(
                type='RSANet',
                depth=18,
                num_segments=T,
                rsa_blocks=((1, ), (), (), ()),
                rsa_cfg=dict(kernel_size=(3, 3, 3), num_queries=4),
                pretrained=None),
            cls_head=dict(
                type='TSMHead',
                num_segments=T,
                is_shift=False,
                num_classes=5,
                in_channels=512,
                label_smooth_eps=0.1)))
    samples = [ActionDataSample().set_gt_label(i) for i in range(2)]
    inputs = frames().view(2, T, 3, 32, 32)
    with torch.autocast('cpu', dtype=BF16):
        losses = model(inputs, samples, mode='loss')
    loss = losses['loss_cls']
    assert torch.isfinite(loss)
    loss.backward()
    rsa = model.backbone.layer1[1].conv2.conv
    assert isinstance(rsa, RSA)
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in rsa.parameters())


# --------------------------------------------------------------------- #
# torch.compile
# --------------------------------------------------------------------- #
def _has_cxx() -> bool:
    return any(shutil.which(c) for c in ('g++', 'c++', 'clang++'))


needs_cxx = pytest.mark.skipif(
    not _has_cxx(), reason='inductor on CPU needs a C++ compiler')


@pytest.fixture
def fresh_dynamo():
    """Each compile test starts (and leaves) with dynamo's caches empty."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compare_compiled(module: torch.nn.Module, x: torch.Tensor,
                      backend: str) -> None:
    """Compiled (``fullgraph``: no graph breaks) forward and backward of
    ``module`` equal eager mode's to 1e-4."""
    x = x.detach().requires_grad_()
    out = module(x)
    torch.manual_seed(5)
    weights = torch.randn(out.shape)
    (out * weights).sum().backward()
    grads, grad_x = _grads(module), x.grad.clone()
    module.zero_grad(set_to_none=True)
    x.grad = None

    compiled = torch.compile(module, backend=backend, fullgraph=True)
    out_c = compiled(x)
    assert out_c.shape == out.shape
    assert _rel_err(out_c, out) < 1e-4
    (out_c * weights).sum().backward()
    grads_c = _grads(module)
    assert set(grads_c) == set(grads)
    assert _rel_err(x.grad, grad_x) < 1e-4
    for name, grad in grads_c.items():
        assert _rel_err(grad, grads[name]) < 1e-4, name


@needs_cxx
def test_compiled_rsa_layer_inductor(fresh_dynamo):
    """The layer itself, with its hand-written autograd functions, through
    the default backend (dynamo + AOT autograd + inductor C++ kernels);
    ~35 s on one CPU thread, most of it compiling."""
    layer, x, _ = _layer_case('VR-VR')
    _compare_compiled(layer, x, backend='inductor')


@pytest.mark.parametrize('name', ['default', 'VR-VR-Cq32'])
def test_compiled_layer_under_cpu_autocast(name, fresh_dynamo):
    """torch.compile of the layer under CPU bf16 autocast, in one graph
    (``aot_eager``): the float32 transform with its float32 filters (no
    native products, no AMX check while compiling), bf16 out, as close to
    eager under autocast as bf16 allows, gradients for every parameter."""
    layer, x, _ = _layer_case(name)
    with torch.autocast('cpu', dtype=BF16):
        eager = layer(x)
        compiled = torch.compile(layer, backend='aot_eager', fullgraph=True)
        out = compiled(x)
    assert out.dtype == eager.dtype == BF16
    assert _rel_err(out, eager) < LAYER_FWD_TOL
    out.float().sum().backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in layer.parameters())


def test_compiled_rsanet_aot_eager(fresh_dynamo):
    """A whole tiny RSANet captured in one graph, forward and backward
    (``aot_eager``: the capture without inductor's slow C++ build)."""
    net = small_rsanet()
    net.train()
    _compare_compiled(net, frames(), backend='aot_eager')


@pytest.mark.slow
@needs_cxx
def test_compiled_rsanet_inductor(fresh_dynamo):
    """The tiny RSANet through inductor (2 to 5 minutes on one CPU thread,
    most of it building the backward kernels)."""
    net = small_rsanet()
    net.train()
    _compare_compiled(net, frames(), backend='inductor')


# --------------------------------------------------------------------- #
# gradient checkpointing
# --------------------------------------------------------------------- #
def _checkpoint_twins(drop_path_rate: float, depth: int = 50):
    """An RSANet with and without ``with_cp``, same weights."""
    cfg = dict(
        depth=depth,
        num_segments=T,
        rsa_cfg=dict(kernel_size=(3, 3, 3), num_queries=4),
        pretrained=None,
        zero_init_residual=False,
        drop_path_rate=drop_path_rate)
    torch.manual_seed(0)
    plain = RSANet(**cfg)
    plain.init_weights()
    with_cp = RSANet(with_cp=True, **cfg)
    with_cp.load_state_dict(plain.state_dict())
    return plain.train(), with_cp.train()


@pytest.mark.parametrize('drop_path_rate,depth', [(0., 50), (0.2, 50),
                                                  (0.2, 18)])
def test_with_cp_same_outputs_and_gradients(drop_path_rate, depth):
    """Recomputation in backward reproduces the forward, stochastic depth
    included (checkpointing restores the RNG state). Basic blocks (R18)
    too, which MMAction2's ResNet cannot checkpoint."""
    plain, with_cp = _checkpoint_twins(drop_path_rate, depth)
    channels = 2048 if depth == 50 else 512
    assert with_cp.with_cp and not plain.with_cp
    x = frames()
    torch.manual_seed(4)
    weights = torch.randn(x.shape[0], channels, 1, 1)
    results = []
    for net in (plain, with_cp):
        torch.manual_seed(7)  # the same clip drop masks for both
        inputs = x.clone().requires_grad_()
        out = net(inputs)
        (out * weights).sum().backward()
        results.append((out.detach(), inputs.grad, _grads(net)))
    (out_a, gx_a, grads_a), (out_b, gx_b, grads_b) = results
    torch.testing.assert_close(out_b, out_a)
    torch.testing.assert_close(gx_b, gx_a)
    assert set(grads_b) == set(grads_a)
    assert any('conv2.conv.H1' in name for name in grads_a)  # RSA included
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], msg=name)


@pytest.mark.parametrize('depth', [50, 18])
def test_with_cp_saves_fewer_bytes_for_backward(depth):
    plain, with_cp = _checkpoint_twins(0., depth)
    x = frames()
    saved = {
        name: saved_bytes(lambda: net(x).sum(), exclude=net.parameters())
        for name, net in (('plain', plain), ('cp', with_cp))
    }
    assert 0 < saved['cp'] < saved['plain']
    # the blocks keep only their inputs: measured about a quarter
    assert saved['cp'] < 0.5 * saved['plain']
