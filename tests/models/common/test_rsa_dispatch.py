# Copyright (c) mmrsa contributors. All rights reserved.
"""The RSA layer's implementations (``select_path``), each forced on CPU.

- ``cpu_loops``, ``cpu_bmm`` and ``plain`` (the CUDA path: grouped
  ``conv3d`` + ``bmm``) compute the same outputs and gradients, equal to the
  literal Eq. 8;
- the CPU-specific primitives run on the CPU paths only;
- the fused Triton kernel, run by Triton's interpreter on CPU tensors,
  computes what ``bmm`` computes, forward and backward;
- the policy: CUDA defaults to ``plain`` even where the fused kernel could
  run; ``fused`` is opt-in (the layer's ``path``, ``MMRSA_RSA_PATH``), never
  taken while tracing or compiling, and a kernel that fails falls back to
  the plain result with one warning.
"""
import itertools
import types
import warnings

import pytest
import torch

from mmrsa.models.common import RSA
from mmrsa.models.common import rsa as rsa_module
from mmrsa.models.common import rsa_native, rsa_reference, rsa_triton
from mmrsa.models.common.rsa import PATHS, force_path, select_path
from mmrsa.models.common.rsa_ops import channel_conv3d, grouped_channel_conv3d

TYPES = ('V', 'R', 'VR')
TORCH_PATHS = ('cpu_loops', 'cpu_bmm', 'plain')


@pytest.fixture(autouse=True)
def fresh_policy(monkeypatch):
    """No path from the environment, no kernel failure and no warning
    recorded yet (the process-wide state of the fallback)."""
    monkeypatch.delenv(rsa_module.PATH_ENV, raising=False)
    monkeypatch.setattr(rsa_triton, '_failure', None)
    monkeypatch.setattr(rsa_triton, '_warned', set())


def _fake_cuda(dtype=torch.float32):
    """What select_path reads of a CUDA tensor: its device and dtype."""
    return types.SimpleNamespace(device=torch.device('cuda'), dtype=dtype)


