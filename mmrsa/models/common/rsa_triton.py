# Copyright (c) mmrsa contributors. All rights reserved.
"""A fused Triton kernel for the per-position products of RSA (optional).

For every position ``p`` the efficient form of RSA (Eq. 12) multiplies four
small matrices::

    kernel_p  = q_p key_p              [L, D]  = [L, Cq] @ [Cq, D]
    context_p = g_p h_p                [Cq, D] = [Cq, Cq] @ [Cq, D]
    y_p       = context_p kernel_p^T   [Cq, L]

(``key = XK * r(H1) + P1``, ``g = (I + XV^T G)^T``, ``h = H2^T XV`` in the
notation of :class:`~mmrsa.models.common.rsa.RSA`). As three batched matrix
products the intermediates ``kernel`` and ``context`` make a round trip
through memory and are kept for the backward pass. The kernels here compute
``y_p`` from the four operands in registers and recompute the intermediates
in the backward pass: each operand is read once, ``y`` written once, and
only the operands are saved.

The layer runs these kernels only when asked to (``path='fused'`` or
``MMRSA_RSA_PATH=fused``, see :func:`~mmrsa.models.common.rsa.select_path`):
so far they have run only in Triton's interpreter, and the CUDA default is
the ``bmm`` path until a GPU measurement
(``tools/analysis_tools/gpu_check.py``) says otherwise. Asked for with
``fallback=True`` (what the layer does unless a path is forced), a kernel
that fails to compile or launch warns once and hands the products to
``bmm`` for the rest of the process (:func:`fused_failure`), forward and
backward.

Triton is optional: without it (or without a CUDA device)
:func:`fused_available` is False and the layer uses ``bmm``. Triton decides
at decoration time whether a kernel runs compiled or in its interpreter
(``TRITON_INTERPRET=1``), so the kernels are built on first use, for the mode
in force then: with the interpreter they run on CPU tensors, which is how the
tests check them.

Set ``MMRSA_DISABLE_FUSED=1`` to keep the layer on ``bmm`` even where the
fused kernel is asked for.
"""
import functools
import os
import warnings
from typing import Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

#: ``triton`` and ``triton.language``, imported on first use
#: (:func:`_load_triton`): a CPU-only run never pays for the import.
triton = tl = None
_triton_checked = False

__all__ = [
    'fused_available', 'fused_per_position_products', 'fused_failure',
    'warn_once', 'DISABLE_ENV'
]

#: Environment variable that keeps the layer off the fused kernel.
DISABLE_ENV = 'MMRSA_DISABLE_FUSED'

#: dtypes the kernels take (``tl.dot`` operands).
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Elements of one ``[BLOCK_P, a, b]`` register tile; BLOCK_P positions are
#: processed per program so that tiles stay about this size.
TILE_ELEMENTS = 4096

#: Why the kernels were given up in this process (the first failure, as
#: ``'Type: message'``), or None while they have not failed.
_failure: Optional[str] = None

#: The keys of the warnings :func:`warn_once` has issued.
_warned = set()


