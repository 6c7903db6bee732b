# Copyright (c) mmrsa contributors. All rights reserved.
"""A literal implementation of RSA (Eq. 8), for tests and teaching.

It unfolds the ``M``-neighbourhood of every position, builds the basic and
relational kernels ``[M]`` and the basic and relational contexts ``[M, Cq]``
explicitly and aggregates them, exactly as written in the paper. It shares the
parameters of an :class:`~mmrsa.models.common.rsa.RSA` layer, so the two
implementations can be compared number for number. Memory grows with
``M * Cq`` per position (and ``M * L * Cq`` for the Hadamard product): use it
on small inputs only.
"""
import torch
import torch.nn.functional as F

from .rsa import RSA

__all__ = ['RSAReference', 'rsa_reference', 'unfold_context']


def unfold_context(x: torch.Tensor, kernel_size, padding) -> torch.Tensor:
    """Gather the zero-padded neighbourhood of every position.

    Args:
        x (torch.Tensor): ``[N, C, T, H, W]``.
        kernel_size (tuple[int]): ``(kt, kh, kw)``.
        padding (tuple[int]): ``(pt, ph, pw)``.

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


def rsa_reference(layer: RSA, x: torch.Tensor) -> torch.Tensor:
    """Compute ``y = (kV + kR)(XV + XR)`` literally with ``layer``'s weights.

    Args:
        layer (RSA): The layer whose parameters (and options) are used.
        x (torch.Tensor): ``[N, C, T, H, W]``.

    Returns:
        torch.Tensor: The same as ``layer(x)``, up to rounding.
    """
    layer.check_input(x)
    n, _, t, h, w = x.shape
    nq, cq, dim = layer.num_queries, layer.query_channels, layer.latent_dim
    groups, m = layer.corr_groups, layer.context_size
    q, k, v = layer.embed(x)
    # q: [N, L, Cq, T, H, W] -> [N, THW, L, Cq]
    q = q.reshape(n, nq, cq, t * h * w).permute(0, 3, 1, 2)
    value = unfold_context(v, layer.kernel_size, layer.padding)  # XV [N,P,M,Cq]

    h2 = layer.H2.weight.reshape(dim, m).t()  # H2 [M, D]
    kernel = 0
    if layer.use_basic_kernel:
        pos = h2 @ layer.P1.t()  # P = H2 P1^T [M, Cq]
        kernel = kernel + torch.einsum('nplc,mc->nplm', q, pos)  # q P^T
    if layer.use_relational_kernel:
        key = unfold_context(k, layer.kernel_size, layer.padding)  # XK
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
        if layer.use_identity:
            basic = value @ layer.I  # XV I, I is learnable (init identity)
        context = context + basic
    if layer.use_relational_context:
        g = layer.G.weight.reshape(cq, m).t()  # G [M, Cq]
        self_corr = value @ value.transpose(-1, -2)  # XV XV^T [N, P, M, M]
        context = context + self_corr @ g  # XR = XV XV^T G [N, P, M, Cq]

    out = kernel @ context  # [N, P, L, M] @ [N, P, M, Cq] -> [N, P, L, Cq]
    # [N, P, L, Cq] -> [N, P, Cq, L] -> [N, Cq*L, T, H, W]
    out = out.transpose(-1, -2).reshape(n, t, h, w, cq * nq)
    out = out.permute(0, 4, 1, 2, 3).contiguous()
    return layer.downsample(out)


class RSAReference(RSA):
    """:class:`RSA` whose forward is the literal :func:`rsa_reference`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rsa_reference(self, x)