@pytest.fixture
def triton_on_cuda(monkeypatch):
    """The fused kernel available on (fake) CUDA: Triton "imports" and no
    interpreter."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    monkeypatch.delenv(rsa_triton.DISABLE_ENV, raising=False)
    monkeypatch.setattr(rsa_triton, '_load_triton', lambda: True)
    assert rsa_triton.fused_available(torch.device('cuda'))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _make(channels, dtype=torch.float64, seed=0, **kwargs) -> RSA:
    """A layer whose parameters are all moved off their initial values."""
    torch.manual_seed(seed)
    layer = RSA(channels, **kwargs).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=dtype))
    return layer


def _run(layer: RSA, x: torch.Tensor, path: str):
    """Output and the gradients of input and parameters through ``path``,
    for a fixed, non-uniform output gradient."""
    with force_path(path):
        out = layer(x)
        grad = torch.linspace(
            -1, 1, out.numel(), dtype=out.dtype, device=out.device)
        grads = torch.autograd.grad(out, (x, ) + tuple(layer.parameters()),
                                    grad.view_as(out))
    return out, grads


# --------------------------------------------------------------------- #
# choosing a path
# --------------------------------------------------------------------- #
def _cpu_auto() -> str:
    """The automatic CPU path of a float32 layer with Cq = D = 8."""
    return 'cpu_native' if rsa_native.native_available() else 'cpu_loops'


def test_select_path_by_device(monkeypatch):
    cpu, meta = torch.zeros(1), torch.zeros(1, device='meta')
    # float32 with the native library: its products, whatever the sizes
    native = rsa_native.native_available()
    assert select_path(cpu, (8, 8, 8),
                       True) == ('cpu_native' if native else 'cpu_loops')
    # the PyTorch paths by matrix size: without the library, in float64,
    # without a relational kernel
    with rsa_native.disabled():
        assert select_path(cpu, (8, 8, 8), True) == 'cpu_loops'
        assert select_path(cpu, (8, 32, 32), True) == 'cpu_bmm'
    assert select_path(cpu.double(), (8, 8, 8), True) == 'cpu_loops'
    assert select_path(cpu.double(), (8, 32, 32), True) == 'cpu_bmm'
    assert select_path(cpu, (8, 8, 8), False) == 'cpu_loops'
    monkeypatch.setattr(rsa_triton, 'fused_available', lambda device: False)
    assert select_path(meta, (8, 8, 8), True) == 'plain'
    # with a fused kernel for the device: still plain unless asked for;
    # asked for, fused where the layer has the four operands, plain
    # otherwise and for dtypes the kernel lacks
    monkeypatch.setattr(rsa_triton, 'fused_available', lambda device: True)
    assert select_path(meta, (8, 8, 8), True) == 'plain'
    assert select_path(meta, (8, 8, 8), True, 'fused') == 'fused'
    assert select_path(meta, (8, 8, 8), False, 'fused') == 'plain'
    assert select_path(meta.double(), (8, 8, 8), True, 'fused') == 'plain'
    # the CPU never picks the fused kernel by itself
    assert select_path(cpu, (8, 8, 8),
                       True) == ('cpu_native' if native else 'cpu_loops')


def test_cuda_default_is_plain_even_with_fused_available(triton_on_cuda):
    """The fused kernel has not been measured on a GPU: CUDA runs plain
    unless the layer or the environment asks for fused."""
    for dtype in rsa_triton.FUSED_DTYPES:
        x = _fake_cuda(dtype)
        assert select_path(x, (8, 8, 8), True) == 'plain'
        assert select_path(x, (8, 8, 8), True, 'auto') == 'plain'
        assert select_path(x, (8, 8, 8), True, 'plain') == 'plain'
        assert select_path(x, (8, 8, 8), True, 'fused') == 'fused'


def test_path_from_environment(monkeypatch, triton_on_cuda):
    x = _fake_cuda()
    monkeypatch.setenv(rsa_module.PATH_ENV, 'fused')
    assert select_path(x, (8, 8, 8), True) == 'fused'
    assert select_path(x, (8, 8, 8), False) == 'plain'
    # the layer's own choice wins over the environment
    assert select_path(x, (8, 8, 8), True, 'plain') == 'plain'
    monkeypatch.setenv(rsa_module.PATH_ENV, 'plain')
    assert select_path(x, (8, 8, 8), True) == 'plain'
    assert select_path(x, (8, 8, 8), True, 'fused') == 'fused'
    assert select_path(torch.zeros(1), (8, 8, 8), True) == 'plain'
    monkeypatch.setenv(rsa_module.PATH_ENV, '')  # empty: unset
    assert select_path(x, (8, 8, 8), True) == 'plain'
    monkeypatch.setenv(rsa_module.PATH_ENV, 'triton')
    with pytest.raises(ValueError, match="MMRSA_RSA_PATH='triton'.*'fused'"):
        select_path(x, (8, 8, 8), True)


def test_path_argument_is_checked():
    with pytest.raises(ValueError, match=r"path='cpu_loops'.*\('auto'"):
        RSA(16, num_queries=2, path='cpu_loops')
    with pytest.raises(ValueError, match="path=None"):
        RSA(16, num_queries=2, path=None)
    with pytest.raises(ValueError, match="path='Fused'"):
        select_path(torch.zeros(1), (8, 8, 8), True, 'Fused')
    layer = RSA(16, num_queries=2, path='fused')
    assert layer.path == 'fused' and "path='fused'" in repr(layer)
    assert RSA(16, num_queries=2).path == 'auto'


def test_tracing_and_compiling_get_plain_on_cuda(monkeypatch, triton_on_cuda):
    """Asked for by the layer or the environment, the fused kernel is still
    not taken while tracing (ONNX export) or compiling; the environment is
    not read then."""
    x = _fake_cuda()
    assert select_path(x, (8, 8, 8), True, 'fused') == 'fused'
    for name, module in (('is_tracing', torch.jit), ('is_compiling',
                                                     torch.compiler)):
        with monkeypatch.context() as patch:
            patch.setattr(module, name, lambda: True)
            assert select_path(x, (8, 8, 8), True, 'fused') == 'plain'
            patch.setenv(rsa_module.PATH_ENV, 'fused')
            assert select_path(x, (8, 8, 8), True) == 'plain'
            patch.setenv(rsa_module.PATH_ENV, 'not-read')
            assert select_path(x, (8, 8, 8), True) == 'plain'


def test_fused_unavailable_warns_once(monkeypatch):
    """Asked for where it cannot run (here: the CPU without Triton's
    interpreter): the automatic path, and one warning per process."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    cpu = torch.zeros(1)
    with pytest.warns(RuntimeWarning, match='cannot run on cpu'):
        assert select_path(cpu, (8, 8, 8), True, 'fused') == 'cpu_loops'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert select_path(cpu, (8, 32, 32), True, 'fused') == 'cpu_bmm'
        # a layer the kernel does not apply to takes plain silently
        assert select_path(cpu, (8, 8, 8), False, 'fused') == 'cpu_loops'


