# Copyright (c) mmrsa contributors. All rights reserved.
"""RSA and RSANet under CUDA float16 autocast with loss scaling.

This is what ``tools/train.py --amp`` runs on a GPU (MMEngine's
``AmpOptimWrapper``: ``torch.autocast('cuda', dtype=torch.float16)`` and a
dynamic ``GradScaler``). Each check needs CUDA; they are marked ``gpu`` and
run with ``pytest -m gpu``.

- One RSA layer, on each CUDA path (``'plain'``: grouped ``conv3d`` and
  ``bmm``; ``'fused'``: the Triton kernel, where Triton is installed): a
  finite scaled loss, an output within :data:`LAYER_FWD_TOL` of float32 and
  finite gradients within :data:`LAYER_GRAD_TOL` of float32.
- One training step of the SynthMotion RSANet-R18 (``Recognizer2D`` built
  from its config): finite loss and class scores within
  :data:`MODEL_SCORE_TOL` of float32, finite gradients, finite weights after
  the scaled optimiser step; and the same through ``AmpOptimWrapper``.

Float32 references run without TF32, whose 10-bit mantissa is as coarse as
float16's. Tolerances are relative errors ``|a - b| / |b|`` (Frobenius
norms). float16 rounds to 2**-11 relative; bfloat16, with 2**-8, is held to
3e-2 / 5e-2 per layer in test_rsa_precision_compile.py, so float16 is held
to about a third of that. For scale: the same checks under float16 autocast
on a CPU (the plain path) measure 1e-3 for a layer's output, 2e-3 for its
gradients, 2.4e-3 for RSANet's class scores and 1.2e-4 for its loss.
"""
import contextlib
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

import mmrsa  # noqa: F401  (registers the modules)
from mmaction.registry import MODELS
from mmaction.structures import ActionDataSample
from mmrsa.datasets.synthmotion import render_clip
from mmrsa.models.common import rsa_triton
from mmrsa.models.common.rsa import RSA, force_path

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
]

RSANET_CONFIG = (
    Path(__file__).resolve().parents[2] / 'configs' / 'recognition' /
    'rsanet' / 'rsanet_r18_8x1_synthmotion.py')

DEVICE = 'cuda'
FP16 = torch.float16
T = 4  # frames per clip of the layer checks

#: float16-vs-float32 relative error of one layer's output.
LAYER_FWD_TOL = 1e-2
#: ... of its input and parameter gradients.
LAYER_GRAD_TOL = 2e-2
#: ... of RSANet-R18's class scores (4 RSA layers, 17 convolutions deep).
MODEL_SCORE_TOL = 3e-2
#: ... of its loss.
MODEL_LOSS_TOL = 1e-2
#: A dynamic GradScaler starts at 2**16 and halves on every step whose
#: gradients overflow (the step is skipped); it must find a finite step
#: within this many halvings.
MAX_SKIPPED_STEPS = 3

LAYER_CASES = {
    'VR-VR': (32, dict(kernel_size=(3, 3, 3))),
    'default-5x7x7': (32, dict()),
    'V-V': (32, dict(kernel_size=(3, 3, 3), kernel_type='V',
                     context_type='V')),
    'R-R-stride2':
    (32,
     dict(kernel_size=(3, 3, 3), kernel_type='R', context_type='R', stride=2)),
    'VR-VR-Cq32': (64, dict(kernel_size=(3, 3, 3), num_queries=2)),
}


