# Copyright (c) mmrsa contributors. All rights reserved.
"""A literal float64 implementation of local self-attention (Table 2's
self-attention rows), for tests and teaching.

It walks over every position and every query with plain Python loops and
writes the kernel as the paper does, ``σ(q_n XK_n^T + q_n P^T)`` over the
``M`` neighbours that lie inside the clip (padded neighbours have no key and
no value: they are left out of the softmax, and contribute nothing without
it). It reads the parameters of a
:class:`~mmrsa.models.common.local_attention.LocalSelfAttention` layer but
none of its code: the projection, the split into query, key and value, the
output channel order and the stride pooling are written here again from
the layer's documented layout, so that a mistake in the layer shows up as a
difference. It is slow (``N * T * H * W * L * M`` Python iterations): use
small inputs. Importable from :mod:`mmrsa.models.common`, not registered in
MMAction2's ``MODELS``.
"""
import math
from typing import Tuple

import torch
import torch.nn.functional as F

from .local_attention import LocalSelfAttention

__all__ = ['attention_reference', 'attention_kernel_reference']


def _embed(layer: LocalSelfAttention,
           x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query ``[N, L, Cq, T, H, W]``, key and value ``[N, Cq, T, H, W]``
    (key ``None`` without content), in float64."""
    x = x.detach().double()
    n, _, t, h, w = x.shape
    nq, cq = layer.num_queries, layer.query_channels
    weight = layer.projection.weight.detach().double().flatten(1)  # [P, C]
    proj = torch.einsum('pc,ncthw->npthw', weight, x)
    q = proj[:, :nq * cq].reshape(n, nq, cq, t, h, w)
    start = nq * cq
    k = None
    if layer.use_content:
        k = proj[:, start:start + cq]
        start += cq
    v = proj[:, start:start + cq]
    return q, k, v


def _offsets(kernel_size: Tuple[int, int, int]):
    """``(m, dt, dh, dw)`` for every neighbour, in the layer's order."""
    kt, kh, kw = kernel_size
    m = 0
    for i in range(kt):
        for j in range(kh):
            for k in range(kw):
                yield m, i - kt // 2, j - kh // 2, k - kw // 2
                m += 1


def attention_kernel_reference(layer: LocalSelfAttention, x: torch.Tensor,
                               batch: int, query: int,
                               position: Tuple[int, int, int]) -> torch.Tensor:
    """The kernel of one query at one position, float64.

    Args:
        layer (LocalSelfAttention): Whose parameters are used.
        x (torch.Tensor): ``[N, C, T, H, W]``.
        batch (int): Clip index.
        query (int): Query index l in ``[0, L)``.
        position (tuple[int, int, int]): ``(t, h, w)`` of the query.

    Returns:
        torch.Tensor: ``[M]``, 0 on the neighbours outside the clip.
    """
    q, k, _ = _embed(layer, x)
    return _kernel(layer, q, k, batch, query, position)


def _kernel(layer: LocalSelfAttention, q: torch.Tensor, k: torch.Tensor,
            b: int, qi: int, pos: Tuple[int, int, int]) -> torch.Tensor:
    _, _, _, t_size, h_size, w_size = q.shape
    t, h, w = pos
    query = q[b, qi, :, t, h, w]  # [Cq]
    table = (layer.position.detach().double() if layer.use_position else None
             )  # [M, Cq]
    logits = [None] * layer.context_size
    for m, dt, dh, dw in _offsets(layer.kernel_size):
        tt, hh, ww = t + dt, h + dh, w + dw
        if not (0 <= tt < t_size and 0 <= hh < h_size and 0 <= ww < w_size):
            continue  # a padded neighbour: no key, no value
        logit = 0.
        if layer.use_content:
            logit += float(query @ k[b, :, tt, hh, ww])
        if layer.use_position:
            logit += float(query @ table[m])
        logits[m] = logit
    kernel = torch.zeros(layer.context_size, dtype=torch.float64)
    if layer.softmax:
        scale = 1. / math.sqrt(layer.query_channels)
        inside = [(m, z * scale) for m, z in enumerate(logits)
                  if z is not None]
        top = max(z for _, z in inside)
        total = sum(math.exp(z - top) for _, z in inside)
        for m, z in inside:
            kernel[m] = math.exp(z - top) / total
    else:
        for m, z in enumerate(logits):
            if z is not None:
                kernel[m] = z
    return kernel


def attention_reference(layer: LocalSelfAttention,
                        x: torch.Tensor) -> torch.Tensor:
    """The layer's output, computed position by position in float64.

    Args:
        layer (LocalSelfAttention): Whose parameters are used.
        x (torch.Tensor): ``[N, C, T, H, W]``.

    Returns:
        torch.Tensor: ``[N, L * Cq, T, H', W']`` float64, channel
        ``c * L + l`` = value channel c of query l.
    """
    layer.check_input(x)
    q, k, v = _embed(layer, x)
    n, nq, cq, t_size, h_size, w_size = q.shape
    out = torch.zeros(n, cq * nq, t_size, h_size, w_size, dtype=torch.float64)
    for b in range(n):
        for t in range(t_size):
            for h in range(h_size):
                for w in range(w_size):
                    for l in range(nq):  # noqa: E741
                        kernel = _kernel(layer, q, k, b, l, (t, h, w))
                        y = torch.zeros(cq, dtype=torch.float64)
                        for m, dt, dh, dw in _offsets(layer.kernel_size):
                            tt, hh, ww = t + dt, h + dh, w + dw
                            if (0 <= tt < t_size and 0 <= hh < h_size
                                    and 0 <= ww < w_size):
                                y += kernel[m] * v[b, :, tt, hh, ww]
                        for c in range(cq):
                            out[b, c * nq + l, t, h, w] = y[c]
    if layer.stride > 1:
        # the stride: a (1, 3, 3) average pool, zero padding counted
        out = F.avg_pool3d(
            out, (1, 3, 3),
            stride=(1, layer.stride, layer.stride),
            padding=(0, 1, 1))
    return out
