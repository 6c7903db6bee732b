# Copyright (c) mmrsa contributors. All rights reserved.
"""Native CPU products of RSA and their backward pass (optional, float32
sums).

After its convolutions, an RSA layer multiplies four small matrices at every
position (Eq. 12): ``kernel = q (XK * H1 + P1)`` ``[L, D]``, the contexts
``H2^T XV`` ``[D, Cq]`` and ``I + XV^T G`` ``[Cq, Cq]``, and their product
``[Cq, L]``. In PyTorch these are three ``bmm`` on positions-first copies of
the operands, then a transpose into the output layout. The C library built
from ``mmrsa/csrc/rsa_products.c`` computes the same products in one pass
over the positions: it reads the query in the layer's own layout, keeps the
intermediates in registers, adds ``P1`` and ``I`` on the fly and writes the
output ``[N, Cq*L, T, H, W]`` directly. It multiplies the value's ``H2``
context by the kernel before the relational context (``Cq*L*(D + Cq)``
multiply-adds per position instead of ``Cq*D*(Cq + L)``), the same result
within float32 rounding.

Its backward pass (:func:`native_products_backward`; :func:`products` is
the differentiable form the layers call) recomputes the kernel and ``t``
from the operands and writes the gradients of the query (through its
normalisation), of the filtered key and of the value, position by position,
in their own layouts; those of ``P1`` and ``I`` are sums over the positions.
Nothing but the operands is kept for it, fewer bytes than the PyTorch path
keeps.

The library also computes ``H1``, the key's single-channel convolutions
(:func:`channel_conv`, ``mmrsa/csrc/channel_conv.c``): one bank of ``D``
filters per channel, for which oneDNN has no fast kernel. In inference it
writes the positions-first key the products read; in training it computes
the forward pass, and from 32 filters per bank the filters' gradient
(:func:`channel_conv_weight_grad`) in the backward pass of
:func:`~mmrsa.models.common.rsa_ops.channel_conv3d`.

The products run on the CPU, in float32, in training and inference (under CPU
autocast too, whose RSA transform sums in float32; there the query and
the output, and the filtered key and value, may be bfloat16, see
:func:`~mmrsa.models.common.rsa.float32_transform`), not while tracing,
exporting or compiling, for layers with a relational kernel and context and
a multiple of 8 queries (RSANet: 8).
:func:`~mmrsa.models.common.rsa.select_path` makes that choice
(``'cpu_native'``); every other case runs the pure-PyTorch path, which is
also the fallback.

The library is optional. ``pip install`` builds it where a C compiler with
OpenMP is found (``setup.py``, plain C: no Python or torch API, loaded with
:mod:`ctypes`); without it, or with ``MMRSA_DISABLE_NATIVE=1``, the layers
run the PyTorch path. It uses the OpenMP runtime PyTorch loaded (it needs
``libgomp.so.1``, already in the process through torch), so its threads are
PyTorch's: ``torch.set_num_threads`` applies to it.
"""
import contextlib
import ctypes
import functools
import os
import os.path as osp
import warnings
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Iterator, Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

__all__ = [
    'native_available', 'native_status', 'native_products',
    'native_products_backward', 'products', 'channel_conv',
    'channel_conv_weight_grad', 'channel_conv_input_grad',
    'channel_conv_input_grad_applies', 'disabled', 'DISABLE_ENV', 'MIN_QUERIES'
]

#: Environment variable that keeps the layers on the PyTorch path.
DISABLE_ENV = 'MMRSA_DISABLE_NATIVE'

#: The number of queries L must be a multiple of this (the library's
#: vectors hold 8 queries).
MIN_QUERIES = 8

#: The library's file name without the platform suffix, next to the
#: ``mmrsa`` package's ``__init__.py``.
_LIBRARY_STEM = '_rsa_products'

#: The calling convention this module speaks (``MMRSA_RSA_PRODUCTS_ABI`` in
#: the C source); a library that reports another one is not used.
ABI = 8

