# Copyright (c) mmrsa contributors. All rights reserved.
"""Fast primitives of the RSA layer (pure torch).

The efficient form of RSA (Eq. 12) spends its time in two kinds of
operations that PyTorch's generic kernels handle poorly on CPU:

- **Single-channel convolutions** (``H1``, ``H2`` and ``G``): every channel
  of the key or value map is filtered by a bank of ``O`` single-channel
  ``kt x kh x kw`` filters. As a grouped ``conv3d`` the forward pass is slow,
  and for any single-input-channel convolution oneDNN's input gradient is
  slow. :func:`channel_conv3d` runs the forward as ``1 -> O`` convolutions
  (fast) and computes the input gradient as a depthwise convolution of the
  output gradient with the flipped filters followed by a sum over the ``O``
  filters, which is the same product in another order.
- **Tiny per-position matrix products** (the kernel, context and output
  contractions): on millions of ``8 x 8`` products CPU ``bmm`` is slow,
  whether it hands them to batched GEMM or (for strided inputs) loops over
  the matrices one by one. :func:`per_position_matmul` keeps the positions
  as the last, contiguous dimension and loops over the (short) contracted
  dimension, so every step is one vectorised multiply-add over all
  positions. From about ``32 x 32`` matrices on, ``bmm`` on contiguous
  per-position matrices wins again (:func:`use_position_loops` decides);
  :func:`contiguous_grad` keeps its backward off the slow strided path.

Both are :class:`torch.autograd.Function` s with hand-written backward passes.
The multiply-add count is the same as that of the plain operations they
replace. FLOP counters that trace the model (MMEngine's ``FlopAnalyzer``
traces with :func:`torch.jit.trace`) cannot see inside an autograd
function, so while tracing each primitive runs its plain equivalent
(``conv3d`` per filter bank / ``matmul``): the traced graph, and hence the
FLOP count, is that of the plain formulation, with the same result.
"""
import contextlib
import warnings
from typing import Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import rsa_native

__all__ = [
    'channel_conv3d', 'per_position_matmul', 'contiguous_grad',
    'use_position_loops', 'grouped_channel_conv3d', 'export_channel_conv3d',
    'taps_channel_conv', 'use_taps_conv'
]

#: Longest contracted dimension for which :func:`per_position_matmul` (a
#: loop of vectorised multiply-adds) beats batched matrix multiplication on
#: CPU; measured for the RSANet stage shapes (``8 x 16 @ 16 x 16`` products
#: favour the loop by 1.5-3x, ``32 x 32 @ 32 x 32`` favour ``bmm`` by 2x).
MAX_LOOP_CONTRACTION = 16

#: Fewest filters per bank for which :func:`channel_conv3d` computes its
#: half-precision weight gradient in half precision; below, oneDNN's
#: bfloat16 kernel is far slower than float32 (measured 5-100x for 8 filters
#: on a 2-core AVX512-BF16 CPU), so it runs in float32.
MIN_HALF_WGRAD_FILTERS = 16

#: Fewest filters per bank for which :func:`channel_conv3d` on the native
#: path (``native=True``) computes the filters' gradient in the library: at
#: the RSANet-R50 shapes (batch 2, T = 8, 2 threads) it took 6.8 and 6.5 ms
#: against oneDNN's 7.8 and 11.6 ms with 32 and 64 filters, but 12.2 and
#: 8.0 ms against 10.9 and 6.2 ms with 8 and 16 (its tiles of one vector of
#: filters are bound by the loads).
MIN_NATIVE_WGRAD_FILTERS = 32

#: Fewest filters of a single bank (the value filters ``H2`` and ``G``) for
#: which :func:`channel_conv3d` on the native path computes the input's
#: gradient in the library; with several banks (``H1``) it always does. At
#: the RSANet-R50 shapes (batch 2, T = 8, 2 threads; forward + input
#: gradient, oneDNN's depthwise form against the library) one bank of 64
#: and 128 filters took 29.7 -> 26.1 and 29.2 -> 25.2 ms, but 16 and 32
#: filters 28.5 -> 30.3 and 29.5 -> 30.1 ms; ``H1`` 18.4-29.2 -> 16.2-21.5 ms.
MIN_NATIVE_DGRAD_FILTERS = 64