def test_half_precision_on_cpu_takes_bmm():
    """The loops would sum float32 copies; bmm sums bf16 in float32."""
    cpu = torch.zeros(1)
    with rsa_native.disabled():  # float32: the loops by size
        assert select_path(cpu, (8, 16, 16), True) == 'cpu_loops'
    assert select_path(cpu.bfloat16(), (8, 16, 16), True) == 'cpu_bmm'
    assert select_path(cpu.half(), (8, 8, 8), True) == 'cpu_bmm'
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert select_path(cpu, (8, 8, 8), True) == 'cpu_bmm'
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=False):
        assert select_path(cpu, (8, 8, 8), True) == _cpu_auto()


@pytest.mark.parametrize('filters', [8, 16])  # float32 / bf16 kernels
def test_half_weight_gradient_is_the_float32_one_rounded(filters):
    """bfloat16 inputs: the weight gradient of every bank (computed in
    float32 below 16 filters, where oneDNN's bf16 kernel is slow) is the
    float32 gradient of the same bf16 values, rounded once."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 4, 9, 9).bfloat16()
    weight = torch.randn(4, filters, 3, 5, 5).bfloat16().requires_grad_()
    out = channel_conv3d(x, weight, (1, 2, 2))
    grad = torch.randn(out.shape).bfloat16()
    (got, ) = torch.autograd.grad(out, weight, grad)
    assert got.dtype == torch.bfloat16
    # bank g filters channel g: [N, 1, T, H, W] rows, [O, 1, k...] filters
    want = torch.stack([
        torch.ops.aten.convolution_backward(grad[:, g].float(),
                                            x[:, g:g + 1].float(),
                                            weight[g].unsqueeze(1).float(),
                                            None, [1, 1, 1], [1, 2, 2],
                                            [1, 1, 1], False, [0, 0, 0], 1,
                                            [False, True, False])[1].squeeze(1)
        for g in range(4)
    ])
    assert _rel_err(got.float(), want) <= 2**-8


def test_force_path_overrides_and_restores():
    cpu = torch.zeros(1)
    with force_path('plain'):
        assert select_path(cpu, (8, 8, 8), True) == 'plain'
        with force_path('cpu_bmm'):
            assert select_path(cpu, (8, 8, 8), True) == 'cpu_bmm'
        with force_path(None):
            assert select_path(cpu, (8, 8, 8), True) == _cpu_auto()
        assert select_path(cpu, (8, 8, 8), True) == 'plain'
    assert select_path(cpu, (8, 8, 8), True) == _cpu_auto()


def test_force_path_rejects_what_cannot_run(monkeypatch):
    with pytest.raises(ValueError, match='not an RSA path'):
        with force_path('cuda'):
            pass
    meta = torch.zeros(1, device='meta')
    with force_path('cpu_loops'), pytest.raises(ValueError, match='CPU only'):
        select_path(meta, (8, 8, 8), True)
    monkeypatch.setattr(rsa_triton, 'fused_available', lambda device: True)
    with force_path('fused'), pytest.raises(
            ValueError, match='relational kernel'):
        select_path(torch.zeros(1), (8, 8, 8), False)
    monkeypatch.setattr(rsa_triton, 'fused_available', lambda device: False)
    with force_path('fused'), pytest.raises(ValueError, match='Triton'):
        select_path(torch.zeros(1), (8, 8, 8), True)
    assert set(PATHS) == set(TORCH_PATHS) | {'fused', 'cpu_native'}


def test_fused_available(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    monkeypatch.delenv(rsa_triton.DISABLE_ENV, raising=False)
    assert not rsa_triton.fused_available(torch.device('cpu'))
    monkeypatch.setattr(rsa_triton, '_load_triton', lambda: False)
    assert not rsa_triton.fused_available(torch.device('cuda'))
    monkeypatch.setattr(rsa_triton, '_load_triton', lambda: True)
    assert rsa_triton.fused_available(torch.device('cuda'))
    monkeypatch.setenv(rsa_triton.DISABLE_ENV, '1')
    assert not rsa_triton.fused_available(torch.device('cuda'))
    monkeypatch.delenv(rsa_triton.DISABLE_ENV)
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    assert rsa_triton.fused_available(torch.device('cpu'))


# --------------------------------------------------------------------- #
# every path computes the same thing
# --------------------------------------------------------------------- #
@pytest.mark.parametrize('kernel_type,context_type',
                         list(itertools.product(TYPES, TYPES)))
def test_paths_match_reference_and_each_other(kernel_type, context_type):
    layer = _make(
        16,
        num_queries=2,
        latent_dim=3,
        corr_groups=4,
        kernel_size=(3, 3, 5),
        kernel_type=kernel_type,
        context_type=context_type)
    x = torch.randn(2, 16, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    expected = rsa_reference(layer, x)
    results = {path: _run(layer, x, path) for path in TORCH_PATHS}
    for path, (out, _) in results.items():
        assert out.shape == expected.shape
        assert _rel_err(out, expected) <= 1e-10, path
    _, base = results['cpu_loops']
    for path, (_, grads) in results.items():
        for name, g, e in zip(['x'] + [n for n, _ in layer.named_parameters()],
                              grads, base):
            assert g.shape == e.shape
            assert _rel_err(g, e) <= 1e-10, (path, name)


@pytest.mark.parametrize('channels', [64, 256])  # Cq = 8 (loops), 32 (bmm)
def test_paths_agree_in_float32_with_stride(channels):
    layer = _make(channels, dtype=torch.float32, stride=2)
    x = torch.randn(2, channels, 4, 9, 8, requires_grad=True)
    results = {path: _run(layer, x, path) for path in TORCH_PATHS}
    out, grads = results['cpu_loops']
    assert out.shape == (2, channels, 4, 5, 4)
    for path in ('cpu_bmm', 'plain'):
        assert _rel_err(results[path][0], out) <= 1e-5, path
        for g, e in zip(results[path][1], grads):
            assert _rel_err(g, e) <= 1e-5, path


def test_plain_path_uses_no_cpu_primitive(monkeypatch):
    """The CUDA path must not reach the CPU-specific primitives (and the
    CPU paths not the grouped convolution)."""

    def refuse(*args, **kwargs):
        raise AssertionError('CPU primitive on the plain path')

    layer = _make(32, dtype=torch.float32)
    x = torch.randn(1, 32, 3, 5, 5, requires_grad=True)
    expected, expected_grads = _run(layer, x, 'cpu_loops')
    with monkeypatch.context() as patch:
        for name in ('channel_conv3d', 'per_position_matmul',
                     'contiguous_grad'):
            patch.setattr(rsa_module, name, refuse)
        out, grads = _run(layer, x, 'plain')
    assert _rel_err(out, expected) <= 1e-5
    for g, e in zip(grads, expected_grads):
        assert _rel_err(g, e) <= 1e-5

    def refuse_grouped(*args, **kwargs):
        raise AssertionError('grouped convolution on a CPU path')

    monkeypatch.setattr(rsa_module, 'grouped_channel_conv3d', refuse_grouped)
    for path in ('cpu_loops', 'cpu_bmm'):
        assert _rel_err(_run(layer, x, path)[0], expected) <= 1e-5


@pytest.mark.parametrize('n,c,banks', [(2, 4, 4), (1, 6, 1), (2, 6, 3)])
def test_grouped_channel_conv3d_matches_channel_conv3d(n, c, banks):
    x = torch.randn(n, c, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(
        banks, 3, 3, 5, 3, dtype=torch.float64, requires_grad=True)
    out = grouped_channel_conv3d(x, weight, (1, 2, 1))
    assert out.shape == (n, 4, 6, 5, c, 3)
    # [N, C, O, T, H, W] -> [N, T, H, W, C, O]
    expected = channel_conv3d(x, weight, (1, 2, 1)).permute(0, 3, 4, 5, 1, 2)
    assert _rel_err(out, expected) <= 1e-12
    grad = torch.randn_like(out)
    for g, e in zip(
            torch.autograd.grad(out, (x, weight), grad),
            torch.autograd.grad(expected, (x, weight), grad)):
        assert _rel_err(g, e) <= 1e-12


def test_grouped_channel_conv3d_rejects_bad_shapes():
    with pytest.raises(ValueError, match='banks dividing C'):
        grouped_channel_conv3d(
            torch.zeros(1, 6, 2, 3, 3), torch.zeros(4, 2, 1, 3, 3), (0, 1, 1))


# --------------------------------------------------------------------- #
# the fused Triton kernel, through Triton's interpreter
# --------------------------------------------------------------------- #
@pytest.fixture
def interpreter(monkeypatch):
    """Triton's interpreter on: the kernels run on CPU tensors. Skipped
    only where Triton is not installed (requirements/tests.txt installs it);
    an installed Triton that does not import or run fails the test."""
    from importlib import metadata
    try:
        metadata.version('triton')
    except metadata.PackageNotFoundError:
        pytest.skip('Triton is not installed')
    import triton  # noqa: F401  (installed: it must import)
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    monkeypatch.delenv(rsa_triton.DISABLE_ENV, raising=False)
    assert rsa_triton.fused_available(torch.device('cpu'))


def _operands(num_pos, num_queries, query_channels, dim, dtype, seed=0):
    """q, key, g, h as the layer hands them over: key and g transposed
    views, h a slice of a wider tensor."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    q = randn(num_pos, num_queries, query_channels)
    key = randn(query_channels, num_pos, dim).transpose(0, 1)
    g = randn(num_pos, query_channels, query_channels).transpose(1, 2)
    h = randn(num_pos, query_channels, dim + query_channels)[..., :dim]
    return q, key, g, h