#: The dtypes the library reads and writes: the filtered key and value (and
#: their gradients) have one of them, the query and the output (and their
#: gradients) one of them; P1 and I are float32. Every sum is float32.
DTYPES = (torch.float32, torch.bfloat16)

#: Why the library was given up in this process, or None.
_failure: Optional[str] = None

#: Set inside :func:`disabled`.
_disabled = False


def _library_path() -> Optional[str]:
    package = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    for suffix in EXTENSION_SUFFIXES:
        path = osp.join(package, _LIBRARY_STEM + suffix)
        if osp.isfile(path):
            return path
    return None


@functools.lru_cache(maxsize=None)
def _load() -> 'tuple[Optional[ctypes.CDLL], str]':
    """The library and a one-line status."""
    path = _library_path()
    if path is None:
        return None, ('not built (no mmrsa/_rsa_products*.so: reinstall '
                      'mmrsa where a C compiler with OpenMP is found)')
    try:
        library = ctypes.CDLL(path)
        function = library.mmrsa_rsa_products_f32
        abi = library.mmrsa_rsa_products_abi
    except (OSError, AttributeError) as error:
        return None, (f'{path} could not be loaded ({error}); reinstall '
                      f'mmrsa to rebuild it')
    abi.restype, abi.argtypes = ctypes.c_int, []
    if abi() != ABI:
        return None, (f'{path} was built from another version of '
                      f'mmrsa/csrc/rsa_products.c (calling convention '
                      f'{abi()}, this code speaks {ABI}); reinstall mmrsa '
                      f'(pip install -e .) to rebuild it')
    pointer, size = ctypes.c_void_p, ctypes.c_ssize_t
    operands = ([pointer] + [size] * 4  # q and its strides (N, T, C, HW)
                + [pointer] + [size] * 3  # key (position, Cq, D)
                + [pointer] + [size] * 3  # value (position, Cq, D + Cq)
                + [pointer] * 2)  # P1, I
    # N, T, HW, L, Cq, D; normalise, eps, bfloat16 operands (bits: key and
    # value 1, query and output 2), threads
    sizes = [size] * 6 + [ctypes.c_int, ctypes.c_float] + [ctypes.c_int] * 2
    function.restype = ctypes.c_int
    function.argtypes = (
        operands + [pointer] + [size] * 3  # out (N, T, C)
        + sizes)
    backward = library.mmrsa_rsa_products_backward_f32
    backward.restype = ctypes.c_int
    backward.argtypes = (
        operands + [pointer] + [size] * 4  # gradient of out (N, T, C, HW)
        + [pointer] + [size] * 3  # gradient of q (N, T, C)
        + [pointer] + [size] * 3  # gradient of key
        + [pointer] + [size] * 3  # gradient of value
        + sizes)
    conv = library.mmrsa_channel_conv_f32
    conv.restype = ctypes.c_int
    conv.argtypes = ([pointer] + [size] * 2  # x and its strides (N, C)
                     + [pointer]  # filters
                     + [pointer] + [size] * 5  # out (N, T, H, W, C)
                     + [size] * 10  # N, C, T, H, W, banks, O, kt, kh, kw
                     + [ctypes.c_int])  # threads
    wgrad = library.mmrsa_channel_conv_wgrad_f32
    wgrad.restype = ctypes.c_int
    wgrad.argtypes = ([pointer] + [size] * 2  # x and its strides (N, C)
                      + [pointer] + [size] * 5  # dout (N, T, H, W, C)
                      + [pointer]  # dweight
                      + [size] * 10  # N, C, T, H, W, banks, O, kt, kh, kw
                      + [ctypes.c_int])  # threads
    dgrad = library.mmrsa_channel_conv_dgrad_f32
    dgrad.restype = ctypes.c_int
    dgrad.argtypes = ([pointer] + [size] * 5  # dout (N, T, H, W, C)
                      + [pointer]  # filters
                      + [pointer] + [size] * 2  # dx and its strides (N, C)
                      + [size] * 10  # N, C, T, H, W, banks, O, kt, kh, kw
                      + [ctypes.c_int])  # threads
    return library, f'built ({osp.basename(path)})'


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Keep every RSA layer on the PyTorch path inside the block (as
    :data:`DISABLE_ENV` does for a process), e.g. to time both side by
    side."""
    global _disabled
    previous, _disabled = _disabled, True
    try:
        yield
    finally:
        _disabled = previous


def native_status() -> str:
    """Whether the native products run, in words (for logs and tools)."""
    if os.environ.get(DISABLE_ENV, '0') == '1':
        return f'switched off ({DISABLE_ENV}=1)'
    if _disabled:
        return 'switched off (rsa_native.disabled())'
    if _failure is not None:
        return f'given up in this process ({_failure})'
    return _load()[1]


def native_available() -> bool:
    """Whether the library is built, loadable, not switched off (with
    :data:`DISABLE_ENV` or :func:`disabled`) and has not failed in this
    process."""
    return (os.environ.get(DISABLE_ENV, '0') != '1' and not _disabled
            and _failure is None and _load()[0] is not None)


def _as_pointer(x: Optional[torch.Tensor]) -> Optional[int]:
    return None if x is None else x.data_ptr()


def _check_operands(q: torch.Tensor,
                    key: torch.Tensor,
                    value: torch.Tensor,
                    p1: Optional[torch.Tensor],
                    eye: Optional[torch.Tensor],
                    out: torch.Tensor,
                    num_queries: int,
                    written: bool = True) -> None:
    """Raise a ValueError naming the expected operands unless they fit;
    ``out`` needs a unit stride in HW where it is ``written``."""
    n, t, channels, hw = q.shape
    nq, cq = num_queries, channels // max(num_queries, 1)
    positions, dim = n * t * hw, key.shape[-1]
    tensors = (q, key, value, p1, eye, out)
    floats = (p1, eye)
    if (nq % MIN_QUERIES or channels != nq * cq
            or tuple(key.shape) != (positions, cq, dim)
            or tuple(value.shape) != (positions, cq, dim + cq)
            or tuple(out.shape) != (n, t, cq * nq, hw)
            or (written and hw > 1 and out.stride(3) != 1)
            or any(x is not None and x.device.type != 'cpu' for x in tensors)
            or any(x is not None and x.dtype != torch.float32 for x in floats)
            or key.dtype not in DTYPES or value.dtype != key.dtype
            or q.dtype not in DTYPES or out.dtype != q.dtype):
        got = [
            None if x is None else (tuple(x.shape), str(x.dtype))
            for x in tensors
        ]
        raise ValueError(
            f'native_products expects CPU tensors: q [N, T, L*Cq, HW], out '
            f'[N, T, Cq*L, HW] with a unit stride in HW, L a multiple of '
            f'{MIN_QUERIES}, key [N*T*HW, Cq, D] and value [N*T*HW, Cq, '
            f'D + Cq] (both float32 or both bfloat16, and so q and out; P1 '
            f'and I float32); '
            f'got L={num_queries} and {got}.')


def _call(function: str, q: torch.Tensor, key: torch.Tensor,
          value: torch.Tensor, p1: Optional[torch.Tensor],
          eye: Optional[torch.Tensor], outputs: list, num_queries: int,
          query_eps: Optional[float]) -> int:
    """Call the library's ``function`` on checked operands: q, key, value,
    P1 and I, then ``outputs`` (pointers and strides), then the sizes, the
    normalisation and PyTorch's thread count. Returns its status."""
    library = _load()[0]
    if library is None:
        raise RuntimeError(f'the native RSA products are {native_status()}')
    n, t, channels, hw = q.shape
    p1, eye = _fixed(p1), _fixed(eye)  # referenced until the call returns
    return getattr(library, function)(
        q.data_ptr(), *q.stride(), key.data_ptr(), *key.stride(),
        value.data_ptr(), *value.stride(), _as_pointer(p1), _as_pointer(eye),
        *outputs, n, t, hw, num_queries, channels // num_queries,
        key.shape[-1], int(query_eps is not None), query_eps or 0.0,
        int(key.dtype == torch.bfloat16) + 2 * int(q.dtype == torch.bfloat16),
        torch.get_num_threads())


