# Copyright (c) mmrsa contributors. All rights reserved.
"""A literal implementation of RSA (Eq. 8), for tests and teaching.

It unfolds the ``M``-neighbourhood of every position, builds the basic and
relational kernels ``[M]`` and the basic and relational contexts ``[M, Cq]``
explicitly and aggregates them, exactly as written in the paper. It reads the
parameters of an :class:`~mmrsa.models.common.rsa.RSA` layer, so the two
implementations can be compared number for number, but none of its code: the
embedding (projection, split into query, key and value, normalisation) and
the stride pooling are written here again from the paper (Sec. 3-4,
supplementary Table 2c) and the official implementation (``ops/rsa.py``),
so that a mistake in the layer's version of them shows up as a difference.

Memory grows with ``M * Cq`` per position (and ``M * L * Cq`` for the
Hadamard product): use it on small inputs only. It is a test and teaching
oracle, not a model part: it is importable from :mod:`mmrsa.models.common`
but not registered in MMAction2's ``MODELS``.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .rsa import RSA

__all__ = ['RSAReference', 'rsa_reference', 'unfold_context']

#: The epsilon of the L2 normalisation, inside the square root (official
#: ``L2norm``: ``x / (sum(x ** 2) + 1e-6) ** 0.5``).
L2_EPS = 1e-6


def unfold_context(x: torch.Tensor, kernel_size: Sequence[int],
                   padding: Sequence[int]) -> torch.Tensor:
    """Gather the zero-padded neighbourhood of every position.

    Args:
        x (torch.Tensor): ``[N, C, T, H, W]``.
        kernel_size (Sequence[int]): ``(kt, kh, kw)``.
        padding (Sequence[int]): ``(pt, ph, pw)``.

    Returns:
        torch.Tensor: ``[N, THW, M, C]``; context index ``m`` runs over the
        ``kt x kh x kw`` window in raster order (t slowest), the same order
        as the weights of a ``Conv3d`` with that kernel.
    """
    n, c, t, h, w = x.shape
    pt, ph, pw = padding
    kt, kh, kw = kernel_size
    x = F.pad(x, (pw, pw, ph, ph, pt, pt))
    # [N, C, T, H, W, kt, kh, kw]
    x = x.unfold(2, kt, 1).unfold(3, kh, 1).unfold(4, kw, 1)
    # -> [N, T, H, W, kt, kh, kw, C] -> [N, THW, M, C]
    return x.permute(0, 2, 3, 4, 5, 6, 7, 1).reshape(n, t * h * w,
                                                     kt * kh * kw, c)


def _l2_normalize(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x / sqrt(sum_c x_c ** 2 + eps)`` along ``dim`` (official ``L2norm``,
    the epsilon inside the root)."""
    return x / torch.sqrt((x * x).sum(dim, keepdim=True) + L2_EPS)


def _batch_norm(bn: torch.nn.BatchNorm3d, x: torch.Tensor) -> torch.Tensor:
    """Batch normalisation of ``x`` ``[N, C, T, H, W]`` per channel with the
    affine parameters of ``bn``.

    In training mode (or without running statistics) with the biased
    statistics of the batch, otherwise with ``bn``'s running statistics.
    Unlike ``bn(x)`` it leaves the running statistics as they are.
    """
    shape = (1, -1, 1, 1, 1)
    if bn.training or bn.running_mean is None:
        mean = x.mean(dim=(0, 2, 3, 4))
        var = ((x - mean.view(shape))**2).mean(dim=(0, 2, 3, 4))
    else:
        mean, var = bn.running_mean, bn.running_var
    out = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps)
    if bn.weight is not None:
        out = out * bn.weight.view(shape) + bn.bias.view(shape)
    return out