#: Filters per bank from which :func:`channel_conv3d` computes a
#: multi-bank convolution (``H1``) without gradients (inference, float32) as
#: one grouped 2D convolution over temporal taps
#: (:func:`taps_channel_conv`) rather than one ``1 -> O`` convolution per
#: bank: oneDNN's grouped kernels are fast when each group's outputs fill
#: whole vectors (measured 2-3x faster than the bank loop and than a grouped
#: ``conv3d`` at the RSANet-R50 stage shapes with 16, 32 and 64 filters), and
#: no faster below (8 filters: even with the loop, a grouped ``conv3d`` 5x
#: slower). Training keeps the bank loop, whose backward is tuned.
MIN_GROUPED_FILTERS = 16


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting()


@contextlib.contextmanager
def _static_structure() -> Iterator[None]:
    """While tracing, the primitives branch on the number of filter banks
    and on the layout, which the trace then records as constants, as it
    should; silence the tracer's warning about reading sizes as Python
    values."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        yield


def use_position_loops(x: torch.Tensor, *sizes: int) -> bool:
    """Whether per-position products of matrices with ``sizes`` should use
    :func:`per_position_matmul` (CPU, every size at most
    :data:`MAX_LOOP_CONTRACTION`, float32 or float64) rather than batched
    ``bmm``.

    Without gradients (inference) ``bmm`` wins as well, see below.

    In half precision (a half-precision ``x`` or CPU autocast to one) the
    loops would sum float32 copies of every operand, while ``bmm`` runs
    bfloat16 kernels that sum in float32: ``bmm`` is faster there (measured
    x0.66-0.68 the layer time at the RSANet-R50 stage shapes with Cq = 8
    and 16, bf16 autocast) and keeps fewer bytes for backward.
    """
    if x.device.type != 'cpu' or max(sizes) > MAX_LOOP_CONTRACTION:
        return False
    if not torch.is_grad_enabled() and not _tracing():
        # inference: with nothing kept for backward, bmm on contiguous
        # per-position matrices wins (measured x0.56 the layer time at
        # 128@28, x0.94 at 64@56, N = 2, T = 8); traced graphs keep the
        # loops' formulation
        return False
    half = (torch.bfloat16, torch.float16)
    return not (x.dtype in half or
                (torch.is_autocast_enabled('cpu')
                 and torch.get_autocast_dtype('cpu') in half))


# ---------------------------------------------------------------------- #
# single-channel convolutions
# ---------------------------------------------------------------------- #
def _conv_batch(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``[N, C, T, H, W]`` -> one-channel batch ``[B, 1, T, H, W]``.

    With ``channels_last`` the batch runs over (c, n) and has channels-last
    strides, so that a convolution writes its ``O`` outputs innermost;
    otherwise it runs over (n, c) and is contiguous.
    """
    n, c, t, h, w = x.shape
    if not channels_last:
        return x.reshape(n * c, 1, t, h, w)
    if _tracing():
        # The same values (strides aside), in ops that every exporter
        # knows; the TorchScript-based ONNX exporter has no empty_strided.
        # [N, C, T, H, W] -> [C, N, T, H, W] -> [C*N, 1, T, H, W]
        return x.transpose(0, 1).reshape(c * n, 1, t, h, w)
    out = torch.empty_strided((c * n, 1, t, h, w), (t * h * w, 1, h * w, w, 1),
                              dtype=x.dtype,
                              device=x.device)
    # [N, C, T, H, W] -> [C, N, T, H, W]
    out.view(c, n, t, h, w).copy_(x.transpose(0, 1))
    return out


