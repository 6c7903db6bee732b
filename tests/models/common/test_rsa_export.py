# Copyright (c) mmrsa contributors. All rights reserved.
"""The RSA layer under the graph capturers: torch.jit.trace, torch.export and
both ONNX exporters (TorchScript-based ``dynamo=False``, as mmdeploy calls
it, and ``torch.export``-based), checked with onnxruntime."""
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from mmrsa.models.common import RSA
from mmrsa.models.common.rsa_ops import channel_conv3d

#: (channels, num_queries): Cq = 8 takes the CPU position-loop path,
#: Cq = 32 the CPU bmm path (channel-last single-channel convolutions).
SIZES = [
    pytest.param(64, 8, 1, id='Cq8-loops'),
    pytest.param(256, 8, 1, id='Cq32-bmm'),
    pytest.param(64, 8, 2, id='Cq8-stride2')
]


def _layer(channels: int, num_queries: int, stride: int) -> RSA:
    torch.manual_seed(0)
    layer = RSA(
        channels,
        kernel_size=(3, 3, 3),
        num_queries=num_queries,
        stride=stride).eval()
    with torch.no_grad():  # no zero-initialised parameter left
        for p in layer.parameters():
            p.normal_(0, 0.2)
    return layer


def _inputs(channels: int, *batches: int):
    generator = torch.Generator().manual_seed(1)
    return [
        torch.randn(n, channels, 4, 6, 6, generator=generator) for n in batches
    ]