@pytest.mark.parametrize('sizes', [(37, 8, 8, 8), (20, 3, 5, 6),
                                   (9, 8, 32, 32), (3, 8, 64, 64)])
def test_fused_products_match_bmm(interpreter, sizes):
    operands = _operands(*sizes, dtype=torch.float32)
    leaves = [t.detach().requires_grad_() for t in operands]
    exact = [t.detach().double().requires_grad_() for t in operands]
    out = rsa_triton.fused_per_position_products(*leaves)
    q, key, g, h = exact
    expected = torch.bmm(torch.bmm(g, h), torch.bmm(q, key).transpose(1, 2))
    assert out.shape == expected.shape and out.dtype == torch.float32
    assert _rel_err(out, expected) <= 1e-6
    grad = torch.randn(out.shape)
    for got, want in zip(
            torch.autograd.grad(out, leaves, grad),
            torch.autograd.grad(expected, exact, grad.double())):
        assert got.shape == want.shape
        assert _rel_err(got, want) <= 1e-6


@pytest.mark.parametrize('sizes', [(40, 8, 8, 8), (6, 8, 32, 16)])
def test_fused_products_float16(interpreter, sizes):
    """Half-precision operands, summed in float32, rounded to half between
    the products (as the bmm path rounds). (bfloat16 is left out: the
    interpreter computes it wrongly.)"""
    operands = _operands(*sizes, dtype=torch.float16)
    leaves = [t.detach().requires_grad_() for t in operands]
    exact = [t.detach().double().requires_grad_() for t in operands]
    out = rsa_triton.fused_per_position_products(*leaves)
    q, key, g, h = exact
    expected = torch.bmm(torch.bmm(g, h), torch.bmm(q, key).transpose(1, 2))
    assert out.dtype == torch.float16
    assert _rel_err(out, expected) <= 2e-3
    grad = torch.randn(out.shape).half()
    for got, want in zip(
            torch.autograd.grad(out, leaves, grad),
            torch.autograd.grad(expected, exact, grad.double())):
        assert got.dtype == torch.float16
        assert _rel_err(got, want) <= 2e-3