def _bank_rows(batch: torch.Tensor, bank: int, banks: int, n: int,
               channels_last: bool) -> torch.Tensor:
    """The rows of a batch laid out by :func:`_conv_batch` (``[B, ...]``)
    that filter bank ``bank`` of ``banks`` reads or writes."""
    if banks == 1:
        return batch
    rows = batch.shape[0] // banks  # channels per bank times N
    if channels_last or (not _tracing() and n == 1):  # contiguous rows
        return batch[bank * rows:(bank + 1) * rows]
    # batch order (n, c): [N*C, ...] -> [N, C, ...] -> [N*group, ...]
    group = rows // n
    per_sample = batch.view(n, -1, *batch.shape[1:])
    return per_sample[:, bank * group:(bank + 1) * group].reshape(
        rows, *batch.shape[1:])


def _join_banks(parts, n: int, channels_last: bool) -> torch.Tensor:
    """Inverse of :func:`_bank_rows`: one ``[rows, ...]`` part per bank ->
    ``[B, ...]`` in the order of :func:`_conv_batch`."""
    if len(parts) == 1:
        return parts[0]
    if channels_last or (not _tracing() and n == 1):
        return torch.cat(parts)
    # banks x [N*group, ...] -> [N, C, ...] -> [N*C, ...]
    out = torch.cat([p.view(n, -1, *p.shape[1:]) for p in parts], dim=1)
    return out.view(-1, *out.shape[2:])