def _embed(layer: RSA, x: torch.Tensor
           ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """Query, key and value of every position, as the official code embeds
    them: one 1x1x1 projection whose output channels are
    ``[query 1 | ... | query L | key (relational kernel only) | value]``,
    each ``Cq`` wide, then L2 normalisation of every query, key and value
    vector over its ``Cq`` channels (``norm='l2'``), or batch normalisation
    of all projected channels before the split (``norm='bn'``), or neither
    (``norm='none'``).

    Returns:
        tuple: ``q`` ``[N, THW, L, Cq]``, ``k`` ``[N, Cq, T, H, W]`` (``None``
        without a relational kernel) and ``v`` ``[N, Cq, T, H, W]``.
    """
    n, _, t, h, w = x.shape
    nq = layer.num_queries
    cq = layer.out_channels // nq
    key_channels = cq if 'R' in layer.kernel_type else 0
    weight = layer.projection.weight
    if weight.shape[:2] != (nq * cq + key_channels + cq, layer.in_channels):
        raise ValueError(
            f'the projection of {type(layer).__name__} holds '
            f'{tuple(weight.shape[:2])} weights; the official layout is '
            f'L*Cq + Ck + Cq = {nq * cq + key_channels + cq} outputs of '
            f'{layer.in_channels} inputs.')
    # [N, C, T, H, W] -> [N, L*Cq + Ck + Cq, T, H, W]
    proj = torch.einsum('oc,ncthw->nothw', weight.flatten(1), x)
    if layer.norm == 'bn':
        proj = _batch_norm(layer.norm_layer, proj)
    q = proj[:, :nq * cq]
    k = proj[:, nq * cq:nq * cq + key_channels] if key_channels else None
    v = proj[:, nq * cq + key_channels:]
    # channel l * Cq + c is channel c of query l:
    # [N, L*Cq, T, H, W] -> [N, THW, L*Cq] -> [N, THW, L, Cq]
    q = q.reshape(n, nq * cq, t * h * w).transpose(1, 2)
    q = q.reshape(n, t * h * w, nq, cq)
    if layer.norm == 'l2':
        q = _l2_normalize(q, dim=3)
        v = _l2_normalize(v, dim=1)
        if k is not None:
            k = _l2_normalize(k, dim=1)
    return q, k, v


def _strided_average(out: torch.Tensor, stride: int) -> torch.Tensor:
    """The official spatial stride: average over 3x3 windows centred every
    ``stride`` positions, the zero padding counted (``AvgPool3d((1, 3, 3),
    padding=(0, 1, 1))``).

    Args:
        out (torch.Tensor): ``[N, C, T, H, W]``.
        stride (int): Spatial stride.

    Returns:
        torch.Tensor: ``[N, C, T, ceil(H / stride), ceil(W / stride)]``.
    """
    if stride == 1:
        return out
    padded = F.pad(out, (1, 1, 1, 1))  # zeros around H and W
    # [N, C, T, H', W', 3, 3]: the 3x3 window of every kept position
    windows = padded.unfold(3, 3, stride).unfold(4, 3, stride)
    return windows.sum((-2, -1)) / 9


def rsa_reference(layer: RSA, x: torch.Tensor) -> torch.Tensor:
    """Compute ``y = (kV + kR)(XV + XR)`` literally with ``layer``'s weights.

    Args:
        layer (RSA): The layer whose parameters (and options) are used.
        x (torch.Tensor): ``[N, C, T, H, W]``.

    Returns:
        torch.Tensor: The same as ``layer(x)``, up to rounding.
    """
    if x.dim() != 5 or x.shape[1] != layer.in_channels:
        raise ValueError(f'rsa_reference expects [N, {layer.in_channels}, '
                         f'T, H, W], got {tuple(x.shape)}.')
    n, _, t, h, w = x.shape
    nq, dim = layer.num_queries, layer.latent_dim
    cq = layer.out_channels // nq
    groups = layer.corr_groups
    kernel_size = tuple(layer.kernel_size)
    padding = tuple(k // 2 for k in kernel_size)
    m = math.prod(kernel_size)
    q, k, v = _embed(layer, x)  # q: [N, THW, L, Cq]
    value = unfold_context(v, kernel_size, padding)  # XV [N, P, M, Cq]

    h2 = layer.H2.weight.reshape(dim, m).t()  # H2 [M, D]
    kernel = 0
    if 'V' in layer.kernel_type:
        pos = h2 @ layer.P1.t()  # P = H2 P1^T [M, Cq]
        kernel = kernel + torch.einsum('nplc,mc->nplm', q, pos)  # q P^T
    if 'R' in layer.kernel_type:
        key = unfold_context(k, kernel_size, padding)  # XK [N, P, M, Cq]
        # channel-wise (Hadamard) query-key correlation, 1 q^T (.) XK
        corr = q.unsqueeze(3) * key.unsqueeze(2)  # [N, P, L, M, Cq]
        # group-wise correlation: sum the Cq / G channels of each group
        corr = corr.reshape(n, t * h * w, nq, m, groups, cq // groups).sum(-1)
        # H1 [M*G, D]: row (m, g) is filter tap m of group g
        h1 = layer.H1.weight.reshape(groups, dim, m).permute(2, 0, 1)
        big_h = h1.reshape(m * groups, dim) @ h2.t()  # H = H1 H2^T [MG, M]
        kernel = kernel + corr.reshape(n, t * h * w, nq, m * groups) @ big_h

    context = 0
    if 'V' in layer.context_type:
        basic = value
        if layer.context_type == 'VR':
            basic = value @ layer.I  # XV I, I is learnable (init identity)
        context = context + basic
    if 'R' in layer.context_type:
        g = layer.G.weight.reshape(cq, m).t()  # G [M, Cq]
        self_corr = value @ value.transpose(-1, -2)  # XV XV^T [N, P, M, M]
        context = context + self_corr @ g  # XR = XV XV^T G [N, P, M, Cq]

    out = kernel @ context  # [N, P, L, M] @ [N, P, M, Cq] -> [N, P, L, Cq]
    # output channel c * L + l is value channel c of query l:
    # [N, P, L, Cq] -> [N, P, Cq, L] -> [N, Cq*L, T, H, W]
    out = out.transpose(-1, -2).reshape(n, t, h, w, cq * nq)
    out = out.permute(0, 4, 1, 2, 3).contiguous()
    return _strided_average(out, layer.stride)


class RSAReference(RSA):
    """:class:`RSA` whose forward is the literal :func:`rsa_reference`.

    A test and teaching oracle: importable, but not registered in
    MMAction2's ``MODELS`` (a config cannot build it by mistake).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rsa_reference(self, x)