def _export_legacy(layer: RSA, x: torch.Tensor, path: str) -> None:
    """Export with the TorchScript-based exporter, the batch dynamic."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        torch.onnx.export(
            layer, (x, ),
            path,
            dynamo=False,
            input_names=['x'],
            output_names=['y'],
            dynamic_axes={
                'x': {
                    0: 'n'
                },
                'y': {
                    0: 'n'
                }
            },
            opset_version=17)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('banks', [1, 4])
def test_traced_channel_conv3d_equals_eager(channels_last, banks):
    x, x3 = _inputs(8, 2, 3)
    weight = torch.randn(banks, 5, 3, 3, 3)

    def conv(inp):
        return channel_conv3d(inp, weight, (1, 1, 1), channels_last)

    with warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        traced = torch.jit.trace(conv, (x, ))
    for inp in (x, x3):
        torch.testing.assert_close(traced(inp), conv(inp), rtol=0, atol=1e-5)
    assert 'empty_strided' not in str(traced.graph)


@pytest.mark.parametrize('channels,num_queries,stride', SIZES)
def test_jit_trace_and_torch_export_parity(channels, num_queries, stride):
    layer = _layer(channels, num_queries, stride)
    x, x3 = _inputs(channels, 2, 3)
    with torch.no_grad():
        expected, expected3 = layer(x), layer(x3)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            traced = torch.jit.trace(layer, (x, ))
        torch.testing.assert_close(traced(x), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(traced(x3), expected3, rtol=0, atol=1e-5)
        program = torch.export.export(
            layer, (x, ),
            dynamic_shapes=({
                0: torch.export.Dim('batch', min=1)
            }, ))
        exported = program.module()
        torch.testing.assert_close(exported(x), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(exported(x3), expected3, rtol=0, atol=1e-5)


@pytest.mark.parametrize('channels,num_queries,stride', SIZES)
def test_legacy_onnx_export(channels, num_queries, stride, tmp_path):
    """The TorchScript-based exporter (dynamo=False) used to stop at
    ``aten::empty_strided`` on the bmm path."""
    layer = _layer(channels, num_queries, stride)
    x, x3 = _inputs(channels, 2, 3)
    path = str(tmp_path / 'rsa.onnx')
    _export_legacy(layer, x, path)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for inp in (x, x3):
        with torch.no_grad():
            expected = layer(inp).numpy()
        (got, ) = session.run(None, {'x': inp.numpy()})
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4


def test_dynamo_onnx_export(tmp_path):
    layer = _layer(256, 8, 1)  # the bmm path
    x, x3 = _inputs(256, 2, 3)
    path = str(tmp_path / 'rsa.onnx')
    with torch.no_grad():
        torch.onnx.export(
            layer, (x, ),
            dynamo=True,
            input_names=['x'],
            output_names=['y'],
            dynamic_shapes=({
                0: torch.export.Dim('batch', min=1)
            }, ),
            verbose=False).save(path)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for inp in (x, x3):
        with torch.no_grad():
            expected = layer(inp).numpy()
        (got, ) = session.run(None, {'x': inp.numpy()})
        assert np.abs(got - expected).max() < 1e-4


def test_eager_batch_layout_is_kept():
    """Only tracing takes the plain-op branch of the one-channel batch: the
    eager path keeps the channels-last strides its convolutions are fast
    with, and both branches hold the same values."""
    from mmrsa.models.common.rsa_ops import _conv_batch
    (x, ) = _inputs(8, 2)
    n, c, t, h, w = x.shape
    eager = _conv_batch(x, channels_last=True)
    assert eager.stride() == (t * h * w, 1, h * w, w, 1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        traced = torch.jit.trace(lambda inp: _conv_batch(inp, True), (x, ))
    assert torch.equal(traced(x), eager)


# --------------------------------------------------------------------------
# the exported form (what onnxruntime runs) and the grouped H1 forward
# --------------------------------------------------------------------------
@pytest.mark.parametrize('banks', [1, 2, 8])
@pytest.mark.parametrize('kernel', [(3, 3, 3), (1, 3, 5), (5, 1, 1)])
def test_export_channel_conv3d_equals_channel_conv3d(banks, kernel):
    """Temporal taps as 2D input channels (one bank) and one grouped
    conv3d (several banks): the values of channel_conv3d, positions
    first."""
    from mmrsa.models.common.rsa_ops import export_channel_conv3d
    x = torch.randn(2, 8, 4, 6, 5)
    weight = torch.randn(banks, 3, *kernel)
    padding = tuple(k // 2 for k in kernel)
    expected = channel_conv3d(x, weight, padding)  # [N, C, O, T, H, W]
    expected = expected.permute(0, 3, 4, 5, 1, 2).reshape(-1, 8, 3)
    got = export_channel_conv3d(x, weight, padding)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # a bias [C, O] on every position, and the filters in two parts
    bias = torch.randn(8, 3)
    got = export_channel_conv3d(x, weight, padding, bias, sizes=(1, 2))
    assert [part.shape for part in got] == [(2 * 4 * 6 * 5, 8, 1),
                                            (2 * 4 * 6 * 5, 8, 2)]
    torch.testing.assert_close(
        torch.cat(got, dim=2), expected + bias, rtol=0, atol=1e-5)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('banks', [4, 16])
def test_grouped_inference_equals_bank_loop(channels_last, banks):
    """Without gradients, banks of 16 filters run as one grouped conv2d over
    temporal taps: the values of the bank-by-bank convolutions (what
    training runs)."""
    x = torch.randn(2, 16, 4, 6, 5)
    weight = torch.randn(banks, 16, 3, 3, 3)
    with torch.no_grad():
        grouped = channel_conv3d(x, weight, (1, 1, 1), channels_last)
    loop = channel_conv3d(x, weight.requires_grad_(), (1, 1, 1), channels_last)
    assert loop.grad_fn is not None and grouped.grad_fn is None
    torch.testing.assert_close(grouped, loop.detach(), rtol=0, atol=1e-5)


@pytest.mark.parametrize('banks,kernel', [(16, (3, 3, 3)), (4, (5, 7, 7)),
                                          (16, (1, 3, 5))])
def test_taps_conv_is_the_channel_conv_positions_first(banks, kernel):
    """taps_channel_conv: contiguous [N*THW, C, O], the values of the bank
    loop, channel c filtered by bank c // (C / banks)."""
    from mmrsa.models.common.rsa_ops import taps_channel_conv, use_taps_conv
    x = torch.randn(2, 16, 5, 6, 7)
    weight = torch.randn(banks, 16, *kernel)
    padding = tuple(k // 2 for k in kernel)
    expected = channel_conv3d(x, weight.requires_grad_(), padding)
    # [N, C, O, T, H, W] -> [N*THW, C, O]
    expected = expected.detach().permute(0, 3, 4, 5, 1, 2).reshape(-1, 16, 16)
    with torch.no_grad():
        assert use_taps_conv(x, weight)
        got = taps_channel_conv(x, weight, padding)
    assert got.is_contiguous()
    # float32 sums of up to 245 products in another order
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # training (a weight to differentiate) keeps the bank loop
    assert not use_taps_conv(x, weight)


@pytest.mark.parametrize('frames', [1, 2, 5])
@pytest.mark.parametrize('banks,kernel', [(4, (5, 3, 3)), (1, (3, 3, 5)),
                                          (4, (7, 1, 3))])
def test_taps_conv_gradients(frames, banks, kernel):
    """taps_channel_conv differentiated (its temporal taps have their own
    backward pass): in float64 the input and weight gradients of the bank
    loop, clips shorter than the kernel included; in bfloat16 (as under
    autocast with AMX) close to them."""
    from mmrsa.models.common.rsa_ops import taps_channel_conv
    torch.manual_seed(0)
    x = torch.randn(2, 4, frames, 5, 6, dtype=torch.float64)
    weight = torch.randn(banks, 3, *kernel, dtype=torch.float64)
    padding = tuple(k // 2 for k in kernel)
    x.requires_grad_()
    weight.requires_grad_()
    got = taps_channel_conv(x, weight, padding)
    # [N, C, O, T, H, W] -> [N*THW, C, O]
    want = channel_conv3d(x, weight, padding).permute(0, 3, 4, 5, 1,
                                                      2).reshape(got.shape)
    torch.testing.assert_close(got, want)
    grad = torch.randn(got.shape, dtype=torch.float64)
    got_grads = torch.autograd.grad(got, (x, weight), grad)
    want_grads = torch.autograd.grad(want, (x, weight), grad)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w)
    half = taps_channel_conv(x.bfloat16(), weight.bfloat16(), padding)
    assert half.dtype == torch.bfloat16
    (grad_x, ) = torch.autograd.grad(half, x, grad.bfloat16())
    # bf16 weights and gradient: ~2**-9 relative each
    error = (grad_x - want_grads[0]).norm() / want_grads[0].norm()
    assert error.item() <= 1e-2


@pytest.mark.parametrize('corr_groups,context_type', [(None, 'VR'), (2, 'VR'),
                                                      (None, 'V')])
def test_exported_graph_form(corr_groups, context_type, tmp_path):
    """The exported layer: one 2D convolution of the value (temporal taps
    as channels), one grouped conv3d for H1 (no convolution per bank), and
    the eager output within 1e-4."""
    import onnx
    torch.manual_seed(0)
    layer = RSA(
        64,
        kernel_size=(3, 5, 5),
        num_queries=8,
        corr_groups=corr_groups,
        context_type=context_type).eval()
    x, x3 = _inputs(64, 2, 3)
    path = str(tmp_path / 'rsa.onnx')
    _export_legacy(layer, x, path)
    graph = onnx.load(path).graph
    convs = [node for node in graph.node if node.op_type == 'Conv']
    # projection, H1, value (H2 and G)
    assert len(convs) == 3
    projection, h1, value = convs
    # P1 is H1's bias, no Add of its own
    assert len(h1.input) == 3 and len(value.input) == 2
    # with G, the value's convolution output is cut into H2 and G before
    # its transpose (onnxruntime copies contiguous parts)
    cuts = {
        node.op_type
        for node in graph.node if value.output[0] in node.input
    }
    assert cuts == ({'Slice'} if context_type == 'VR' else {'Reshape'})
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for inp in (x, x3):
        with torch.no_grad():
            expected = layer(inp).numpy()
        (got, ) = session.run(None, {'x': inp.numpy()})
        assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize('channels,corr_groups,stride', [(128, None, 1),
                                                         (256, 4, 2)])
def test_inference_rules_keep_the_training_output(channels, corr_groups,
                                                  stride):
    """Without gradients the layer takes its inference-only forms (H1 over
    temporal taps, bmm products); its output is the one the training path
    computes for the same input."""
    from mmrsa.models.common.rsa_ops import use_taps_conv
    torch.manual_seed(0)
    layer = RSA(
        channels,
        kernel_size=(5, 7, 7),
        num_queries=8,
        corr_groups=corr_groups,
        stride=stride)
    with torch.no_grad():  # no zero-initialised parameter left
        for p in layer.parameters():
            p.normal_(0, 0.2)
    layer.eval()
    (x, ) = _inputs(channels, 2)
    trained = layer(x)  # parameters require grad: the training path
    assert trained.grad_fn is not None
    with torch.no_grad():
        assert use_taps_conv(x, layer._key_filters())
        inferred = layer(x)
    torch.testing.assert_close(
        inferred, trained.detach(), rtol=1e-4, atol=1e-5)