def _channel_conv_forward(
        x: torch.Tensor, weight: torch.Tensor, padding: Tuple[int, int, int],
        channels_last: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Plain-op forward of :func:`channel_conv3d`; also returns the
    one-channel input batch (what the backward pass needs)."""
    n, c, t, h, w = x.shape
    banks, o = weight.shape[:2]
    xb = _conv_batch(x, channels_last)  # [B, 1, T, H, W]
    # per bank: [rows, 1, T, H, W] -> [rows, O, T, H, W]
    y = _join_banks([
        F.conv3d(
            _bank_rows(xb, g, banks, n, channels_last),
            weight[g].unsqueeze(1),
            padding=padding) for g in range(banks)
    ], n, channels_last)
    if channels_last:
        # [(C, N), O, T, H, W] (channels-last) -> [C, N, T, H, W, O]
        return y.permute(0, 2, 3, 4, 1).reshape(c, n, t, h, w, o), xb
    # [(N, C), O, T, H, W] -> [N, C, O, T, H, W]
    return y.view(n, c, o, t, h, w), xb


class _ChannelConv3d(torch.autograd.Function):
    """:func:`channel_conv3d` with a backward pass that avoids oneDNN's slow
    input gradient of single-channel convolutions."""

    @staticmethod
    def forward(ctx, x, weight, padding, channels_last, native):
        # the weight's own strides (of the parameter it views), which its
        # gradient is given: DDP's buckets expect them, size-1 dims included
        ctx.weight_strides = torch.empty_like(weight, device='meta').stride()
        device = x.device.type
        if torch.is_autocast_enabled(device):
            # run (and save) in the autocast dtype, as F.conv3d would
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
        with torch.autocast(device, enabled=False):
            out = None
            if native and channels_last and weight.shape[0] > 1:
                # H1: the library's convolution, [C, N, T, H, W, O] (None
                # where it does not apply, e.g. in bfloat16); oneDNN's is as
                # fast for one bank (the value filters)
                out = rsa_native.channel_conv(
                    x, weight, padding, layout='channels')
            # the library computes the filters' gradient where it computed
            # the forward pass, and the input's wherever it applies
            ctx.native_forward = out is not None
            ctx.native = native and channels_last
            if out is None:
                out, xb = _channel_conv_forward(x, weight, padding,
                                                channels_last)
            else:
                xb = _conv_batch(x, channels_last)
        ctx.save_for_backward(xb, weight)
        ctx.padding, ctx.channels_last = padding, channels_last
        ctx.in_shape = x.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        xb, weight = ctx.saved_tensors
        padding, channels_last = ctx.padding, ctx.channels_last
        n, c, t, h, w = ctx.in_shape
        banks, o = weight.shape[:2]
        grad = grad_out = grad.to(xb.dtype)
        if channels_last:
            # [C, N, T, H, W, O] -> [(C, N), O, T, H, W], channels-last
            grad = grad.reshape(c * n, t, h, w, o).permute(0, 4, 1, 2, 3)
        else:
            # [N, C, O, T, H, W] -> [(N, C), O, T, H, W]
            grad = grad.reshape(n * c, o, t, h, w)

        grad_x = grad_w = None
        if ctx.needs_input_grad[1] and ctx.native_forward and (
                o >= MIN_NATIVE_WGRAD_FILTERS):
            # [(C, N), 1, T, H, W] (C outer) -> [N, C, T, H, W]; the
            # gradient [C, N, T, H, W, O]
            if grad_out.stride(-1) != 1:
                grad_out = grad_out.contiguous()
            grad_w = rsa_native.channel_conv_weight_grad(
                xb.view(c, n, t, h, w).transpose(0, 1), grad_out, weight.shape)
        elif ctx.needs_input_grad[1]:
            # oneDNN's weight gradient of a 1 -> O convolution is fast, but
            # in bfloat16 with fewer than 16 filters (H1 at Cq = 8) it is
            # 5-100x slower than in float32: compute those in float32
            wdtype = (
                torch.float32 if o < MIN_HALF_WGRAD_FILTERS
                and xb.dtype in (torch.bfloat16, torch.float16) else xb.dtype)
            grad_w = torch.stack([
                torch.ops.aten.convolution_backward(
                    _bank_rows(grad, g, banks, n, channels_last).to(wdtype),
                    _bank_rows(xb, g, banks, n, channels_last).to(wdtype),
                    weight[g].unsqueeze(1).to(wdtype), None, [1, 1, 1],
                    list(padding), [1, 1, 1], False, [0, 0, 0], 1,
                    [False, True, False])[1].squeeze(1) for g in range(banks)
            ]).to(weight.dtype)  # [banks, O, kt, kh, kw]
        if grad_w is not None and grad_w.stride() != ctx.weight_strides:
            grad_w = torch.empty_strided(
                grad_w.shape,
                ctx.weight_strides,
                dtype=grad_w.dtype,
                device=grad_w.device).copy_(grad_w)
        if ctx.needs_input_grad[0] and ctx.native and (
                banks > 1 or o >= MIN_NATIVE_DGRAD_FILTERS) and (
                    rsa_native.channel_conv_input_grad_applies(
                        grad_out, weight, padding)):
            # [C, N, T, H, W, O] -> [N, C, T, H, W], C outer as below
            if grad_out.stride(-1) != 1:
                grad_out = grad_out.contiguous()
            grad_x = rsa_native.channel_conv_input_grad(grad_out, weight)
        elif ctx.needs_input_grad[0]:
            # dx = sum_o corr(dy_o, flip(w_o)): a depthwise convolution of
            # the O gradient maps (fast in channels-last), then a sum
            grad = grad.contiguous(memory_format=torch.channels_last_3d)
            flipped = weight.flip(2, 3, 4).unsqueeze(2)  # [banks, O, 1, k..]
            # per bank: [rows, O, T, H, W] -> [rows, T, H, W]
            grad_x = _join_banks([
                F.conv3d(
                    _bank_rows(grad, g, banks, n, channels_last),
                    flipped[g],
                    padding=padding,
                    groups=o).sum(1) for g in range(banks)
            ], n, channels_last)
            if channels_last:  # [(C, N), T, H, W] -> [N, C, T, H, W]
                grad_x = grad_x.view(c, n, t, h, w).transpose(0, 1)
            else:  # [(N, C), T, H, W] -> [N, C, T, H, W]
                grad_x = grad_x.view(n, c, t, h, w)
        return grad_x, grad_w, None, None, None


def channel_conv3d(x: torch.Tensor,
                   weight: torch.Tensor,
                   padding: Sequence[int],
                   channels_last: bool = False,
                   native: bool = False) -> torch.Tensor:
    """Filter each channel of ``x`` with a bank of single-channel filters.

    Channel ``c`` is filtered by bank ``c // (C / banks)``; with one bank all
    channels share it (``H2``/``G``), with ``C`` banks each channel has its
    own (``H1``, Hadamard correlation), in between channels are grouped
    (``H1`` with ``corr_groups``). Stride 1, zero padding.

    Args:
        x (torch.Tensor): ``[N, C, T, H, W]``.
        weight (torch.Tensor): ``[banks, O, kt, kh, kw]``; ``banks``
            divides ``C``.
        padding (Sequence[int]): ``(pt, ph, pw)``, usually half the kernel.
        channels_last (bool): Output layout, see Returns. Defaults to False.
        native (bool): With ``channels_last``, use the native library
            where it applies (float32, 8 filters or a multiple, odd kernel):
            with several banks (``H1``) for the forward pass
            (:func:`~mmrsa.models.common.rsa_native.channel_conv`; it warns
            and falls back on a failure) and then, with
            :data:`MIN_NATIVE_WGRAD_FILTERS` filters or more, for the
            filters' gradient (:func:`rsa_native.channel_conv_weight_grad
            <mmrsa.models.common.rsa_native.channel_conv_weight_grad>`); with
            several banks, or one of :data:`MIN_NATIVE_DGRAD_FILTERS`
            filters or more, for the input's gradient
            (:func:`rsa_native.channel_conv_input_grad
            <mmrsa.models.common.rsa_native.channel_conv_input_grad>`, kernels
            up to 7 wide). Defaults to False.

    Returns:
        torch.Tensor: ``[N, C, O, T, H, W]`` (positions last), or
        ``[C, N, T, H, W, O]`` (filters innermost) with
        ``channels_last=True``.
    """
    padding = tuple(int(p) for p in padding)
    if _tracing():
        with _static_structure():
            return _channel_conv_forward(x, weight, padding, channels_last)[0]
    if x.dim() != 5 or weight.dim() != 5 or x.shape[1] % weight.shape[0]:
        raise ValueError(
            f'channel_conv3d expects x [N, C, T, H, W] and weight '
            f'[banks, O, kt, kh, kw] with banks dividing C, got '
            f'{tuple(x.shape)} and {tuple(weight.shape)}.')
    if use_taps_conv(x, weight):
        return _taps_inference(x, weight, padding, channels_last)
    return _ChannelConv3d.apply(x, weight, padding, channels_last, native)


def use_taps_conv(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`channel_conv3d` of ``x`` with ``weight`` runs as
    :func:`taps_channel_conv`: several filter banks (``H1``) of
    :data:`MIN_GROUPED_FILTERS` filters or a multiple, float32 on the CPU,
    nothing to differentiate (inference), not traced."""
    return (weight.shape[0] > 1 and weight.shape[1] % MIN_GROUPED_FILTERS == 0
            and x.device.type == 'cpu'
            and x.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled('cpu') and not _tracing()
            and not (torch.is_grad_enabled() and
                     (x.requires_grad or weight.requires_grad)))


def taps_channel_conv(x: torch.Tensor, weight: torch.Tensor,
                      padding: Sequence[int]) -> torch.Tensor:
    """:func:`channel_conv3d` as one grouped 2D convolution over temporal
    taps, positions first (on the CPU: for inference, and in bfloat16 under
    autocast with AMX, see :func:`~mmrsa.models.common.rsa.amx_filters`;
    autograd differentiates it).

    The ``kt`` frames around each frame of a channel become that channel's
    ``kt`` input channels (``[N*T, C*kt, H, W]``, channels-last), and every
    channel is a group with its bank's ``O`` filters ``[kt, kh, kw]``. oneDNN
    runs this grouped 2D convolution 2-3x faster than the grouped 3D one or
    the bank loop at the RSANet-R50 shapes with 16 filters or more per bank
    (``H1`` at stages 2-4), and its channels-last output is the
    positions-first matrix the per-position products read, with no
    transpose. The multiply-adds are those of :func:`channel_conv3d`; the
    taps cost one copy of ``kt`` times the input.

    Args:
        x (torch.Tensor): ``[N, C, T, H, W]``.
        weight (torch.Tensor): ``[banks, O, kt, kh, kw]``; ``banks``
            divides ``C``.
        padding (Sequence[int]): ``(pt, ph, pw)``, half the kernel.

    Returns:
        torch.Tensor: ``[N*T*H*W, C, O]``, contiguous.
    """
    n, c, t, h, w = x.shape
    banks, o, kt, kh, kw = weight.shape
    pt, ph, pw = (int(p) for p in padding)
    # zero frames around T: [N, C, T + 2*pt, H, W]
    frames = F.pad(x, (0, 0, 0, 0, pt, pt))
    # the kt shifted clips, taps innermost: [N, T, H, W, C, kt]
    taps = torch.stack(
        [frames[:, :, i:i + t].permute(0, 2, 3, 4, 1) for i in range(kt)],
        dim=-1)
    # [N, T, H, W, C*kt] -> [N*T, C*kt, H, W] with channels-last strides
    taps = taps.view(n * t, h, w, c * kt).permute(0, 3, 1, 2)
    if banks != c:  # channel c reads bank c // (C / banks)
        weight = weight.repeat_interleave(c // banks, dim=0)
    out = F.conv2d(
        taps, weight.reshape(c * o, kt, kh, kw), padding=(ph, pw), groups=c)
    # channels-last [N*T, C*O, H, W] -> [N*T*H*W, C, O]
    return out.permute(0, 2, 3, 1).reshape(-1, c, o)


def _taps_inference(x: torch.Tensor, weight: torch.Tensor,
                    padding: Sequence[int],
                    channels_last: bool) -> torch.Tensor:
    """:func:`channel_conv3d` without gradients through
    :func:`taps_channel_conv`, in :func:`channel_conv3d`'s output layout."""
    n, c, t, h, w = x.shape
    # [N*THW, C, O] -> [N, T, H, W, C, O]
    y = taps_channel_conv(x, weight, padding).view(n, t, h, w, c, -1)
    if channels_last:
        # -> [C, N, T, H, W, O]
        return y.permute(4, 0, 1, 2, 3, 5).contiguous()
    return y.permute(0, 4, 5, 1, 2, 3).contiguous()  # [N, C, O, T, H, W]


# ---------------------------------------------------------------------- #
# per-position matrix products
# ---------------------------------------------------------------------- #
def _position_loop(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_k a[:, :, k] * b[:, k]``, one multiply-add per ``k``."""
    # [N, m, 1, P] * [N, 1, n, P] -> [N, m, n, P]
    out = torch.mul(a[:, :, :1], b[:, :1])
    for i in range(1, a.shape[2]):
        out.addcmul_(a[:, :, i:i + 1], b[:, i:i + 1])
    return out


class _PerPositionMatmul(torch.autograd.Function):

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _position_loop(a, b)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:  # [m, n] @ [n, k]
            grad_a = _position_loop(grad, b.transpose(1, 2))
        if ctx.needs_input_grad[1]:  # [k, m] @ [m, n]
            grad_b = _position_loop(a.transpose(1, 2), grad)
        return grad_a, grad_b


def per_position_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One matrix product per position, positions last.

    ``out[:, i, j, p] = sum_k a[:, i, k, p] * b[:, k, j, p]``. Meant for
    short contractions (a few dozen terms) over many positions, where it
    beats ``bmm`` on CPU by a wide margin; on other devices, and while
    tracing, it is ``torch.matmul`` on ``[N, P, m, k]`` views (the same
    multiply-adds). Half-precision inputs are summed in float32; the result
    has their dtype (under autocast: the autocast dtype, as for
    ``torch.matmul``).

    Args:
        a (torch.Tensor): ``[N, m, k, P]``.
        b (torch.Tensor): ``[N, k, n, P]``.

    Returns:
        torch.Tensor: ``[N, m, n, P]``.
    """
    if _tracing() or a.device.type != 'cpu':
        # [N, P, m, k] @ [N, P, k, n] -> [N, P, m, n] -> [N, m, n, P]
        out = torch.matmul(a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2))
        return out.permute(0, 2, 3, 1)
    if (a.dim() != 4 or b.dim() != 4 or a.shape[2] != b.shape[1]
            or a.shape[0] != b.shape[0] or a.shape[3] != b.shape[3]):
        raise ValueError(
            f'per_position_matmul expects a [N, m, k, P] and b '
            f'[N, k, n, P], got {tuple(a.shape)} and {tuple(b.shape)}.')
    # Loops of multiply-adds accumulate in their own dtype: sum half
    # precision in float32, then round the result once. Under autocast the
    # result has the autocast dtype, as that of a matrix product would.
    dtype = torch.promote_types(a.dtype, b.dtype)
    if torch.is_autocast_enabled('cpu'):
        dtype = torch.get_autocast_dtype('cpu')
    acc_dtype = torch.promote_types(dtype, torch.float32)
    out = _PerPositionMatmul.apply(a.to(acc_dtype), b.to(acc_dtype))
    return out.to(dtype)


class _ContiguousGrad(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


def contiguous_grad(x: torch.Tensor) -> torch.Tensor:
    """Identity whose backward makes the incoming gradient contiguous.

    Placed after a ``bmm`` whose result is then transposed: the gradient of
    the transpose arrives strided, and a strided gradient sends CPU ``bmm``
    backward down its slow one-matrix-at-a-time path.
    """
    if _tracing():
        return x
    return _ContiguousGrad.apply(x)


# ---------------------------------------------------------------------- #
# the plain formulation (devices other than the CPU)
# ---------------------------------------------------------------------- #
def grouped_channel_conv3d(
        x: torch.Tensor,
        weight: torch.Tensor,
        padding: Sequence[int],
        layout: str = 'positions_first',
        bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`channel_conv3d` as one grouped ``conv3d`` (autograd's own
    backward), the formulation cuDNN is built for.

    Every channel gets its bank's filters (``groups = C``); the multiply-adds
    are those of :func:`channel_conv3d`.

    Args:
        x (torch.Tensor): ``[N, C, T, H, W]``.
        weight (torch.Tensor): ``[banks, O, kt, kh, kw]``; ``banks``
            divides ``C``.
        padding (Sequence[int]): ``(pt, ph, pw)``.
        layout (str): ``'positions_first'`` or ``'conv'`` (see Returns).
            Defaults to ``'positions_first'``.
        bias (torch.Tensor, optional): ``[C, O]``, added to every position
            (the convolution's bias). Defaults to None.

    Returns:
        torch.Tensor: ``[N, T, H, W, C, O]`` (a view of the convolution's
        output; contiguous when that output is channels-last), or with
        ``layout='conv'`` the convolution's output ``[N, C*O, T, H, W]``.
    """
    if x.dim() != 5 or weight.dim() != 5 or x.shape[1] % weight.shape[0]:
        raise ValueError(
            f'grouped_channel_conv3d expects x [N, C, T, H, W] and weight '
            f'[banks, O, kt, kh, kw] with banks dividing C, got '
            f'{tuple(x.shape)} and {tuple(weight.shape)}.')
    # Python ints: a traced graph (ONNX export) keeps the filters' shape
    # static, which the legacy exporter needs
    c = int(x.shape[1])
    banks, o = (int(size) for size in weight.shape[:2])
    kernel = tuple(int(size) for size in weight.shape[2:])
    # [banks, O, k...] -> [banks, C/banks, O, k...] -> [C*O, 1, k...] (an
    # expand, not repeat_interleave: the legacy ONNX exporter needs the
    # filters' shape)
    per_channel = weight.unsqueeze(1).expand(banks, c // banks, o, *kernel)
    out = F.conv3d(
        x,
        per_channel.reshape(c * o, 1, *kernel),
        None if bias is None else bias.reshape(c * o),
        padding=tuple(int(p) for p in padding),
        groups=c)
    if layout == 'conv':
        return out
    # [N, C*O, T, H, W] -> [N, T, H, W, C, O]
    return out.permute(0, 2, 3, 4, 1).unflatten(4, (c, o))


# ---------------------------------------------------------------------- #
# the exported formulation (onnxruntime)
# ---------------------------------------------------------------------- #
def export_channel_conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    padding: Sequence[int],
    bias: Optional[torch.Tensor] = None,
    sizes: Optional[Sequence[int]] = None
) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
    """:func:`channel_conv3d` in the form onnxruntime runs fastest, for
    ONNX export; positions first.

    onnxruntime's CPU convolutions run 3D convolutions through a generic
    im2col + GEMM, but 2D convolutions in its blocked (NCHWc) layout. With
    one filter bank (``H2`` and ``G``) the ``kt`` frames around each frame
    become the input channels of a 2D convolution (``[N*T*C, kt, H, W]``,
    filters ``[O, kt, kh, kw]``); several banks (``H1``) run as one grouped
    ``conv3d`` (one node instead of one per bank). Both orders end in a
    transpose that moves one axis, onnxruntime's fast case. The
    multiply-adds are those of :func:`channel_conv3d`.

    Args:
        x (torch.Tensor): ``[N, C, T, H, W]``.
        weight (torch.Tensor): ``[banks, O, kt, kh, kw]``; ``banks``
            divides ``C``.
        padding (Sequence[int]): ``(pt, ph, pw)``, half the kernel.
        bias (torch.Tensor, optional): ``[C, O]``, added to every position:
            the grouped convolution's own bias with several banks (``P1``
            added to ``H1`` at no cost). Defaults to None.
        sizes (Sequence[int], optional): Split the filters into parts of
            these sizes (``H2`` and ``G``), one output each; with one bank
            the split is made on the convolution's output, where each
            part is contiguous (a cheaper copy than after the transpose).
            Defaults to None.

    Returns:
        torch.Tensor | tuple[torch.Tensor]: ``[N*T*H*W, C, O]``, or with
        ``sizes`` one ``[N*T*H*W, C, size]`` per size.
    """
    with _static_structure():
        return _export_channel_conv3d(x, weight, padding, bias, sizes)


def _export_channel_conv3d(
    x: torch.Tensor, weight: torch.Tensor, padding: Sequence[int],
    bias: Optional[torch.Tensor], sizes: Optional[Sequence[int]]
) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
    # static sizes as Python ints, the batch left dynamic (-1)
    c, t, h, w = (int(size) for size in x.shape[1:])
    banks, o, kt = (int(size) for size in weight.shape[:3])
    pt, ph, pw = (int(p) for p in padding)
    if banks > 1:
        # [N, C, T, H, W] -> [N, C*O, T, H, W] -> [N, C*O, THW]
        out = grouped_channel_conv3d(
            x, weight, padding, layout='conv', bias=bias)
        out = out.reshape(-1, c * o, t * h * w)
        # [N, C*O, THW] -> [N, THW, C*O] -> [N*THW, C, O]
        out = out.transpose(1, 2).reshape(-1, c, o)
        return out if sizes is None else torch.split(out, list(sizes), 2)
    # [N, C, T, H, W] -> [N, T, C, H, W], zero frames around T
    frames = F.pad(x.transpose(1, 2), (0, 0, 0, 0, 0, 0, pt, pt))
    # kt shifted clips: [N, T, C, kt, H, W] -> [N*T*C, kt, H, W]
    stacked = torch.stack([frames[:, i:i + t] for i in range(kt)], dim=3)
    stacked = stacked.reshape(-1, kt, h, w)
    # [N*T*C, kt, H, W] -> [N*T*C, O, H, W]
    out = F.conv2d(stacked, weight[0], padding=(ph, pw))
    # [N*T*C, O, H, W] -> parts [N*T*C, O_i, H, W]
    parts = (out, ) if sizes is None else torch.split(out, list(sizes), 1)
    outs = []
    for part in parts:
        o = int(part.shape[1])
        # [N*T, C*O, HW] -> [N*T, HW, C*O] -> [N*THW, C, O]
        part = part.reshape(-1, c * o, h * w).transpose(1, 2)
        outs.append(part.reshape(-1, c, o))
    if bias is not None:
        biases = (bias, ) if sizes is None else torch.split(
            bias, list(sizes), 1)
        outs = [out + b for out, b in zip(outs, biases)]
    return outs[0] if sizes is None else tuple(outs)