def _fixed(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``P1``/``I`` as the library reads them: contiguous, no autograd."""
    return None if x is None else x.detach().contiguous()


def _give_up(status: int, fallback: bool) -> bool:
    """After a failed call: raise, or (``fallback``) warn once, give the
    library up for the process and return False."""
    global _failure
    reason = ('the library ran out of memory for its scratch buffers'
              if status == 2 else f'the library returned {status}')
    if not fallback:
        raise RuntimeError(f'native RSA products failed: {reason}')
    _failure = reason
    warnings.warn(
        f'RSA: the native CPU products failed ({reason}); the RSA layers '
        f'compute them in PyTorch for the rest of this process.',
        RuntimeWarning,
        stacklevel=3)
    return False


def native_products(q: torch.Tensor,
                    key: torch.Tensor,
                    value: torch.Tensor,
                    p1: Optional[torch.Tensor],
                    eye: Optional[torch.Tensor],
                    out: torch.Tensor,
                    *,
                    num_queries: int,
                    query_eps: Optional[float] = None,
                    fallback: bool = True) -> bool:
    """The per-position products of Eq. 12, written into ``out`` (no
    autograd: see :func:`products` for a differentiable form).

    ``q`` and ``out`` are views in the layout the layer holds them in (a
    clip ``[N, C, T, H, W]`` or frames ``[N*T, C, H, W]``, channels-last
    too for ``q``) seen as ``[N, T, C, H*W]``: any strides, except a unit
    stride within a frame of ``out``.

    Args:
        q (torch.Tensor): Query ``[N, T, L*Cq, H*W]`` (channel
            ``l * Cq + c``), float32 or bfloat16 (:data:`DTYPES`: widened on
            the way in, every sum is float32).
        key (torch.Tensor): The key filtered by ``H1``, positions first
            ``[N*T*H*W, Cq, D]``, any strides, float32 or bfloat16.
        value (torch.Tensor): The value filtered by ``H2`` and ``G``
            ``[N*T*H*W, Cq, D + Cq]``, any strides, the dtype of ``key``.
        p1 (torch.Tensor, optional): ``P1`` ``[Cq, D]``, added to ``key``.
        eye (torch.Tensor, optional): ``I`` ``[Cq, Cq]``, added to the
            relational context.
        out (torch.Tensor): ``y`` ``[N, T, Cq*L, H*W]`` (channel
            ``c * L + l`` for value channel ``c`` and query ``l``),
            written, the dtype of ``q`` (bfloat16: rounded to nearest
            even).
        num_queries (int): L, a multiple of :data:`MIN_QUERIES`.
        query_eps (float, optional): L2-normalise each query over its Cq
            channels on the way in, ``q / sqrt(sum(q ** 2) + eps)``; None
            when ``q`` is normalised already. Defaults to None.
        fallback (bool): On a failure of the library (memory), warn once,
            give it up for the process and return False (the caller computes
            the products in PyTorch); otherwise raise. Defaults to True.

    Returns:
        bool: True when ``out`` holds the result.
    """
    _check_operands(q, key, value, p1, eye, out, num_queries)
    status = _call('mmrsa_rsa_products_f32', q, key, value, p1, eye,
                   [out.data_ptr(), *out.stride()[:3]], num_queries, query_eps)
    return status == 0 or _give_up(status, fallback)


def native_products_backward(
    q: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    p1: Optional[torch.Tensor], eye: Optional[torch.Tensor],
    grad: torch.Tensor, *, num_queries: int, query_eps: Optional[float]
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of :func:`native_products` with respect to ``q``
    (before the normalisation, with ``query_eps``), ``key`` and ``value``,
    given ``grad``, that of ``out`` (``[N, T, Cq*L, H*W]``, any strides).
    Those of ``P1`` and ``I`` are the sums over the positions of the
    gradients of ``key`` and of the value's last Cq filters. Every gradient
    has the dtype of its operand (bfloat16 ones are rounded to nearest even
    from float32 sums); ``grad`` has the dtype of ``q``.

    Returns:
        tuple[torch.Tensor]: ``[N, T, L*Cq, H*W]`` (contiguous), and
        gradients with the shapes and strides of ``key`` and ``value``.

    Raises:
        RuntimeError: If the library is not available or fails.
    """
    _check_operands(q, key, value, p1, eye, grad, num_queries, written=False)
    grad_q = torch.empty(q.shape, dtype=q.dtype)
    # empty_like keeps the strides of a dense layout
    grad_key, grad_value = torch.empty_like(key), torch.empty_like(value)
    outputs = [
        grad.data_ptr(), *grad.stride(),
        grad_q.data_ptr(), *grad_q.stride()[:3],
        grad_key.data_ptr(), *grad_key.stride(),
        grad_value.data_ptr(), *grad_value.stride()
    ]
    status = _call('mmrsa_rsa_products_backward_f32', q, key, value, p1, eye,
                   outputs, num_queries, query_eps)
    if status != 0:
        _give_up(status, fallback=False)
    return grad_q, grad_key, grad_value


class _Failed(Exception):
    """The library failed in a forward pass (and warned)."""


class _Products(torch.autograd.Function):
    """:func:`native_products` into a new output, differentiable."""

    @staticmethod
    def forward(ctx, q, key, value, p1, eye, layout, num_queries, query_eps,
                fallback):
        out, view = _new_output(q, layout)
        if not native_products(
                q,
                key,
                value,
                p1,
                eye,
                view,
                num_queries=num_queries,
                query_eps=query_eps,
                fallback=fallback):
            raise _Failed
        ctx.save_for_backward(q, key, value, p1, eye)
        ctx.layout, ctx.num_queries = layout, num_queries
        ctx.query_eps = query_eps
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        q, key, value, p1, eye = ctx.saved_tensors
        grad_q, grad_key, grad_value = native_products_backward(
            q,
            key,
            value,
            p1,
            eye,
            _output_view(grad.to(q.dtype), q.shape, ctx.layout),
            num_queries=ctx.num_queries,
            query_eps=ctx.query_eps)
        grad_p1 = grad_eye = None
        if ctx.needs_input_grad[3]:
            grad_p1 = grad_key.sum(0, dtype=torch.float32)
        if ctx.needs_input_grad[4]:
            grad_eye = grad_value[:, :, key.shape[-1]:].sum(
                0, dtype=torch.float32)
        return (grad_q, grad_key, grad_value, grad_p1, grad_eye, None, None,
                None, None)


#: Output layouts of :func:`products`.
LAYOUTS = ('clips', 'frames')


def _output_view(out: torch.Tensor, q_shape, layout: str) -> torch.Tensor:
    """``out`` in its layout (:data:`LAYOUTS`) seen as ``[N, T, C, H*W]``."""
    n, t, _, hw = q_shape
    if layout == 'frames':  # [N*T, C, H, W]
        return out.reshape(n, t, -1, hw)
    # [N, C, T, H, W] -> [N, C, T, HW] -> [N, T, C, HW]
    return out.reshape(n, -1, t, hw).transpose(1, 2)


def _new_output(q: torch.Tensor, layout: str):
    """A new output for the query ``q`` ``[N, T, C, HW]`` in ``layout``
    (without the spatial sizes: ``[N*T, C, HW]`` or ``[N, C, T, HW]``)
    and its ``[N, T, C, H*W]`` view."""
    n, t, channels, hw = q.shape
    if layout == 'frames':
        out = q.new_empty(n * t, channels, hw)
    else:
        out = q.new_empty(n, channels, t, hw)
    return out, _output_view(out, q.shape, layout)


def products(q: torch.Tensor,
             key: torch.Tensor,
             value: torch.Tensor,
             p1: Optional[torch.Tensor],
             eye: Optional[torch.Tensor],
             *,
             layout: str,
             num_queries: int,
             query_eps: Optional[float] = None,
             fallback: bool = True) -> Optional[torch.Tensor]:
    """:func:`native_products` into a new output, differentiable with respect
    to ``q``, ``key``, ``value``, ``P1`` and ``I`` (the backward pass runs in
    the library too).

    Args:
        q, key, value, p1, eye: As for :func:`native_products`.
        layout (str): Of the output: ``'frames'`` ``[N*T, Cq*L, H*W]`` or
            ``'clips'`` ``[N, Cq*L, T, H*W]`` (reshape to the spatial
            sizes).
        num_queries, query_eps, fallback: As for :func:`native_products`.

    Returns:
        torch.Tensor | None: The output, or None after a failure with
        ``fallback`` (the library then warned and was given up).
    """
    if layout not in LAYOUTS:
        raise ValueError(f'layout must be one of {LAYOUTS}, got {layout!r}')
    if torch.is_grad_enabled() and any(
            x is not None and x.requires_grad
            for x in (q, key, value, p1, eye)):
        try:
            return _Products.apply(q, key, value, p1, eye, layout, num_queries,
                                   query_eps, fallback)
        except _Failed:
            return None
    out, view = _new_output(q, layout)
    done = native_products(
        q,
        key,
        value,
        p1,
        eye,
        view,
        num_queries=num_queries,
        query_eps=query_eps,
        fallback=fallback)
    return out if done else None


# ---------------------------------------------------------------------- #
# single-channel convolutions (forward pass, filters' gradient)
# ---------------------------------------------------------------------- #
def channel_conv(x: torch.Tensor,
                 weight: torch.Tensor,
                 padding: Tuple[int, int, int],
                 *,
                 layout: str = 'positions',
                 fallback: bool = True) -> Optional[torch.Tensor]:
    """:func:`~mmrsa.models.common.rsa_ops.channel_conv3d` in the library
    (``mmrsa/csrc/channel_conv.c``), without autograd (in inference, and in
    the forward pass of ``channel_conv3d``'s autograd function):
    every channel ``c`` of ``x`` filtered by the ``O`` filters of bank
    ``c // (C / banks)``, stride 1, zero padding of half the kernel.

    The library computes the outputs in tiles of up to 8 positions times up
    to 64 filters held in registers and skips the neighbours outside the
    clip; for ``H1`` (one bank of ``D`` filters per channel) this is faster
    than PyTorch's forms (docs/benchmarks.md). The sums run in another
    order than oneDNN's: equal within float32 rounding.

    Args:
        x (torch.Tensor): ``[N, C, T, H, W]``, float32, CPU; each channel
            of a clip contiguous (other strides are copied first).
        weight (torch.Tensor): ``[banks, O, kt, kh, kw]``, float32, odd
            kernel sizes, ``banks`` dividing ``C``, ``O`` a multiple of 8.
        padding (tuple[int]): Half the kernel, ``(kt // 2, kh // 2,
            kw // 2)``.
        layout (str): Of the output, see Returns: ``'positions'`` or
            ``'channels'``. Defaults to ``'positions'``.
        fallback (bool): On a failure of the library (memory), warn once,
            give it up for the process and return None; otherwise raise.
            Defaults to True.

    Returns:
        torch.Tensor | None: ``[N*T*H*W, C, O]`` (``'positions'``) or
        ``[C, N, T, H, W, O]`` (``'channels'``, the ``channels_last`` output
        of ``channel_conv3d``), contiguous; None where the
        library is not available or does not apply (other sizes, dtypes,
        devices, padding; gradients required), or after a failure with
        ``fallback``.
    """
    if not channel_conv_applies(x, weight, padding):
        return None
    n, c, t, h, w = x.shape
    banks, o, kt, kh, kw = weight.shape
    if x.stride()[2:] != (h * w, w, 1):
        x = x.contiguous()
    # [banks, O, kt, kh, kw] -> [banks, kt, kh, kw, O]: a tap's O filters
    # are one vector
    filters = weight.detach().permute(0, 2, 3, 4, 1).contiguous()
    if layout == 'positions':
        out = x.new_empty(n * t * h * w, c, o)
        view = out.view(n, t, h, w, c, o)
    elif layout == 'channels':
        out = x.new_empty(c, n, t, h, w, o)
        view = out.permute(1, 2, 3, 4, 0, 5)
    else:
        raise ValueError(f"layout must be 'positions' or 'channels', got "
                         f'{layout!r}')
    status = _load()[0].mmrsa_channel_conv_f32(x.data_ptr(), x.stride(0),
                                               x.stride(1), filters.data_ptr(),
                                               view.data_ptr(),
                                               *view.stride()[:5], n, c, t, h,
                                               w, banks, o, kt, kh, kw,
                                               torch.get_num_threads())
    if status != 0:
        _give_up(status, fallback)
        return None
    return out


def _conv_operands_apply(data: torch.Tensor, channels: int,
                         weight: torch.Tensor, padding: Tuple[int, int,
                                                              int]) -> bool:
    """What the library's convolutions need of ``data`` (the input or the
    output's gradient) with ``channels`` channels and of the filters
    ``weight`` ``[banks, O, kt, kh, kw]``: float32 on the CPU, ``banks``
    dividing the channels, O a multiple of 8, odd kernels padded by half."""
    return (native_available() and weight.dim() == 5
            and data.device.type == weight.device.type == 'cpu'
            and data.dtype == weight.dtype == torch.float32
            and data.numel() > 0 and weight.numel() > 0
            and channels % weight.shape[0] == 0 and weight.shape[1] % 8 == 0
            and all(k % 2 == 1 and int(p) == k // 2
                    for k, p in zip(weight.shape[2:], padding)))


def channel_conv_applies(x: torch.Tensor, weight: torch.Tensor,
                         padding: Tuple[int, int, int]) -> bool:
    """Whether :func:`channel_conv` runs on these operands (see there)."""
    return (x.dim() == 5
            and _conv_operands_apply(x, x.shape[1], weight, padding)
            and not (torch.is_grad_enabled() and
                     (x.requires_grad or weight.requires_grad))
            and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and not torch.compiler.is_compiling())


def channel_conv_weight_grad(x: torch.Tensor, grad: torch.Tensor,
                             weight_shape: Tuple[int, ...]) -> torch.Tensor:
    """The gradient of the filters of :func:`channel_conv` (``'channels'``
    layout) in the library, given the input ``x`` and the gradient of the
    output ``grad``; the backward pass of ``channel_conv3d`` on the native
    path calls it where :func:`channel_conv` computed the forward pass.

    Each thread sums whole rows of one bank's taps over the bank's channels
    and the positions, so the result does not depend on the number of
    threads; the order of the sums is not oneDNN's (equal within float32
    rounding).

    Args:
        x (torch.Tensor): ``[N, C, T, H, W]``, float32, each channel of a
            clip contiguous.
        grad (torch.Tensor): ``[C, N, T, H, W, O]``, float32, a unit stride
            along ``O``.
        weight_shape (tuple[int]): ``(banks, O, kt, kh, kw)``.

    Returns:
        torch.Tensor: ``[banks, O, kt, kh, kw]``.

    Raises:
        RuntimeError: If the library is not available or fails.
    """
    banks, o, kt, kh, kw = (int(size) for size in weight_shape)
    n, c, t, h, w = x.shape
    library = _load()[0]
    if library is None or grad.stride(-1) != 1 or x.stride()[2:] != (h * w, w,
                                                                     1):
        raise RuntimeError(
            f'channel_conv_weight_grad needs the native library (it is '
            f'{native_status()}), x with contiguous channels and a gradient '
            f'with a unit stride along O')
    view = grad.permute(1, 2, 3, 4, 0, 5)  # (n, t, h, w, c, o)
    dweight = x.new_empty(banks, kt, kh, kw, o)
    status = library.mmrsa_channel_conv_wgrad_f32(x.data_ptr(), x.stride(0),
                                                  x.stride(1), view.data_ptr(),
                                                  *view.stride()[:5],
                                                  dweight.data_ptr(), n, c, t,
                                                  h, w, banks, o, kt, kh, kw,
                                                  torch.get_num_threads())
    if status != 0:
        _give_up(status, fallback=False)
    return dweight.permute(0, 4, 1, 2, 3)


#: The widest kernel along W of :func:`channel_conv_input_grad`.
MAX_INPUT_GRAD_TAPS = 7


def channel_conv_input_grad_applies(grad: torch.Tensor, weight: torch.Tensor,
                                    padding: Tuple[int, int, int]) -> bool:
    """Whether :func:`channel_conv_input_grad` computes the input's
    gradient for this output gradient ``[C, N, T, H, W, O]`` and these
    filters: as :func:`channel_conv_applies`, with kernels at most
    :data:`MAX_INPUT_GRAD_TAPS` wide."""
    return (grad.dim() == 6
            and _conv_operands_apply(grad, grad.shape[0], weight, padding)
            and grad.shape[-1] == weight.shape[1]
            and weight.shape[-1] <= MAX_INPUT_GRAD_TAPS)


def channel_conv_input_grad(grad: torch.Tensor,
                            weight: torch.Tensor) -> torch.Tensor:
    """The gradient of the input of :func:`channel_conv` (``'channels'``
    layout) in the library, given the filters and the gradient of the
    output; the backward pass of ``channel_conv3d`` on the native path
    calls it where :func:`channel_conv_input_grad_applies`.

    Each gradient vector of O values is loaded once for the 7 taps along W
    that read it, with their filters in registers; PyTorch computes the same
    gradient as a depthwise convolution of the O gradient maps and a sum
    over them (an intermediate O times the input's size). Each thread sums
    whole channels of a sample, so the result does not depend on the number
    of threads; equal to PyTorch's within float32 rounding.

    Args:
        grad (torch.Tensor): ``[C, N, T, H, W, O]``, float32, a unit stride
            along ``O``.
        weight (torch.Tensor): ``[banks, O, kt, kh, kw]``.

    Returns:
        torch.Tensor: ``[N, C, T, H, W]`` (a view of a contiguous
        ``[C, N, T, H, W]``).

    Raises:
        RuntimeError: If the library is not available, does not apply or
            fails.
    """
    library = _load()[0]
    padding = tuple(k // 2 for k in weight.shape[2:])
    if (library is None or grad.stride(-1) != 1
            or not channel_conv_input_grad_applies(grad, weight, padding)):
        raise RuntimeError(
            f'channel_conv_input_grad needs the native library (it is '
            f'{native_status()}), a float32 gradient [C, N, T, H, W, O] '
            f'with a unit stride along O and filters it computes (see '
            f'channel_conv_input_grad_applies), got {tuple(grad.shape)}, '
            f'{tuple(grad.stride())} and {tuple(weight.shape)}')
    c, n, t, h, w, o = grad.shape
    banks, _, kt, kh, kw = weight.shape
    # [banks, O, kt, kh, kw] -> [banks, kt, kh, kw, O], as channel_conv
    filters = weight.detach().permute(0, 2, 3, 4, 1).contiguous()
    view = grad.permute(1, 2, 3, 4, 0, 5)  # (n, t, h, w, c, o)
    dx = grad.new_empty(c, n, t, h, w)
    status = library.mmrsa_channel_conv_dgrad_f32(view.data_ptr(),
                                                  *view.stride()[:5],
                                                  filters.data_ptr(),
                                                  dx.data_ptr(), dx.stride(1),
                                                  dx.stride(0), n, c, t, h, w,
                                                  banks, o, kt, kh, kw,
                                                  torch.get_num_threads())
    if status != 0:
        _give_up(status, fallback=False)
    return dx.transpose(0, 1)
