# Copyright (c) mmrsa contributors. All rights reserved.
"""Relational self-attention (RSA), the efficient form of Eq. 12.

Kim, Kwon, Wang, Kwak, Cho. "Relational Self-Attention: What's Missing in
Attention for Video Understanding". NeurIPS 2021.

This module imports only torch (and :mod:`.rsa_ops`, its pure-torch fast
primitives, :mod:`.rsa_native`, its optional native CPU products, and
:mod:`.rsa_triton`, its optional fused kernel). Registration
into MMAction2's registries lives in :mod:`mmrsa.models.common` (glue), not
here.
"""
import contextlib
import math
import os
from typing import Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import rsa_native, rsa_triton
from .rsa_ops import (channel_conv3d, contiguous_grad, export_channel_conv3d,
                      grouped_channel_conv3d, per_position_matmul,
                      taps_channel_conv, use_position_loops, use_taps_conv)

__all__ = [
    'RSA', 'l2_normalize', 'force_path', 'select_path', 'float32_transform',
    'amx_filters', 'PATHS', 'PATH_CHOICES', 'PATH_ENV'
]

KERNEL_TYPES = ('V', 'R', 'VR')
CONTEXT_TYPES = ('V', 'R', 'VR')
NORM_TYPES = ('l2', 'none', 'bn')

#: The layer's implementations of Eq. 12 (see :func:`select_path`).
PATHS = ('cpu_loops', 'cpu_bmm', 'cpu_native', 'plain', 'fused')

#: What a layer may ask for (its ``path`` argument, or :data:`PATH_ENV`):
#: the automatic choice, the cuDNN/cuBLAS path, or the fused Triton kernel
#: where it can run.
PATH_CHOICES = ('auto', 'plain', 'fused')

#: Environment variable with one of :data:`PATH_CHOICES`, read for the
#: layers built with ``path='auto'`` (e.g. ``MMRSA_RSA_PATH=fused``).
PATH_ENV = 'MMRSA_RSA_PATH'

#: The path :func:`force_path` set, or None (a module global, which
#: ``torch.compile`` reads as a guarded constant).
_forced_path: Optional[str] = None


def _check_path_choice(value: str, source: str) -> str:
    if value not in PATH_CHOICES:
        raise ValueError(f'{source}={value!r} is not an RSA path choice; '
                         f'choose one of {PATH_CHOICES}.')
    return value


def select_path(x: torch.Tensor,
                sizes: Sequence[int],
                fusable: bool,
                requested: str = 'auto') -> str:
    """Which implementation of Eq. 12 the layer runs on ``x``'s device: the
    one place where it dispatches on the device.

    - ``'cpu_loops'`` (CPU, every per-position matrix side at most
      :data:`~mmrsa.models.common.rsa_ops.MAX_LOOP_CONTRACTION`): positions
      last; single-channel convolutions with a hand-written backward for
      oneDNN (:func:`~mmrsa.models.common.rsa_ops.channel_conv3d`) and
      per-position products as vectorised loops
      (:func:`~mmrsa.models.common.rsa_ops.per_position_matmul`).
    - ``'cpu_bmm'`` (CPU, larger matrices): positions first, the same
      convolutions, products as ``bmm`` with a contiguous gradient.
    - ``'cpu_native'`` (CPU, float32): as ``'cpu_bmm'``, the per-position
      products and their backward pass by the native library
      (:mod:`~mmrsa.models.common.rsa_native`), in training and inference,
      for float32 outside autocast, with a relational kernel and context and
      a multiple of 8 queries, where the library is built and not switched
      off (``MMRSA_DISABLE_NATIVE=1``); a layer under CPU autocast asks
      with autocast off (:func:`float32_transform`). Where it applies it
      replaces the two above (measured faster at every RSANet-R50 stage,
      training and inference).
    - ``'plain'`` (every other device, CUDA included): positions first,
      each filter set as one grouped ``conv3d`` and the products as
      ``bmm``, with autograd's own backward: what cuDNN and cuBLAS are built
      for.
    - ``'fused'`` (opt-in): as ``'plain'``, the three per-position products
      in one Triton kernel (:mod:`~mmrsa.models.common.rsa_triton`). Taken
      only when asked for (``requested='fused'``, or :data:`PATH_ENV` set to
      ``fused`` for a layer that asks for ``'auto'``) and the kernel can run:
      Triton on CUDA (or the CPU under ``TRITON_INTERPRET=1``), a relational
      kernel and context, a float32/float16/bfloat16 input, not while
      tracing or compiling (ONNX export and ``torch.compile`` get the
      automatic path, and inductor fuses on its own), and the kernel has not
      failed in this process. Where it cannot run, the layer takes the
      automatic path (on an unsupported device or without Triton with one
      warning per process).

    The automatic choice is ``'plain'`` on CUDA: the fused kernel has run
    only in Triton's CPU interpreter so far, and it becomes the default only
    once a GPU measurement (``tools/analysis_tools/gpu_check.py``) shows it
    correct and faster. Every path computes the same multiply-adds.
    :func:`force_path` overrides everything here (for tests and benchmarks,
    which must see a path's failures: a forced ``'fused'`` never falls
    back).

    Args:
        x (torch.Tensor): A tensor of the layer (its device decides).
        sizes (Sequence[int]): The per-position matrix sides (L, Cq, D).
        fusable (bool): Whether the layer has the four operands of the fused
            kernel (relational kernel and relational context).
        requested (str): The layer's choice among :data:`PATH_CHOICES`;
            ``'auto'`` defers to :data:`PATH_ENV` (unset: the automatic
            choice). Defaults to ``'auto'``.

    Returns:
        str: One of :data:`PATHS`.
    """
    forced = _forced_path
    on_cpu = x.device.type == 'cpu'
    if forced is not None:
        if forced.startswith('cpu') and not on_cpu:
            raise ValueError(f'RSA path {forced!r} runs on the CPU only, '
                             f'the input is on {x.device}.')
        if forced == 'fused' and not (fusable and rsa_triton.fused_available(
                x.device)):
            raise ValueError(
                'RSA path \'fused\' needs a relational kernel and context '
                'and Triton on CUDA (or TRITON_INTERPRET=1 on CPU).')
        if forced == 'cpu_native' and not _native_applies(x, sizes, fusable):
            raise ValueError(
                f'RSA path \'cpu_native\' needs a relational kernel and '
                f'context, a multiple of {rsa_native.MIN_QUERIES} queries, '
                f'float32 outside autocast and the native library (it is '
                f'{rsa_native.native_status()}).')
        return forced
    _check_path_choice(requested, 'path')
    # tracers and compilers get the automatic path (inductor fuses on its
    # own) and do not read the environment
    tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
    if requested == 'auto' and not tracing:
        requested = _check_path_choice(
            os.environ.get(PATH_ENV, '') or 'auto', PATH_ENV)
    if requested == 'plain':
        return 'plain'
    if on_cpu:
        auto = 'cpu_loops' if use_position_loops(x, *sizes) else 'cpu_bmm'
        if (requested == 'auto' and not tracing
                and _native_applies(x, sizes, fusable)):
            auto = 'cpu_native'
    else:
        auto = 'plain'
    if (requested != 'fused' or tracing or not fusable
            or x.dtype not in rsa_triton.FUSED_DTYPES
            or rsa_triton.fused_failure() is not None):
        return auto
    if not rsa_triton.fused_available(x.device):
        rsa_triton.warn_once(
            'unavailable',
            f'RSA: the fused Triton kernel was asked for (path=\'fused\' or '
            f'{PATH_ENV}=fused) but cannot run on {x.device} (it needs '
            f'Triton and a CUDA device, and {rsa_triton.DISABLE_ENV} unset); '
            f'the RSA layers take their automatic path ({auto!r} here).')
        return auto
    return 'fused'