@pytest.fixture
def ieee_fp32():
    """Float32 in full precision: no TF32 in matmuls or cuDNN."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    cudnn = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm()).item()


def _grads(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {
        name: p.grad.detach().clone()
        for name, p in module.named_parameters() if p.grad is not None
    }


def scaled_step(
        module: torch.nn.Module, loss_fn,
        device: str) -> Tuple[object, Dict[str, torch.Tensor], float, int]:
    """One optimiser step as AMP takes it: ``loss_fn()`` under float16
    autocast, the loss scaled by a dynamic GradScaler, gradients unscaled
    and checked, the step taken unless they overflowed (then the scale
    halves and the step is tried again, the weights untouched).

    Returns:
        tuple: The output ``loss_fn`` gave with the step that was taken, the
        unscaled parameter gradients of that step, the loss scale of that
        step, and how many steps were skipped before it.
    """
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device)
    for skipped in range(MAX_SKIPPED_STEPS + 1):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=FP16):
            out, loss = loss_fn()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads = _grads(module)
        finite = all(torch.isfinite(g).all() for g in grads.values())
        scaler.step(optimizer)  # skipped when a gradient is not finite
        scaler.update()
        if finite:
            return out, grads, scale, skipped
    raise AssertionError(
        f'every gradient step overflowed down to scale {scaler.get_scale()}')


# --------------------------------------------------------------------- #
# one RSA layer
# --------------------------------------------------------------------- #
def _layer_case(name: str, device: str):
    channels, options = LAYER_CASES[name]
    torch.manual_seed(0)
    layer = RSA(channels, **options)
    # move every parameter off its init (I off the identity, P1 off its
    # tiny init) so that every part of the layer matters
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape))
    torch.manual_seed(1)
    x = torch.randn(2, channels, T, 8, 8)
    return layer.to(device), x.to(device).requires_grad_()


def check_layer_fp16(name: str, path: str, device: str = DEVICE) -> dict:
    """The float16 checks of one layer; returns the measured errors."""
    layer, x = _layer_case(name, device)
    # the float32 reference: grouped conv3d and bmm (no TF32)
    with force_path('plain'):
        out32 = layer(x)
    torch.manual_seed(2)
    # a loss whose gradient is not ~ the output (a mean, as losses are: a
    # sum's unit gradients would overflow float16 at scale 2**16)
    weights = torch.randn(out32.shape).to(device)
    with force_path('plain'):
        (out32 * weights).mean().backward()
    grads32, grad_x32 = _grads(layer), x.grad.clone()
    layer.zero_grad(set_to_none=True)
    x.grad = None

    def loss_fn():
        x.grad = None  # x is no parameter: the optimiser leaves it
        out = layer(x)
        return out, (out.float() * weights).mean()

    with force_path(path):  # the path under test
        out16, grads16, scale, skipped = scaled_step(layer, loss_fn, device)
    # the layer ran in float16 (on CUDA its last steps, bmm or the fused
    # kernel and the stride's average pooling, keep float16)
    assert out16.dtype == FP16
    assert out16.shape == out32.shape
    assert torch.isfinite(out16).all()
    assert set(grads16) == {n for n, _ in layer.named_parameters()}
    errors = dict(skipped=skipped, out=_rel_err(out16, out32))
    # the scaler unscales parameter gradients only
    grad_x16 = x.grad / scale
    assert torch.isfinite(grad_x16).all()
    errors['grad_x'] = _rel_err(grad_x16, grad_x32)
    for param_name, grad in grads16.items():
        assert grad.dtype == torch.float32, param_name  # fp32 master weights
        errors[param_name] = _rel_err(grad, grads32[param_name])
    assert all(torch.isfinite(p).all() for p in layer.parameters())
    return errors


def _fused_ok(name: str) -> bool:
    options = LAYER_CASES[name][1]
    relational = (
        options.get('kernel_type', 'VR') != 'V'
        and options.get('context_type', 'VR') != 'V')
    return relational and rsa_triton.fused_available(torch.device(DEVICE))


@pytest.mark.parametrize('path', ['plain', 'fused'])
@pytest.mark.parametrize('name', list(LAYER_CASES))
def test_rsa_layer_fp16_autocast_with_grad_scaler(name, path, ieee_fp32):
    if path == 'fused' and not _fused_ok(name):
        pytest.skip('the fused kernel needs Triton and a relational kernel '
                    'and context')
    errors = check_layer_fp16(name, path)
    assert errors.pop('skipped') <= MAX_SKIPPED_STEPS
    assert errors.pop('out') < LAYER_FWD_TOL
    for grad_name, err in errors.items():
        assert err < LAYER_GRAD_TOL, (grad_name, err)


# --------------------------------------------------------------------- #
# a training step of RSANet-R18 (the SynthMotion config)
# --------------------------------------------------------------------- #
def synthmotion_model_and_data(device: str) -> Tuple[torch.nn.Module, dict]:
    """The SynthMotion RSANet-R18 recognizer (no dropout, so that two
    forward passes are comparable) on ``device``, and a batch of four
    SynthMotion clips (8 frames of 32 x 32) as a dataloader gives it."""
    init_default_scope('mmaction')
    cfg = Config.fromfile(str(RSANET_CONFIG))
    cfg.model.cls_head.dropout_ratio = 0.
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.to(device).train()
    num_frames = cfg.model.backbone.num_segments
    clips: List[torch.Tensor] = []
    labels = [0, 1, 6, 9]
    for i, label in enumerate(labels):
        rng = np.random.default_rng(np.random.SeedSequence([0, i]))
        clip = render_clip(label, rng, size=32, num_frames=num_frames)
        clips.append(torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous())
    data = dict(
        inputs=clips,
        data_samples=[ActionDataSample().set_gt_label(y) for y in labels])
    return model, data


def _scores_and_loss(model: torch.nn.Module, inputs: torch.Tensor,
                     samples: list) -> Tuple[torch.Tensor, torch.Tensor]:
    """What ``Recognizer2D.loss`` computes, keeping the class scores."""
    feats, kwargs = model.extract_feat(inputs, data_samples=samples)
    scores = model.cls_head(feats, **kwargs)
    return scores, model.cls_head.loss_by_feat(scores, samples)['loss_cls']


@contextlib.contextmanager
def rsa_output_dtypes(model: torch.nn.Module) -> Iterator[List[torch.dtype]]:
    """The dtypes of the outputs of the model's RSA layers, in call order,
    while the block runs."""
    dtypes: List[torch.dtype] = []
    handles = [
        m.register_forward_hook(
            lambda mod, args, out: dtypes.append(out.dtype))
        for m in model.modules() if isinstance(m, RSA)
    ]
    try:
        yield dtypes
    finally:
        for handle in handles:
            handle.remove()


def check_rsanet_step_fp16(device: str = DEVICE) -> dict:
    """The float16 checks of one training step; returns the errors."""
    model, data = synthmotion_model_and_data(device)
    batch = model.data_preprocessor(data, training=True)
    inputs, samples = batch['inputs'], batch['data_samples']
    assert inputs.device.type == device

    with torch.no_grad():
        scores32, loss32 = _scores_and_loss(model, inputs, samples)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def loss_fn():
        scores, loss = _scores_and_loss(model, inputs, samples)
        return (scores, loss), loss

    with rsa_output_dtypes(model) as dtypes:
        (scores16,
         loss16), grads16, _, skipped = scaled_step(model, loss_fn, device)
    # the backbone's four RSA layers ran in float16
    assert dtypes[-4:] == [FP16] * 4
    assert torch.isfinite(scores16).all()
    assert set(grads16) == {n for n, _ in model.named_parameters()}
    after = dict(model.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    assert any(not torch.equal(after[n], before[n]) for n in before)
    return dict(
        skipped=skipped,
        scores=_rel_err(scores16, scores32),
        loss=abs(loss16.item() - loss32.item()) / loss32.item())


def test_rsanet_training_step_fp16_autocast_with_grad_scaler(ieee_fp32):
    errors = check_rsanet_step_fp16()
    assert errors['skipped'] <= MAX_SKIPPED_STEPS
    assert errors['scores'] < MODEL_SCORE_TOL
    assert errors['loss'] < MODEL_LOSS_TOL


def test_rsanet_trains_with_amp_optim_wrapper():
    """``tools/train.py --amp`` on a GPU: ``AmpOptimWrapper`` with a dynamic
    loss scale around the model's own ``train_step``."""
    model, data = synthmotion_model_and_data(DEVICE)
    cfg = Config.fromfile(str(RSANET_CONFIG))
    optim_cfg = cfg.optim_wrapper
    optim_cfg.type = 'AmpOptimWrapper'
    optim_cfg.loss_scale = 'dynamic'
    optim_wrapper = build_optim_wrapper(model, optim_cfg)
    assert optim_wrapper.cast_dtype in (None, FP16)  # autocast's default
    losses = []
    with rsa_output_dtypes(model) as dtypes:
        for _ in range(3):
            log_vars = model.train_step(data, optim_wrapper)
            losses.append(log_vars['loss'].item())
    assert dtypes == [FP16] * 12  # 4 RSA layers, 3 steps
    assert all(np.isfinite(losses))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert optim_wrapper.loss_scaler.get_scale() >= 2.**(16 -
                                                         MAX_SKIPPED_STEPS)