def warn_once(key: str, message: str) -> None:
    """``warnings.warn(message)`` (a ``RuntimeWarning``) the first time
    ``key`` is seen in this process, whatever the warning filters."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def fused_failure() -> Optional[str]:
    """Why a kernel failed in this process with ``fallback=True`` (after
    which the layer no longer asks for them), or None."""
    return _failure


def _give_up(error: Exception) -> None:
    """Record the first failure of a kernel and warn once."""
    global _failure
    if _failure is None:
        _failure = f'{type(error).__name__}: {error}'
    warn_once(
        'failed',
        f'RSA: the fused Triton kernel failed ({_failure}); every RSA layer '
        f'of this process computes the plain result (bmm) from now on. '
        f'Please report this with the output of '
        f'tools/analysis_tools/gpu_check.py.')


def _falls_back(error: Exception, fallback: bool) -> bool:
    """Whether ``error`` of a kernel is handed to ``bmm``: with
    ``fallback``, anything but running out of memory (which ``bmm`` would
    not cure)."""
    return fallback and not isinstance(error, torch.cuda.OutOfMemoryError)


def _interpreting() -> bool:
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


def _load_triton() -> bool:
    """Import Triton once; whether it is installed."""
    global triton, tl, _triton_checked
    if not _triton_checked:
        _triton_checked = True
        try:
            import triton as triton_module
            import triton.language as language
        except ImportError:  # optional dependency
            return False
        triton, tl = triton_module, language
    return triton is not None


def fused_available(device: torch.device) -> bool:
    """Whether :func:`fused_per_position_products` can run on ``device``:
    the device is CUDA, or the CPU under Triton's interpreter
    (``TRITON_INTERPRET=1``), Triton imports and ``MMRSA_DISABLE_FUSED`` is
    not set."""
    if os.environ.get(DISABLE_ENV, '0') == '1':
        return False
    if torch.device(device).type != ('cpu' if _interpreting() else 'cuda'):
        return False
    return _load_triton()


@functools.lru_cache(maxsize=None)
def _kernels(interpret: bool) -> Tuple:
    """The forward and backward kernels, decorated in the current Triton
    mode (``interpret`` only keys the cache)."""

    @triton.jit
    def forward_kernel(q_ptr, k_ptr, g_ptr, h_ptr, y_ptr, num_pos, L, CQ, D,
                       sq0, sq1, sq2, sk0, sk1, sk2, sg0, sg1, sg2, sh0, sh1,
                       sh2, sy0, sy1, sy2, BLOCK_P: tl.constexpr,
                       BL: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr,
                       IEEE: tl.constexpr):
        pos = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(
            tl.int64)[:, None, None]
        in_pos = pos < num_pos
        # index vectors along the second and third tile axes
        l2 = tl.arange(0, BL)[None, None, :]
        c1 = tl.arange(0, BC)[None, :, None]
        c2 = tl.arange(0, BC)[None, None, :]
        d1 = tl.arange(0, BD)[None, :, None]
        d2 = tl.arange(0, BD)[None, None, :]
        # operands, transposed ones read through swapped strides
        q_t = tl.load(
            q_ptr + pos * sq0 + c1 * sq2 + l2 * sq1,
            mask=in_pos & (c1 < CQ) & (l2 < L),
            other=0.)
        k_t = tl.load(
            k_ptr + pos * sk0 + d1 * sk2 + c2 * sk1,
            mask=in_pos & (d1 < D) & (c2 < CQ),
            other=0.)
        g = tl.load(
            g_ptr + pos * sg0 + c1 * sg1 + c2 * sg2,
            mask=in_pos & (c1 < CQ) & (c2 < CQ),
            other=0.)
        h = tl.load(
            h_ptr + pos * sh0 + c1 * sh1 + d2 * sh2,
            mask=in_pos & (c1 < CQ) & (d2 < D),
            other=0.)
        dtype = q_t.dtype
        if IEEE:
            kernel_t = tl.dot(k_t, q_t, input_precision='ieee')  # [D, L]
            context = tl.dot(g, h, input_precision='ieee')  # [Cq, D]
            y = tl.dot(context, kernel_t, input_precision='ieee')
        else:
            kernel_t = tl.dot(k_t, q_t).to(dtype)
            context = tl.dot(g, h).to(dtype)
            y = tl.dot(context, kernel_t)  # [Cq, L], float32 sums
        tl.store(
            y_ptr + pos * sy0 + c1 * sy1 + l2 * sy2,
            y.to(y_ptr.dtype.element_ty),
            mask=in_pos & (c1 < CQ) & (l2 < L))

    @triton.jit
    def backward_kernel(q_ptr, k_ptr, g_ptr, h_ptr, gy_ptr, gq_ptr, gk_ptr,
                        gg_ptr, gh_ptr, num_pos, L, CQ, D, sq0, sq1, sq2, sk0,
                        sk1, sk2, sg0, sg1, sg2, sh0, sh1, sh2, sy0, sy1, sy2,
                        BLOCK_P: tl.constexpr, BL: tl.constexpr,
                        BC: tl.constexpr, BD: tl.constexpr,
                        IEEE: tl.constexpr):
        pos = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(
            tl.int64)[:, None, None]
        in_pos = pos < num_pos
        l1 = tl.arange(0, BL)[None, :, None]
        l2 = tl.arange(0, BL)[None, None, :]
        c1 = tl.arange(0, BC)[None, :, None]
        c2 = tl.arange(0, BC)[None, None, :]
        d1 = tl.arange(0, BD)[None, :, None]
        d2 = tl.arange(0, BD)[None, None, :]
        lc = in_pos & (l1 < L) & (c2 < CQ)
        cl = in_pos & (c1 < CQ) & (l2 < L)
        cd = in_pos & (c1 < CQ) & (d2 < D)
        dc = in_pos & (d1 < D) & (c2 < CQ)
        cc = in_pos & (c1 < CQ) & (c2 < CQ)
        q = tl.load(
            q_ptr + pos * sq0 + l1 * sq1 + c2 * sq2, mask=lc,
            other=0.)  # [L, Cq]
        q_t = tl.load(
            q_ptr + pos * sq0 + c1 * sq2 + l2 * sq1, mask=cl,
            other=0.)  # [Cq, L]
        k = tl.load(
            k_ptr + pos * sk0 + c1 * sk1 + d2 * sk2, mask=cd,
            other=0.)  # [Cq, D]
        k_t = tl.load(
            k_ptr + pos * sk0 + d1 * sk2 + c2 * sk1, mask=dc,
            other=0.)  # [D, Cq]
        g = tl.load(
            g_ptr + pos * sg0 + c1 * sg1 + c2 * sg2, mask=cc,
            other=0.)  # [Cq, Cq]
        g_t = tl.load(
            g_ptr + pos * sg0 + c1 * sg2 + c2 * sg1, mask=cc, other=0.)
        h = tl.load(
            h_ptr + pos * sh0 + c1 * sh1 + d2 * sh2, mask=cd,
            other=0.)  # [Cq, D]
        h_t = tl.load(
            h_ptr + pos * sh0 + d1 * sh2 + c2 * sh1, mask=dc,
            other=0.)  # [D, Cq]
        gy = tl.load(
            gy_ptr + pos * sy0 + c1 * sy1 + l2 * sy2, mask=cl,
            other=0.)  # [Cq, L]
        gy_t = tl.load(
            gy_ptr + pos * sy0 + l1 * sy2 + c2 * sy1, mask=lc,
            other=0.)  # [L, Cq]
        dtype = q.dtype
        if IEEE:
            kernel = tl.dot(q, k, input_precision='ieee')  # [L, D]
            context = tl.dot(g, h, input_precision='ieee')  # [Cq, D]
            g_context = tl.dot(gy, kernel, input_precision='ieee')
            g_kernel = tl.dot(gy_t, context, input_precision='ieee')
            g_q = tl.dot(g_kernel, k_t, input_precision='ieee')
            g_k = tl.dot(q_t, g_kernel, input_precision='ieee')
            g_g = tl.dot(g_context, h_t, input_precision='ieee')
            g_h = tl.dot(g_t, g_context, input_precision='ieee')
        else:
            kernel = tl.dot(q, k).to(dtype)
            context = tl.dot(g, h).to(dtype)
            g_context = tl.dot(gy, kernel).to(dtype)  # [Cq, D]
            g_kernel = tl.dot(gy_t, context).to(dtype)  # [L, D]
            g_q = tl.dot(g_kernel, k_t)  # [L, Cq]
            g_k = tl.dot(q_t, g_kernel)  # [Cq, D]
            g_g = tl.dot(g_context, h_t)  # [Cq, Cq]
            g_h = tl.dot(g_t, g_context)  # [Cq, D]
        # gradients are contiguous, shaped as their operands
        tl.store(
            gq_ptr + pos * (L * CQ) + l1 * CQ + c2, g_q.to(dtype), mask=lc)
        tl.store(gk_ptr + pos * (CQ * D) + c1 * D + d2, g_k.to(dtype), mask=cd)
        tl.store(
            gg_ptr + pos * (CQ * CQ) + c1 * CQ + c2, g_g.to(dtype), mask=cc)
        tl.store(gh_ptr + pos * (CQ * D) + c1 * D + d2, g_h.to(dtype), mask=cd)

    return forward_kernel, backward_kernel


def _launch_config(q: torch.Tensor, key: torch.Tensor) -> dict:
    """Tile sizes: each matrix side padded to a power of two >= 16 (what
    ``tl.dot`` takes), as many positions per program as fit a tile."""
    num_queries, query_channels = q.shape[1:]
    dim = key.shape[2]
    sizes = dict(
        BL=max(16, triton.next_power_of_2(num_queries)),
        BC=max(16, triton.next_power_of_2(query_channels)),
        BD=max(16, triton.next_power_of_2(dim)))
    side = max(sizes.values())
    sizes['BLOCK_P'] = max(1, min(16, TILE_ELEMENTS // (side * side)))
    sizes['IEEE'] = q.dtype == torch.float32
    return sizes


class _FusedProducts(torch.autograd.Function):

    @staticmethod
    def forward(ctx, q, key, g, h, fallback):
        num_pos, num_queries, query_channels = q.shape
        dim = key.shape[2]
        y = torch.empty(
            num_pos,
            query_channels,
            num_queries,
            dtype=q.dtype,
            device=q.device)
        config = _launch_config(q, key)
        forward_kernel = _kernels(_interpreting())[0]
        grid = (triton.cdiv(num_pos, config['BLOCK_P']), )
        forward_kernel[grid](q, key, g, h, y, num_pos, num_queries,
                             query_channels, dim, *q.stride(), *key.stride(),
                             *g.stride(), *h.stride(), *y.stride(), **config)
        ctx.save_for_backward(q, key, g, h)
        ctx.fallback = fallback
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        q, key, g, h = ctx.saved_tensors
        num_pos, num_queries, query_channels = q.shape
        dim = key.shape[2]
        grad = grad.to(q.dtype)
        if ctx.fallback and _failure is not None:
            return _backward_bmm(q, key, g, h, grad) + (None, )
        grads = [
            torch.empty(t.shape, dtype=q.dtype, device=q.device)
            for t in (q, key, g, h)
        ]
        config = _launch_config(q, key)
        try:
            backward_kernel = _kernels(_interpreting())[1]
            grid = (triton.cdiv(num_pos, config['BLOCK_P']), )
            backward_kernel[grid](q, key, g, h, grad, *grads, num_pos,
                                  num_queries, query_channels, dim,
                                  *q.stride(), *key.stride(), *g.stride(),
                                  *h.stride(), *grad.stride(), **config)
        except Exception as error:
            if not _falls_back(error, ctx.fallback):
                raise
            _give_up(error)
            return _backward_bmm(q, key, g, h, grad) + (None, )
        return tuple(grads) + (None, )


def _products_bmm(q: torch.Tensor, key: torch.Tensor, g: torch.Tensor,
                  h: torch.Tensor) -> torch.Tensor:
    """What the fused kernel computes, as the layer's plain path computes
    it (the same three ``bmm`` in the same order)."""
    kernel = torch.bmm(q, key)  # [P, L, Cq] @ [P, Cq, D] -> [P, L, D]
    context = torch.bmm(g, h)  # [P, Cq, Cq] @ [P, Cq, D] -> [P, Cq, D]
    return torch.bmm(context, kernel.transpose(1, 2))  # [P, Cq, L]


def _backward_bmm(q: torch.Tensor, key: torch.Tensor, g: torch.Tensor,
                  h: torch.Tensor, grad: torch.Tensor) -> Tuple:
    """The gradients of the backward kernel, with ``bmm`` (for a backward
    kernel that failed; ``grad`` is ``[P, Cq, L]``)."""
    kernel = torch.bmm(q, key)  # [P, L, D]
    context = torch.bmm(g, h)  # [P, Cq, D]
    g_context = torch.bmm(grad, kernel)  # [P, Cq, L] @ [P, L, D]
    g_kernel = torch.bmm(grad.transpose(1, 2), context)  # [P, L, D]
    return (
        torch.bmm(g_kernel, key.transpose(1, 2)),  # [P, L, Cq]
        torch.bmm(q.transpose(1, 2), g_kernel),  # [P, Cq, D]
        torch.bmm(g_context, h.transpose(1, 2)),  # [P, Cq, Cq]
        torch.bmm(g.transpose(1, 2), g_context))  # [P, Cq, D]


def fused_per_position_products(q: torch.Tensor,
                                key: torch.Tensor,
                                g: torch.Tensor,
                                h: torch.Tensor,
                                *,
                                fallback: bool = False) -> torch.Tensor:
    """``y_p = (g_p h_p) (q_p key_p)^T`` for every position ``p``, fused.

    Equal to ``torch.bmm(torch.bmm(g, h), torch.bmm(q, key).transpose(1,
    2))`` (float32 operands are multiplied in IEEE float32, half-precision
    ones summed in float32). The operands may be strided views. Under
    autocast they are cast to the autocast dtype, as for ``bmm``.

    Args:
        q (torch.Tensor): ``[P, L, Cq]``.
        key (torch.Tensor): ``[P, Cq, D]``.
        g (torch.Tensor): ``[P, Cq, Cq]``.
        h (torch.Tensor): ``[P, Cq, D]``.
        fallback (bool): Where a kernel fails to compile or launch (or
            failed before in this process), warn once and compute with
            ``bmm`` instead of raising: the forward as the layer's plain path
            does (the same result), the backward from the saved operands.
            Defaults to False.

    Returns:
        torch.Tensor: ``[P, Cq, L]``.
    """
    if not fused_available(q.device):
        raise RuntimeError(
            f'the fused RSA kernel needs Triton and a CUDA device (or '
            f'TRITON_INTERPRET=1 on CPU) and {DISABLE_ENV} unset; got '
            f'{q.device}{"" if _load_triton() else " without Triton"}.')
    num_pos, _, query_channels = q.shape
    dim = key.shape[2]
    if (key.shape != (num_pos, query_channels, dim)
            or g.shape != (num_pos, query_channels, query_channels)
            or h.shape != (num_pos, query_channels, dim)):
        raise ValueError(
            f'fused_per_position_products expects q [P, L, Cq], key '
            f'[P, Cq, D], g [P, Cq, Cq] and h [P, Cq, D], got '
            f'{tuple(q.shape)}, {tuple(key.shape)}, {tuple(g.shape)} and '
            f'{tuple(h.shape)}.')
    device = q.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        dtype = torch.promote_types(
            torch.promote_types(q.dtype, key.dtype),
            torch.promote_types(g.dtype, h.dtype))
    if dtype not in FUSED_DTYPES:
        raise ValueError(f'the fused RSA kernel takes {FUSED_DTYPES}, got '
                         f'{dtype}.')
    if fallback and _failure is not None:
        return _products_bmm(q, key, g, h)
    try:
        with torch.autocast(device, enabled=False):
            return _FusedProducts.apply(
                q.to(dtype), key.to(dtype), g.to(dtype), h.to(dtype), fallback)
    except Exception as error:
        if not _falls_back(error, fallback):
            raise
        _give_up(error)
    return _products_bmm(q, key, g, h)  # under the caller's autocast