def _native_applies(x: torch.Tensor, sizes: Sequence[int],
                    fusable: bool) -> bool:
    """Whether the native CPU products (:mod:`.rsa_native`) can compute the
    layer's products for ``x``: see ``'cpu_native'`` in :func:`select_path`.
    """
    return (fusable and sizes[0] % rsa_native.MIN_QUERIES == 0
            and x.device.type == 'cpu' and x.dtype == torch.float32
            and not torch.is_autocast_enabled('cpu')
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
            and not torch.onnx.is_in_onnx_export()
            and rsa_native.native_available())


#: Half dtypes of CPU autocast that the transform does not run in.
_HALF = (torch.bfloat16, torch.float16)

#: The dtype of the single-channel filters inside a float32 transform
#: (:func:`float32_transform`), or None for float32; set while a layer runs
#: one.
_filter_dtype: Optional[torch.dtype] = None


def float32_transform(x: torch.Tensor) -> bool:
    """Whether an RSA layer, given its projection ``x``, computes the rest
    (normalisation, filters, products) with autocast off: under CPU
    autocast to a half dtype.

    The projection keeps the autocast dtype (a dense 1x1 convolution). The
    per-position products sum in float32 (the native ones read the bfloat16
    query of :meth:`RSA.attend_frames` and write bfloat16 frames; otherwise
    the projection is cast to float32). The single-channel filters run in
    float32 too, except under bfloat16 autocast where oneDNN has AMX tiles
    (:func:`amx_filters`): there they run as
    :func:`~mmrsa.models.common.rsa_ops.taps_channel_conv` in bfloat16,
    whose output the native products read as it is (``bmm`` gets it cast to
    float32). Autocast's own choice, all bfloat16, ran 1.5-4x slower at
    every RSANet-R50 stage, training and inference
    (``docs/benchmarks.md``). The layer returns the autocast dtype, as the
    convolution it stands for would.
    """
    return (x.device.type == 'cpu' and torch.is_autocast_enabled('cpu')
            and torch.get_autocast_dtype('cpu') in _HALF)


def amx_filters() -> bool:
    """Whether a float32 transform under bfloat16 autocast runs its
    single-channel filters in bfloat16 (the taps convolution), i.e. whether
    this CPU has AMX tiles: with them the filters' train step took x0.4-0.7
    the float32 time at the RSANet-R50 stages 1-3 (x0.6-1.2 at stage 4,
    where the whole layer took 3-7 % longer, one layer of seven); without
    them (AVX-512 bf16 or older) 1.8-11x the float32 time."""
    check = getattr(torch.cpu, '_is_amx_tile_supported', None)
    return bool(check is not None and check())


@contextlib.contextmanager
def _transform_in_float32() -> Iterator[None]:
    """Autocast off for a float32 transform (:func:`float32_transform`),
    the filters' dtype set for :meth:`RSA._filter_channels`."""
    global _filter_dtype
    previous = _filter_dtype
    half = (not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and torch.get_autocast_dtype('cpu') == torch.bfloat16
            and amx_filters())
    _filter_dtype = torch.bfloat16 if half else None
    try:
        with torch.autocast('cpu', enabled=False):
            yield
    finally:
        _filter_dtype = previous


@contextlib.contextmanager
def force_path(path: Optional[str]) -> Iterator[None]:
    """Run every RSA layer inside the block through ``path`` (one of
    :data:`PATHS`; ``None`` restores the automatic choice), e.g. to compare
    the implementations on one device. It holds for the whole process while
    the block runs (not per thread)."""
    global _forced_path
    if path is not None and path not in PATHS:
        raise ValueError(f'path={path!r} is not an RSA path; choose one of '
                         f'{PATHS} or None.')
    previous, _forced_path = _forced_path, path
    try:
        yield
    finally:
        _forced_path = previous


#: The epsilon of :func:`l2_normalize`.
L2_EPS = 1e-6