def test_fused_products_check_shapes(interpreter):
    q, key, g, h = _operands(5, 2, 4, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match=r'q \[P, L, Cq\]'):
        rsa_triton.fused_per_position_products(q, key, g, h[:, :3])
    with pytest.raises(ValueError, match='takes'):
        rsa_triton.fused_per_position_products(q.double(), key, g, h)


@pytest.mark.parametrize('kernel_type,context_type', [('VR', 'VR'), ('R', 'R'),
                                                      ('VR', 'R')])
def test_fused_path_matches_plain(interpreter, kernel_type, context_type):
    """The layer through the fused kernel, against its bmm path, output
    and every gradient (float32; 'R' context: g without I, strided)."""
    layer = _make(
        32,
        dtype=torch.float32,
        num_queries=4,
        kernel_size=(3, 3, 3),
        kernel_type=kernel_type,
        context_type=context_type)
    x = torch.randn(2, 32, 3, 5, 4, requires_grad=True)
    out, grads = _run(layer, x, 'fused')
    expected, expected_grads = _run(layer, x, 'plain')
    assert _rel_err(out, expected) <= 1e-5
    for g, e in zip(grads, expected_grads):
        assert _rel_err(g, e) <= 1e-5


def test_fused_path_saves_fewer_bytes(interpreter):
    """Only the four operands are kept for backward, not the kernel and
    context the bmm path keeps."""
    from mmrsa.utils.memory import saved_bytes
    layer = _make(64, dtype=torch.float32)
    x = torch.randn(1, 64, 2, 6, 6, requires_grad=True)

    def forward(path):

        def run():
            with force_path(path):
                return layer(x).sum()

        return run

    num_pos, cq, nq, dim = 2 * 6 * 6, 8, 8, 8
    intermediates = num_pos * (nq * dim + cq * dim) * 4
    assert saved_bytes(forward('plain')) - saved_bytes(
        forward('fused')) == intermediates