def l2_normalize(x: torch.Tensor,
                 dim: int,
                 eps: float = L2_EPS) -> torch.Tensor:
    """``x / sqrt(sum(x ** 2) + eps)`` along ``dim`` (eps inside the root).

    This is the normalisation of the official implementation; unlike
    :func:`torch.nn.functional.normalize` the epsilon sits inside the square
    root, so an all-zero vector stays zero and the gradient stays finite.
    Half-precision inputs (float16, bfloat16) are squared and summed in
    float32 (squares of float16 values above ~256 overflow); the result has
    the dtype of ``x``.
    """
    acc = torch.promote_types(x.dtype, torch.float32)
    if acc == x.dtype:
        return x * torch.rsqrt(x.pow(2).sum(dim, keepdim=True) + eps)
    # float32 sum of squares without a float32 copy of x
    sq_norm = torch.linalg.vector_norm(
        x, dim=dim, keepdim=True, dtype=acc).square()
    return (x * torch.rsqrt(sq_norm + eps)).to(x.dtype)


def _triple(value: Union[int, Sequence[int]],
            name: str) -> Tuple[int, int, int]:

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if is_int(value):
        value = (value, value, value)
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f'{name} must be an int or a sequence of 3 ints '
                         f'(t, h, w), got {value!r}.')
    value = tuple(value)
    if len(value) != 3 or not all(is_int(v) for v in value):
        raise ValueError(f'{name} must be an int or a sequence of 3 ints '
                         f'(t, h, w), got {value!r}.')
    if any(v <= 0 or v % 2 == 0 for v in value):
        raise ValueError(f'{name} must hold positive odd sizes so the '
                         f'context is centred on the query, got {value!r}.')
    return value


class RSA(nn.Module):
    """Relational self-attention over a spatio-temporal neighbourhood.

    For every position ``n`` of a video feature map, RSA transforms the query
    ``x_n`` with its ``M = kt * kh * kw`` neighbourhood (the context) as

    .. code-block:: none

        y_n = (kV_n + kR_n) (XV_n + XR_n)                               (Eq. 8)
        kV_n = q_n P^T,          P = H2 P1^T         basic kernel      [M]
        kR_n = vec(1 q_n^T * XK_n) H1 H2^T           relational kernel [M]
        XV_n                                         basic context     [M, Cq]
        XR_n = XV_n (XV_n)^T G                       relational context[M, Cq]

    and is computed in the memory-efficient order of Eq. 12 (supplementary
    Fig. 2), never materialising an ``[M, Cq]`` tensor per position::

        x ─ 1x1x1 projection ─┬─ q [L, Cq] ───────────────┐
                              ├─ k ─ H1 (grouped conv) ─+P1─ kernel [L, D]
                              └─ v ─┬─ H2 (conv, 1->D) ──┐       │
                                    └─ G (conv, 1->Cq)+I ─ context [Cq, D]
                                                             │
                                     y = kernel · context^T  [Cq, L]

    The products are evaluated in one of two memory layouts with the same
    multiply-adds (and the same FLOP count for tracing counters): on CPU,
    when L, Cq and D are at most 16, every per-position matrix is stored
    ``[N, a, b, THW]`` and multiplied by vectorised loops over the positions;
    otherwise ``[N*THW, a, b]`` and multiplied with ``bmm``. On CPU ``H1``,
    ``H2`` and ``G`` run as single-channel convolutions with a dedicated
    backward pass (:func:`~mmrsa.models.common.rsa_ops.channel_conv3d`); on
    other devices as grouped ``conv3d``. :func:`select_path` makes these
    choices, in one place.

    Implementations (``path``, see :func:`select_path`):

    - CPU (default): in float32 ``'cpu_native'``: the per-position
      products and their gradients in the optional native library
      (:mod:`~mmrsa.models.common.rsa_native`), which reads the query and
      writes the output in place (:meth:`attend_frames` for frame batches);
      otherwise (half precision, no library, other layer options)
      ``'cpu_loops'`` or ``'cpu_bmm'``, by the matrix sizes and the dtype;
      oneDNN's generic kernels are slow on these shapes. Under CPU
      autocast everything after the projection runs with autocast off
      (:func:`float32_transform`), so these float32 choices apply there
      too.
    - CUDA (default): ``'plain'``, grouped ``conv3d`` + ``bmm`` (cuDNN and
      cuBLAS, autograd's own backward).
    - ``'fused'`` (opt-in): the three per-position products in one Triton
      kernel that keeps only the four operands for backward
      (:mod:`~mmrsa.models.common.rsa_triton`). It is not the CUDA default
      because it has run only in Triton's CPU interpreter so far;
      ``tools/analysis_tools/gpu_check.py`` measures its accuracy and speed
      on a GPU. Opt in per layer with ``path='fused'`` (in a config:
      ``rsa_cfg=dict(path='fused')``) or for every layer left at ``'auto'``
      with the environment variable ``MMRSA_RSA_PATH=fused``; the argument
      wins over the variable. Where the kernel cannot run (no Triton, not
      CUDA, ``MMRSA_DISABLE_FUSED=1``, a layer without relational kernel and
      context, float64) the layer takes its default path; should the kernel
      fail to compile or launch, the process warns once and every layer
      computes the ``'plain'`` result from then on. Tracing
      (``torch.jit.trace``, ONNX export) and ``torch.compile`` always get
      the default path.
    - ONNX export (either exporter): positions first, the value's
      single-channel filters as one 2D convolution with the temporal taps
      as input channels and ``H1`` as one grouped ``conv3d``
      (:func:`~mmrsa.models.common.rsa_ops.export_channel_conv3d`), the
      form onnxruntime's CPU kernels run fastest; same multiply-adds.

    Symbols (paper / official code ``ops/rsa.py``):

    - ``num_queries`` = L (``nh``). Each of the L queries has
      ``Cq = out_channels / L`` channels (``dk`` = ``dv``); the key and the
      value have ``Cq`` channels and are shared by all queries (multi-query).
    - ``latent_dim`` = D (``dd``), the rank of ``H = H1 H2^T``. Defaults to
      ``Cq``.
    - ``kernel_size`` = M = (kt, kh, kw).
    - ``corr_groups`` = G of the group-wise query-key correlation
      (paper Table 4d); ``None`` means ``Cq`` (the Hadamard product).

    Parameter layout (and the lossless map from the official implementation;
    official names in brackets):

    - ``projection``: ``Conv3d(in, L*Cq [+ Cq] + Cq, 1)`` producing
      ``[query (L*Cq) | key (Cq, only with a relational kernel) | value (Cq)]``
      [``projection``, identical].
    - ``H1``: ``Conv3d(G, G*D, M, groups=G)`` [``H1``: ``Conv3d(dk, dk*dd, M,
      groups=dk)``, identical for G = Cq]; channel ``c`` of the key uses the
      filters of its group ``c // (Cq / G)``.
    - ``H2``: ``Conv3d(1, D, M)`` [``H2``, identical].
    - ``P1``: ``(Cq, D)`` [``P1`` of shape ``(1, dk, dd)``: drop the leading 1;
      the official basic-only kernel ('V') has no ``P1`` and equals
      ``P1 = eye(Cq)`` with ``D = Cq``].
    - ``G``: ``Conv3d(1, Cq, M)`` [``G``, identical].
    - ``I``: ``(Cq, Cq)``, initialised to the identity, added to ``(XV)^T G``
      when both contexts are used [``I`` of shape ``(1, dk, dk)``].
    - ``norm_layer``: ``BatchNorm3d`` over the projection output when
      ``norm='bn'``, otherwise ``None``.

    The output channel ``c * L + l`` holds value channel ``c`` of query ``l``
    (value channel major, query minor), as in the official code.

    Args:
        in_channels (int): Channels C of the input ``[N, C, T, H, W]``.
        out_channels (int, optional): Output channels ``L * Cq``. Defaults to
            ``in_channels``.
        kernel_size (int | Sequence[int]): Context size (kt, kh, kw), odd.
            Defaults to ``(5, 7, 7)``.
        stride (int): Spatial stride. When > 1 the output of the transform is
            average-pooled with a (1, 3, 3) window, as the official code does.
            Defaults to 1.
        num_queries (int): Number of queries L. Defaults to 8.
        latent_dim (int, optional): Latent dimension D. Defaults to ``None``
            (= Cq).
        kernel_type (str): 'V' (basic kernel only, involution-like), 'R'
            (relational kernel only) or 'VR' (both). Defaults to 'VR'.
        context_type (str): 'V' (basic context), 'R' (relational context) or
            'VR' (both). Defaults to 'VR'.
        corr_groups (int, optional): Groups G of the query-key correlation;
            must divide Cq. Defaults to ``None`` (= Cq, Hadamard product).
        norm (str): Normalisation of query, key and value: 'l2' (over
            channels, eps 1e-6 inside the root), 'none' or 'bn'.
            Defaults to 'l2'.
        path (str): Implementation: 'auto' (the default of the device, or
            ``MMRSA_RSA_PATH`` where set), 'plain' (grouped ``conv3d`` +
            ``bmm`` on every device) or 'fused' (the Triton kernel where it
            can run; see above). It changes no parameter and no result
            beyond rounding. Defaults to 'auto'.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: Optional[int] = None,
                 *,
                 kernel_size: Union[int, Sequence[int]] = (5, 7, 7),
                 stride: int = 1,
                 num_queries: int = 8,
                 latent_dim: Optional[int] = None,
                 kernel_type: str = 'VR',
                 context_type: str = 'VR',
                 corr_groups: Optional[int] = None,
                 norm: str = 'l2',
                 path: str = 'auto') -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        for name, value in (('in_channels', in_channels), ('out_channels',
                                                           out_channels),
                            ('num_queries', num_queries), ('stride', stride)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f'{name} must be a positive int, got {value!r}.')
        if out_channels % num_queries != 0:
            raise ValueError(
                f'out_channels={out_channels} is not divisible by '
                f'num_queries={num_queries}; choose num_queries among the '
                f'divisors of out_channels.')
        if kernel_type not in KERNEL_TYPES:
            raise ValueError(f'kernel_type={kernel_type!r} is not supported; '
                             f'choose one of {KERNEL_TYPES}.')
        if context_type not in CONTEXT_TYPES:
            raise ValueError(f'context_type={context_type!r} is not '
                             f'supported; choose one of {CONTEXT_TYPES}.')
        if norm not in NORM_TYPES:
            raise ValueError(f'norm={norm!r} is not supported; choose one of '
                             f'{NORM_TYPES}.')
        _check_path_choice(path, 'path')
        query_channels = out_channels // num_queries
        if latent_dim is None:
            latent_dim = query_channels
        if not isinstance(latent_dim, int) or latent_dim <= 0:
            raise ValueError(f'latent_dim must be a positive int or None '
                             f'(= out_channels / num_queries), got '
                             f'{latent_dim!r}.')
        if corr_groups is None:
            corr_groups = query_channels
        if (not isinstance(corr_groups, int) or corr_groups <= 0
                or query_channels % corr_groups != 0):
            raise ValueError(
                f'corr_groups={corr_groups!r} must divide the query channels '
                f'Cq = out_channels / num_queries = {query_channels}; choose '
                f'a divisor of {query_channels} or None (Hadamard product).')

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _triple(kernel_size, 'kernel_size')
        if self.kernel_size == (1, 1, 1):
            raise ValueError(
                'kernel_size=(1, 1, 1) gives every query a context of itself '
                'alone: no spatio-temporal transform is left (the kernels are '
                'one number). Use a context of at least 3 along one axis, '
                'e.g. (5, 7, 7) as in the paper or (3, 1, 1) for time only.')
        self.padding = tuple(k // 2 for k in self.kernel_size)
        self.stride = stride
        self.num_queries = num_queries
        self.query_channels = query_channels
        self.latent_dim = latent_dim
        self.corr_groups = corr_groups
        self.kernel_type = kernel_type
        self.context_type = context_type
        self.norm = norm
        self.path = path

        self.use_basic_kernel = 'V' in kernel_type
        self.use_relational_kernel = 'R' in kernel_type
        self.use_relational_context = 'R' in context_type
        self.use_identity = context_type == 'VR'

        cq, dim, groups = query_channels, latent_dim, corr_groups
        key_channels = cq if self.use_relational_kernel else 0
        self.split_sizes = (num_queries * cq, key_channels, cq)
        proj_channels = sum(self.split_sizes)
        self.projection = nn.Conv3d(in_channels, proj_channels, 1, bias=False)
        self.norm_layer = (
            nn.BatchNorm3d(proj_channels) if norm == 'bn' else None)
        self.H1 = (
            nn.Conv3d(
                groups,
                groups * dim,
                self.kernel_size,
                padding=self.padding,
                groups=groups,
                bias=False) if self.use_relational_kernel else None)
        self.H2 = nn.Conv3d(
            1, dim, self.kernel_size, padding=self.padding, bias=False)
        self.P1 = (
            nn.Parameter(torch.empty(cq, dim))
            if self.use_basic_kernel else None)
        self.G = (
            nn.Conv3d(
                1, cq, self.kernel_size, padding=self.padding, bias=False)
            if self.use_relational_context else None)
        self.I = nn.Parameter(  # noqa: E741  (the paper's and checkpoints' I)
            torch.empty(cq, cq)) if self.use_identity \
            else None
        self.reset_parameters()

    @property
    def context_size(self) -> int:
        """M, the number of positions in the context."""
        return math.prod(self.kernel_size)

    def reset_parameters(self) -> None:
        """Initialise as the official implementation does.

        Convolutions use PyTorch's default (Kaiming-uniform) initialisation,
        ``P1`` is drawn from ``N(0, 1 / (M * D))`` and ``I`` is the identity.
        """
        for conv in (self.projection, self.H1, self.H2, self.G):
            if conv is not None:
                conv.reset_parameters()
        if self.norm_layer is not None:
            self.norm_layer.reset_parameters()
        if self.P1 is not None:
            nn.init.normal_(
                self.P1,
                std=math.sqrt(1.0 / (self.context_size * self.latent_dim)))
        if self.I is not None:
            with torch.no_grad():
                self.I.copy_(torch.eye(self.query_channels))

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size='
                f'{self.kernel_size}, stride={self.stride}, num_queries='
                f'{self.num_queries}, latent_dim={self.latent_dim}, '
                f'kernel_type={self.kernel_type!r}, context_type='
                f'{self.context_type!r}, corr_groups={self.corr_groups}, '
                f'norm={self.norm!r}, path={self.path!r}')

    # ------------------------------------------------------------------ #
    # pieces shared with the literal reference implementation
    # ------------------------------------------------------------------ #
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``[N, in_channels, T, H,
        W]``."""
        if not isinstance(x, torch.Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)
            raise ValueError(
                f'RSA expects a 5-D input [N, C, T, H, W], got {shape}. '
                f'Reshape frame batches [N*T, C, H, W] to [N, C, T, H, W] '
                f'first.')
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'RSA was built with in_channels={self.in_channels} but the '
                f'input has {x.shape[1]} channels (shape {tuple(x.shape)}).')

    def embed(
        self, x: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """Project and normalise the input into query, key and value.

        Returns:
            tuple: ``q`` ``[N, L, Cq, T, H, W]``, ``k`` ``[N, Cq, T, H, W]``
            (``None`` without a relational kernel) and ``v``
            ``[N, Cq, T, H, W]``.
        """
        return self.split_embedding(self.projection(x))

    def split_embedding(
        self, proj: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """Normalise and split the projection ``[N, L*Cq + Ck + Cq, T, H, W]``
        into query, key and value (see :meth:`embed`)."""
        n, _, t, h, w = proj.shape
        if self.norm_layer is not None:
            proj = self.norm_layer(proj)
        q, k, v = torch.split(proj, self.split_sizes, dim=1)
        # [N, L*Cq, T, H, W] -> [N, L, Cq, T, H, W]
        q = q.reshape(n, self.num_queries, self.query_channels, t, h, w)
        if self.norm == 'l2':
            q = l2_normalize(q, dim=2)
            v = l2_normalize(v, dim=1)
            if self.use_relational_kernel:
                k = l2_normalize(k, dim=1)
        return q, (k if self.use_relational_kernel else None), v

    def h1_weight(self) -> torch.Tensor:
        """``H1`` filters per key channel, ``[Cq * D, 1, kt, kh, kw]``.

        With ``corr_groups`` G < Cq the G group filters are shared by the
        ``Cq / G`` channels of each group, which is the group-wise
        correlation computed in the switched order of Eq. 10.
        """
        weight = self.H1.weight  # [G*D, 1, kt, kh, kw]
        groups, cq = self.corr_groups, self.query_channels
        if groups == cq:
            return weight
        dim = self.latent_dim
        # [G, 1, D, k...] -> [G, Cq/G, D, k...] -> [Cq*D, 1, k...]
        weight = weight.reshape(groups, 1, dim, *self.kernel_size)
        weight = weight.expand(groups, cq // groups, dim, *self.kernel_size)
        return weight.reshape(cq * dim, 1, *self.kernel_size)

    def downsample(self, out: torch.Tensor) -> torch.Tensor:
        """Spatial stride as in the official code: (1, 3, 3) average pool."""
        if self.stride == 1:
            return out
        return F.avg_pool3d(
            out, (1, 3, 3),
            stride=(1, self.stride, self.stride),
            padding=(0, 1, 1))

    # ------------------------------------------------------------------ #
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply RSA.

        Args:
            x (torch.Tensor): ``[N, in_channels, T, H, W]``.

        Returns:
            torch.Tensor: ``[N, out_channels, T, H', W']`` with
            ``H' = ceil(H / stride)``.
        """
        self.check_input(x)
        return self.attend(self.projection(x))

    def transform_path(self, proj: torch.Tensor) -> str:
        """The implementation (:data:`PATHS`) that :meth:`attend` and
        :meth:`attend_frames` run on the projection ``proj`` here (under the
        current autocast state; see :func:`float32_transform`)."""
        if float32_transform(proj):
            with _transform_in_float32():
                return self.transform_path(
                    proj.new_empty(0, dtype=torch.float32))
        return select_path(
            proj, (self.num_queries, self.query_channels, self.latent_dim),
            self.use_relational_kernel and self.use_relational_context,
            self.path)

    def attend(self, proj: torch.Tensor) -> torch.Tensor:
        """The layer after its input projection: normalisation, kernels,
        contexts and their product (Eq. 12), and the stride.

        Args:
            proj (torch.Tensor): ``self.projection(x)``,
                ``[N, L*Cq + Ck + Cq, T, H, W]``.

        Returns:
            torch.Tensor: ``[N, out_channels, T, H', W']``; under CPU
            autocast in its dtype, computed by :func:`float32_transform`.
        """
        if float32_transform(proj):
            with _transform_in_float32():
                out = self.attend(proj.float())
            return out.to(torch.get_autocast_dtype('cpu'))
        n, _, t, h, w = proj.shape
        nq, cq = self.num_queries, self.query_channels
        q, k, v = self.split_embedding(proj)
        # The same products in two memory layouts: positions last with
        # vectorised loops for small per-position matrices on CPU,
        # positions first with batched matrix products otherwise; the
        # device-specific choices are all made by select_path.
        path = self.transform_path(proj)
        if torch.onnx.is_in_onnx_export():
            # what the exported graph computes is onnxruntime's to run:
            # positions first, its fast convolutions (see
            # export_channel_conv3d) and products
            path = 'onnx'
        if path == 'cpu_native':
            out = self._transform_native(q, k, v)  # [N, Cq*L, T, H, W]
            if out is not None:
                return self.downsample(out)
            path = 'cpu_bmm'  # the library failed (and warned)
        if path == 'cpu_loops':
            out = self._transform_positions_last(q, k, v)  # [N, Cq, L, THW]
            # [N, Cq, L, THW] -> [N, Cq*L, T, H, W] (value major, query minor)
            out = out.reshape(n, cq * nq, t, h, w)
        else:
            # [N*THW, Cq, L]
            out = self._transform_positions_first(q, k, v, path)
            # [N*THW, Cq, L] -> [N, Cq*L, T, H, W] (value major, query minor)
            if path == 'cpu_bmm':
                out = contiguous_grad(out)
            out = out.reshape(n, t, h, w, cq * nq)
            out = out.permute(0, 4, 1, 2, 3).contiguous()
        return self.downsample(out)

    def _value_filters(self) -> torch.Tensor:
        """``H2`` and ``G`` as one filter bank, ``[1, D (+ Cq), k...]``:
        they convolve the same value maps."""
        weight = self.H2.weight  # [D, 1, kt, kh, kw]
        if self.G is not None:
            weight = torch.cat([weight, self.G.weight], dim=0)
        return weight.transpose(0, 1)

    def _key_filters(self) -> torch.Tensor:
        """``H1`` as G filter banks, ``[G, D, k...]``."""
        return self.H1.weight.view(self.corr_groups, self.latent_dim,
                                   *self.kernel_size)

    def _transform_positions_last(self, q: torch.Tensor,
                                  k: Optional[torch.Tensor],
                                  v: torch.Tensor) -> torch.Tensor:
        """Eq. 12 with every per-position matrix indexed ``[N, a, b, THW]``.

        Returns:
            torch.Tensor: ``y`` as ``[N, Cq, L, THW]``.
        """
        n, nq, cq = q.shape[:3]
        num_pos, dim = math.prod(q.shape[3:]), self.latent_dim
        q = q.reshape(n, nq, cq, num_pos)  # [N, L, Cq, THW]

        # ---- kernel: q (P1 + XK * r(H1)), [N, L, D, THW] -------------- #
        if self.use_relational_kernel:
            # channel-wise convolution of the key (Eq. 10):
            # [N, Cq, T, H, W] -> [N, Cq, D, T, H, W] -> [N, Cq, D, THW]
            key_h1 = channel_conv3d(k, self._key_filters(), self.padding)
            key_h1 = key_h1.reshape(n, cq, dim, num_pos)
            if self.P1 is not None:
                key_h1 = key_h1 + self.P1[..., None]
            kernel = per_position_matmul(q, key_h1)  # [N, L, D, THW]
        else:
            # sum_c P1[c, d] q[l, c]: [N, L, D, Cq] @ [N, L, Cq, THW]
            # -> [N, L, D, THW] (P1 expanded so that FLOP counters see
            # every multiply-add)
            kernel = torch.matmul(self.P1.t().expand(n, nq, dim, cq), q)

        # ---- context: (H2^T XV)(I + XV^T G), [N, Cq, D, THW] ----------- #
        # [N, Cq, T, H, W] -> [N, Cq, D (+ Cq), THW]
        value = channel_conv3d(v, self._value_filters(), self.padding)
        value = value.reshape(n, cq, -1, num_pos)
        if self.G is not None:
            # H2^T XV (transposed) [N, Cq, D, THW] and XV^T G
            # [N, Cq(c), Cq(c'), THW]
            value_h2, value_g = torch.split(value, [dim, cq], dim=2)
            # (I + XV^T G)^T [N, Cq(c'), Cq(c), THW]; I is added after the
            # transpose so that its gradient sums a contiguous tensor
            value_g = value_g.transpose(1, 2)
            if self.I is not None:
                value_g = value_g + self.I.t()[..., None]
            # sum_c (I + XV^T G)[c, c'] (H2^T XV)^T[c, d]: [N, Cq, D, THW]
            context = per_position_matmul(value_g, value_h2)
        else:
            context = value  # [N, Cq, D, THW]

        # ---- aggregate: y[c, l] = sum_d context[c, d] kernel[l, d] ----- #
        # [N, Cq, D, THW] @ [N, D, L, THW] -> [N, Cq, L, THW]
        return per_position_matmul(context, kernel.transpose(1, 2))

    def _filter_channels(
        self,
        x: torch.Tensor,
        filters: torch.Tensor,
        path: str,
        bias: Optional[torch.Tensor] = None,
        sizes: Optional[Sequence[int]] = None
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """Single-channel convolutions of ``x`` ``[N, C, T, H, W]`` with
        ``filters`` ``[banks, O, k...]``, positions first: ``[N*THW, C, O]``
        (a strided view on the CPU paths, where C is the outer dimension),
        float32 except for ``'cpu_native'`` in a transform with bfloat16
        filters (:func:`float32_transform`); with ``sizes``, split along O
        into one such output per size. ``bias`` ``[C, O]`` is for the
        exported graph (``path='onnx'``), where it is the convolution's own
        bias."""
        if path == 'onnx':
            return export_channel_conv3d(x, filters, self.padding, bias, sizes)
        if bias is not None:
            raise ValueError(f'a bias is exported only, got path {path!r}')
        out = self._filter_positions_first(x, filters, path)
        return out if sizes is None else torch.split(out, list(sizes), dim=2)

    def _filter_positions_first(self, x: torch.Tensor, filters: torch.Tensor,
                                path: str) -> torch.Tensor:
        """:meth:`_filter_channels` off the exported graph, ``[N*THW, C,
        O]``."""
        channels = x.shape[1]
        if _filter_dtype is not None and path in ('cpu_bmm', 'cpu_native'):
            # a float32 transform under bf16 autocast with AMX: the taps
            # convolution in bfloat16, [N*THW, C, O], contiguous (the native
            # products read bfloat16, bmm gets float32)
            dtype = _filter_dtype
            out = taps_channel_conv(
                x.to(dtype), filters.to(dtype), self.padding)
            return out if path == 'cpu_native' else out.float()
        if path == 'cpu_native' and filters.shape[0] > 1:
            # H1 without gradients (inference): the library's convolution,
            # contiguous [N*THW, C, O]; None where it does not apply
            out = rsa_native.channel_conv(
                x, filters, self.padding, fallback=_forced_path is None)
            if out is not None:
                return out
        if path in ('cpu_bmm', 'cpu_native'):
            if use_taps_conv(x, filters):
                # inference: contiguous [N*THW, C, O]
                return taps_channel_conv(x, filters, self.padding)
            # [N, C, T, H, W] -> [C, N, T, H, W, O] -> [N*THW, C, O]; on the
            # native path H1's forward pass and the input's gradients by the
            # library
            out = channel_conv3d(
                x,
                filters,
                self.padding,
                channels_last=True,
                native=path == 'cpu_native')
            return out.reshape(channels, -1, out.shape[-1]).transpose(0, 1)
        # [N, C, T, H, W] -> [N, T, H, W, C, O] -> [N*THW, C, O]
        out = grouped_channel_conv3d(x, filters, self.padding)
        return out.reshape(-1, channels, out.shape[-1])

    def _transform_native(self, q: torch.Tensor, k: torch.Tensor,
                          v: torch.Tensor) -> Optional[torch.Tensor]:
        """Eq. 12 with the native per-position products
        (:func:`~mmrsa.models.common.rsa_native.products`, differentiable)
        after the convolutions of the ``'cpu_bmm'`` path.

        Returns:
            torch.Tensor | None: ``y`` as ``[N, Cq*L, T, H, W]``, or None if
            the library failed (it then warned; the caller runs ``bmm``).
        """
        n, nq, cq, t, h, w = q.shape
        # [N, Cq, T, H, W] -> [N*THW, Cq, D] and [N*THW, Cq, D + Cq]
        key_h1 = self._filter_channels(k, self._key_filters(), 'cpu_native')
        value = self._filter_channels(v, self._value_filters(), 'cpu_native')
        # q [N, L, Cq, T, H, W] seen as [N, T, L*Cq, HW]; out
        # [N, Cq*L, T, HW]
        out = rsa_native.products(
            q.reshape(n, nq * cq, t, h * w).transpose(1, 2),
            key_h1,
            value,
            self.P1,
            self.I,
            layout='clips',
            num_queries=nq,
            fallback=_forced_path is None)
        return None if out is None else out.view(n, cq * nq, t, h, w)

    def attend_frames(self, proj: torch.Tensor,
                      num_segments: int) -> Optional[torch.Tensor]:
        """The layer on the projection of a batch of frames with the native
        products (training or inference); None where they do not apply.

        The query is read from ``proj`` as it is and normalised by the
        native products, which write the output frames directly: only the
        key and the value (2 Cq of the ``L*Cq + 2 Cq`` channels) are copied
        into clips for their convolutions. Unlike :meth:`attend` there is no
        transpose of the whole projection and of the output.

        Args:
            proj (torch.Tensor): The projection of the frames,
                ``[N*T, L*Cq + 2 Cq, H, W]``.
            num_segments (int): T, frames per clip.

        Returns:
            torch.Tensor | None: ``[N*T, out_channels, H, W]``, or None when
            the layer's path is not ``'cpu_native'`` (see
            :meth:`transform_path`), for a stride or ``norm='bn'``, or when
            the library failed.
        """
        if (self.stride != 1 or self.norm == 'bn'
                or self.transform_path(proj) != 'cpu_native'):
            return None
        if not float32_transform(proj):
            return self._native_frames(proj, num_segments)
        # CPU autocast: the library reads the query from a bfloat16
        # projection and writes bfloat16 frames (float32 sums); the key and
        # the value are normalised in float32
        if proj.dtype not in rsa_native.DTYPES:
            proj = proj.float()
        with _transform_in_float32():
            out = self._native_frames(proj, num_segments)
        return None if out is None else out.to(torch.get_autocast_dtype('cpu'))

    def _native_frames(self, proj: torch.Tensor,
                       num_segments: int) -> Optional[torch.Tensor]:
        """:meth:`attend_frames` once it applies: the output frames in the
        dtype of ``proj``, or None if the library failed."""
        nq, cq = self.num_queries, self.query_channels
        frames, channels, h, w = proj.shape
        n, t = frames // num_segments, num_segments
        # the query channels of [N*T, P, H, W] seen as [N, T, L*Cq, HW]
        q = proj.view(n, t, channels, h * w)[:, :, :nq * cq]
        # key and value: [N*T, 2 Cq, H, W] -> [N, 2 Cq, T, H, W], float32
        kv = proj.view(n, t, channels, h, w)[:, :, nq * cq:]
        kv = kv.transpose(1, 2).to(
            torch.float32, memory_format=torch.contiguous_format)
        k, v = torch.split(kv, [cq, cq], dim=1)
        if self.norm == 'l2':
            k, v = l2_normalize(k, dim=1), l2_normalize(v, dim=1)
        # [N, Cq, T, H, W] -> [N*THW, Cq, D] and [N*THW, Cq, D + Cq]
        key_h1 = self._filter_channels(k, self._key_filters(), 'cpu_native')
        value = self._filter_channels(v, self._value_filters(), 'cpu_native')
        # the output frames [N*T, Cq*L, HW]
        out = rsa_native.products(
            q,
            key_h1,
            value,
            self.P1,
            self.I,
            layout='frames',
            num_queries=nq,
            query_eps=L2_EPS if self.norm == 'l2' else None,
            fallback=_forced_path is None)
        return None if out is None else out.view(frames, cq * nq, h, w)

    def _transform_positions_first(self, q: torch.Tensor,
                                   k: Optional[torch.Tensor], v: torch.Tensor,
                                   path: str) -> torch.Tensor:
        """Eq. 12 with every per-position matrix indexed ``[N*THW, a, b]``,
        for ``path`` 'cpu_bmm', 'plain' or 'fused' (see
        :func:`select_path`).

        Returns:
            torch.Tensor: ``y`` as ``[N*THW, Cq, L]``.
        """
        n, nq, cq = q.shape[:3]
        num_pos, dim = math.prod(q.shape[3:]), self.latent_dim
        # query: [N, L, Cq, T, H, W] -> [N, THW, L*Cq] -> [N*THW, L, Cq]
        # (copied: bmm wants a unit stride inside each matrix)
        q = q.reshape(n, nq * cq, num_pos).transpose(1, 2).contiguous()
        q = q.view(n * num_pos, nq, cq)

        # ---- kernel: q (P1 + XK * r(H1)), [N*THW, L, D] --------------- #
        if self.use_relational_kernel:
            # channel-wise convolution of the key (Eq. 10):
            # [N, Cq, T, H, W] -> [N*THW, Cq, D]; P1 added after the
            # transpose (a contiguous operand for bmm and sum for the
            # gradient of P1); exported, as the convolution's bias
            exported = path == 'onnx'
            key_h1 = self._filter_channels(k, self._key_filters(), path,
                                           self.P1 if exported else None)
            if self.P1 is not None and not exported:
                key_h1 = key_h1 + self.P1
            # [N*THW, L, Cq] @ [N*THW, Cq, D] -> [N*THW, L, D] (fused:
            # below)
            kernel = None if path == 'fused' else torch.bmm(q, key_h1)
        else:
            kernel = torch.matmul(q, self.P1)  # [N*THW, L, D]

        # ---- context: (H2^T XV)(I + XV^T G), [N*THW, Cq, D] ------------ #
        if self.G is not None:
            # [N, Cq, T, H, W] -> H2^T XV (transposed) [N*THW, Cq, D] and
            # XV^T G [N*THW, Cq(c), Cq(c')]
            value_h2, value_g = self._filter_channels(
                v, self._value_filters(), path, sizes=(dim, cq))
            # (I + XV^T G)^T [N*THW, Cq(c'), Cq(c)], I added after the
            # transpose (a contiguous sum for its gradient); exported, before
            # it (onnxruntime fuses a transpose that feeds a product)
            if path == 'onnx' and self.I is not None:
                value_g = value_g + self.I
            value_g = value_g.transpose(1, 2)
            if self.I is not None and path != 'onnx':
                value_g = value_g + self.I.t()
            if path == 'fused':
                # the three products below in one kernel: [N*THW, Cq, L];
                # unless forced, a kernel that fails computes them as below
                return rsa_triton.fused_per_position_products(
                    q,
                    key_h1,
                    value_g,
                    value_h2,
                    fallback=_forced_path is None)
            # sum_c (I + XV^T G)[c, c'] (H2^T XV)^T[c, d]: [N*THW, Cq, D]
            context = torch.bmm(value_g, value_h2)
        else:
            # [N, Cq, T, H, W] -> [N*THW, Cq, D]
            context = self._filter_channels(v, self._value_filters(), path)

        # ---- aggregate: y[c, l] = sum_d context[c, d] kernel[l, d] ----- #
        return torch.bmm(context, kernel.transpose(1, 2))  # [N*THW, Cq, L]