class _BrokenKernel:
    """A Triton kernel that fails at launch (as a compile error would)."""

    def __getitem__(self, grid):

        def launch(*args, **kwargs):
            raise RuntimeError('PTX compilation failed (test)')

        return launch


def _spy_paths(monkeypatch) -> list:
    """The paths select_path hands to the layers from now on."""
    chosen, select = [], rsa_module.select_path

    def spy(*args, **kwargs):
        chosen.append(select(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(rsa_module, 'select_path', spy)
    return chosen


def test_opt_in_runs_the_fused_kernel(interpreter, monkeypatch):
    """``path='fused'`` and ``MMRSA_RSA_PATH=fused`` reach the kernel; the
    default does not."""
    layer = _make(
        32, dtype=torch.float32, num_queries=4, kernel_size=(3, 3, 3))
    x = torch.randn(1, 32, 2, 4, 4, requires_grad=True)
    chosen = _spy_paths(monkeypatch)
    expected, expected_grads = _run(layer, x, 'plain')
    layer(x)
    monkeypatch.setenv(rsa_module.PATH_ENV, 'fused')
    layer(x)
    monkeypatch.delenv(rsa_module.PATH_ENV)
    layer.path = 'fused'
    out, grads = _run(layer, x, None)
    assert chosen == ['plain', 'cpu_loops', 'fused', 'fused']
    assert _rel_err(out, expected) <= 1e-5
    for g, e in zip(grads, expected_grads):
        assert _rel_err(g, e) <= 1e-5


def test_tracing_gets_the_automatic_path(interpreter, monkeypatch):
    """A layer that asks for fused (where the kernel can run, here the
    interpreter) is traced through the automatic path."""
    layer = _make(
        32,
        dtype=torch.float32,
        num_queries=4,
        kernel_size=(3, 3, 3),
        path='fused')
    x = torch.randn(1, 32, 2, 4, 4)
    chosen = _spy_paths(monkeypatch)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        traced = torch.jit.trace(layer, x, check_trace=False)
    assert chosen == ['cpu_loops']
    with force_path('plain'):
        expected = layer(x)
    assert _rel_err(traced(x), expected) <= 1e-5


def test_failed_kernel_falls_back_to_plain_once(interpreter, monkeypatch):
    """A kernel that fails to compile or launch: one warning, and the
    output and gradients of the plain path, bit for bit; the layers stop
    asking for the kernel."""
    layer = _make(
        32,
        dtype=torch.float32,
        num_queries=4,
        kernel_size=(3, 3, 3),
        path='fused')
    x = torch.randn(2, 32, 3, 5, 4, requires_grad=True)
    expected, expected_grads = _run(layer, x, 'plain')
    monkeypatch.setattr(rsa_triton, '_kernels', lambda interpret:
                        (_BrokenKernel(), _BrokenKernel()))
    with pytest.warns(RuntimeWarning, match='PTX compilation failed') as rec:
        out, grads = _run(layer, x, None)
    assert len(rec) == 1
    assert torch.equal(out, expected)
    for g, e in zip(grads, expected_grads):
        assert torch.equal(g, e)
    assert rsa_triton.fused_failure() == (
        'RuntimeError: PTX compilation failed (test)')
    chosen = _spy_paths(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out, _ = _run(layer, x, None)
    assert chosen == ['cpu_loops'] and _rel_err(out, expected) <= 1e-5


def test_failed_backward_kernel_falls_back(interpreter, monkeypatch):
    """The forward kernel ran, the backward one fails: the gradients come
    from bmm, with one warning."""
    layer = _make(
        32,
        dtype=torch.float32,
        num_queries=4,
        kernel_size=(3, 3, 3),
        path='fused')
    x = torch.randn(2, 32, 3, 5, 4, requires_grad=True)
    expected, expected_grads = _run(layer, x, 'plain')
    forward_kernel = rsa_triton._kernels(True)[0]
    monkeypatch.setattr(rsa_triton, '_kernels', lambda interpret:
                        (forward_kernel, _BrokenKernel()))
    with pytest.warns(RuntimeWarning, match='fused Triton kernel failed'):
        out, grads = _run(layer, x, None)
    assert _rel_err(out, expected) <= 1e-5
    for g, e in zip(grads, expected_grads):
        assert _rel_err(g, e) <= 1e-5
    assert rsa_triton.fused_failure() is not None


def test_forced_fused_never_falls_back(interpreter, monkeypatch):
    """Tests and benchmarks force a path to measure it: its failure must
    show."""
    layer = _make(
        32, dtype=torch.float32, num_queries=4, kernel_size=(3, 3, 3))
    x = torch.randn(1, 32, 2, 4, 4)
    monkeypatch.setattr(rsa_triton, '_kernels', lambda interpret:
                        (_BrokenKernel(), _BrokenKernel()))
    with force_path('fused'), pytest.raises(RuntimeError, match='PTX'):
        layer(x)
    assert rsa_triton.fused_failure() is None


def test_out_of_memory_is_not_a_kernel_failure(interpreter, monkeypatch):

    class OutOfMemory:

        def __getitem__(self, grid):

            def launch(*args, **kwargs):
                raise torch.cuda.OutOfMemoryError('out of memory (test)')

            return launch

    layer = _make(
        32,
        dtype=torch.float32,
        num_queries=4,
        kernel_size=(3, 3, 3),
        path='fused')
    monkeypatch.setattr(rsa_triton, '_kernels', lambda interpret:
                        (OutOfMemory(), OutOfMemory()))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        layer(torch.randn(1, 32, 2, 4, 4))
    assert rsa_triton.fused_failure() is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('amp', [False, True])
def test_cuda_fused_matches_plain(amp):
    """On CUDA with Triton: the automatic path is plain, the fused kernel
    is taken when asked for, and it computes what the cuDNN/cuBLAS path
    computes (float32, float16 AMP)."""
    pytest.importorskip('triton', reason='Triton is not installed')
    layer = _make(64, dtype=torch.float32).cuda()
    x = torch.randn(2, 64, 4, 9, 8, device='cuda', requires_grad=True)
    sizes = (layer.num_queries, layer.query_channels, layer.latent_dim)
    assert select_path(x, sizes, True) == 'plain'
    assert select_path(x, sizes, True, 'fused') == 'fused'
    results = {}
    for path in ('fused', 'plain'):
        with torch.autocast('cuda', dtype=torch.float16, enabled=amp):
            results[path] = _run(layer, x, path)
    (out, grads), (expected, expected_grads) = results['fused'], \
        results['plain']
    tol = 2e-2 if amp else 1e-5
    assert _rel_err(out.float(), expected.float()) <= tol
    for g, e in zip(grads, expected_grads):
        assert _rel_err(g.float(), e.float()) <= tol
