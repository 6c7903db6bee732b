# Copyright (c) mmrsa contributors. All rights reserved.
"""A literal implementation of RSA (Eq. 8), for tests, teaching and the
checkpoint converter's oracle.

It unfolds the ``M``-neighbourhood of every position, builds the basic and
relational kernels ``[M]`` and the basic and relational contexts ``[M, Cq]``
explicitly and aggregates them, exactly as written in the paper. It reads the
parameters of an :class:`~mmrsa.models.common.rsa.RSA` layer (or the same
tensors given as :class:`RSAWeights`, e.g. from a checkpoint of the authors'
code), so the implementations can be compared number for number, but none of
the layer's code: the embedding (projection, split into query, key and value,
normalisation) and the stride pooling are written here again from the paper
(Sec. 3-4, supplementary Table 2c) and the official implementation
(``ops/rsa.py``), so that a mistake in the layer's version of them shows up
as a difference.

- :func:`rsa_reference`: the layer's output ``y = (kV + kR)(XV + XR)``.
- :func:`reference_kernels`: the kernels ``kV`` and ``kR`` of every (or of
  chosen) query positions, what the kernel pictures show (paper Fig. 3).
- :func:`weights_of`: the :class:`RSAWeights` of a layer.

Memory grows with ``M * L * Cq`` per position (the Hadamard product of the
relational kernel); positions are processed in chunks of about
:data:`CHUNK_ELEMENTS` elements, so a full-size feature map fits in memory.
Products of three matrices are associated so that no ``[M, M]`` matrix per
position is formed (``vec(1 q^T (.) XK) H1`` then ``H2^T``; ``XV (XV^T G)``):
the same numbers, a fraction of the time. It is a test,
teaching and conversion oracle, not a model part: it is importable from
:mod:`mmrsa.models.common` but not registered in MMAction2's ``MODELS``.
"""
import dataclasses
import math
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .rsa import RSA

__all__ = [
    'RSAReference', 'RSAWeights', 'rsa_reference', 'reference_kernels',
    'weights_of', 'unfold_context'
]

#: The epsilon of the L2 normalisation, inside the square root (official
#: ``L2norm``: ``x / (sum(x ** 2) + 1e-6) ** 0.5``).
L2_EPS = 1e-6

#: About how many elements the largest per-chunk tensor (the Hadamard
#: product ``[N, P, L, M, Cq]``) holds; positions are processed in chunks of
#: that size.
CHUNK_ELEMENTS = 1 << 24

Position = Tuple[int, int, int]


@dataclasses.dataclass(frozen=True, eq=False)
class RSAWeights:
    """The parameters and options of one RSA layer, as plain tensors.

    What the reference reads: an :class:`~mmrsa.models.common.rsa.RSA`
    layer's (:func:`weights_of`) or those of another implementation mapped
    onto the same layout (the authors' checkpoints:
    :mod:`mmrsa.converters.official.oracle`). Names and shapes are the
    layer's (L = ``num_queries``, Cq = ``query_channels``, D, G =
    ``corr_groups``, M = kt x kh x kw)::

        projection  [L*Cq + Ck + Cq, C, 1, 1, 1]  rows [query | key | value],
                    Ck = Cq with a relational kernel, else 0
        H2          [D, 1, kt, kh, kw]
        H1          [G*D, 1, kt, kh, kw]   relational kernel only
        P1          [Cq, D]                basic kernel only
        G           [Cq, 1, kt, kh, kw]    relational context only
        I           [Cq, Cq]               both contexts only

    Args:
        projection (torch.Tensor): Input projection weight.
        H2 (torch.Tensor): ``H2`` filters.
        num_queries (int): L.
        query_channels (int): Cq.
        kernel_type (str): ``'V'``, ``'R'`` or ``'VR'``.
        context_type (str): ``'V'``, ``'R'`` or ``'VR'``.
        H1 (torch.Tensor, optional): ``H1`` filters. Defaults to None.
        P1 (torch.Tensor, optional): ``P1``. Defaults to None.
        G (torch.Tensor, optional): ``G`` filters. Defaults to None.
        I (torch.Tensor, optional): ``I``. Defaults to None.
        corr_groups (int, optional): G. Defaults to None (= Cq, the
            Hadamard product).
        norm (str): ``'l2'``, ``'bn'`` or ``'none'``. Defaults to ``'l2'``.
        norm_layer (torch.nn.BatchNorm3d, optional): The batch norm of
            ``norm='bn'`` (its running statistics are read, never updated).
            Defaults to None.
        stride (int): Spatial stride. Defaults to 1.
    """
    projection: torch.Tensor
    H2: torch.Tensor
    num_queries: int
    query_channels: int
    kernel_type: str
    context_type: str
    H1: Optional[torch.Tensor] = None
    P1: Optional[torch.Tensor] = None
    G: Optional[torch.Tensor] = None
    I: Optional[torch.Tensor] = None  # noqa: E741 (the paper's symbol)
    corr_groups: Optional[int] = None
    norm: str = 'l2'
    norm_layer: Optional[torch.nn.BatchNorm3d] = None
    stride: int = 1

    @property
    def in_channels(self) -> int:
        return self.projection.shape[1]

    @property
    def kernel_size(self) -> Tuple[int, int, int]:
        return tuple(self.H2.shape[2:])

    @property
    def latent_dim(self) -> int:
        return self.H2.shape[0]

    @property
    def groups(self) -> int:
        """G, with None read as Cq."""
        return self.corr_groups or self.query_channels


def weights_of(layer: RSA) -> RSAWeights:
    """The parameters and options of ``layer`` (read, not copied)."""
    nq = layer.num_queries

    def weight(conv):
        return None if conv is None else conv.weight

    return RSAWeights(
        projection=layer.projection.weight,
        H2=layer.H2.weight,
        num_queries=nq,
        query_channels=layer.out_channels // nq,
        kernel_type=layer.kernel_type,
        context_type=layer.context_type,
        H1=weight(layer.H1),
        P1=layer.P1,
        G=weight(layer.G),
        I=layer.I,
        corr_groups=layer.corr_groups,
        norm=layer.norm,
        norm_layer=layer.norm_layer,
        stride=layer.stride)


def _as_weights(layer: Union[RSA, RSAWeights]) -> RSAWeights:
    return layer if isinstance(layer, RSAWeights) else weights_of(layer)


# ---------------------------------------------------------------------- #
# contexts
# ---------------------------------------------------------------------- #
def _context_view(x: torch.Tensor,
                  kernel_size: Sequence[int],
                  padding: Optional[Sequence[int]] = None) -> torch.Tensor:
    """The zero-padded neighbourhood of every position, as a view.

    Args:
        x (torch.Tensor): ``[N, C, T, H, W]``.
        kernel_size (Sequence[int]): ``(kt, kh, kw)``.
        padding (Sequence[int], optional): ``(pt, ph, pw)``. Defaults to
            half the kernel size (the context centred on the position).

    Returns:
        torch.Tensor: ``[N, T, H, W, kt, kh, kw, C]``, a view of the padded
        ``x`` (nothing else copied).
    """
    kt, kh, kw = kernel_size
    pt, ph, pw = padding or (kt // 2, kh // 2, kw // 2)
    x = F.pad(x, (pw, pw, ph, ph, pt, pt))
    # [N, C, T, H, W, kt, kh, kw] -> [N, T, H, W, kt, kh, kw, C]
    x = x.unfold(2, kt, 1).unfold(3, kh, 1).unfold(4, kw, 1)
    return x.permute(0, 2, 3, 4, 5, 6, 7, 1)


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
    n, c = x.shape[:2]
    # [N, T', H', W', kt, kh, kw, C] -> [N, T'H'W', M, C]
    view = _context_view(x, kernel_size, padding)
    return view.reshape(n, -1, math.prod(kernel_size), c)


# ---------------------------------------------------------------------- #
# embedding
# ---------------------------------------------------------------------- #
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


def _check_input(weights: RSAWeights, x: torch.Tensor) -> None:
    if x.dim() != 5 or x.shape[1] != weights.in_channels:
        raise ValueError(f'rsa_reference expects [N, {weights.in_channels}, '
                         f'T, H, W], got {tuple(x.shape)}.')


def _embed(
    weights: RSAWeights, x: torch.Tensor
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
    nq, cq = weights.num_queries, weights.query_channels
    key_channels = cq if 'R' in weights.kernel_type else 0
    weight = weights.projection
    if weight.shape[:2] != (nq * cq + key_channels + cq, weights.in_channels):
        raise ValueError(
            f'the projection holds {tuple(weight.shape[:2])} weights; the '
            f'official layout is L*Cq + Ck + Cq = '
            f'{nq * cq + key_channels + cq} outputs of '
            f'{weights.in_channels} inputs.')
    # [N, C, T, H, W] -> [N, L*Cq + Ck + Cq, T, H, W]
    proj = torch.einsum('oc,ncthw->nothw', weight.flatten(1), x)
    if weights.norm == 'bn':
        proj = _batch_norm(weights.norm_layer, proj)
    q = proj[:, :nq * cq]
    k = proj[:, nq * cq:nq * cq + key_channels] if key_channels else None
    v = proj[:, nq * cq + key_channels:]
    # channel l * Cq + c is channel c of query l:
    # [N, L*Cq, T, H, W] -> [N, THW, L*Cq] -> [N, THW, L, Cq]
    q = q.reshape(n, nq * cq, t * h * w).transpose(1, 2)
    q = q.reshape(n, t * h * w, nq, cq)
    if weights.norm == 'l2':
        q = _l2_normalize(q, dim=3)
        v = _l2_normalize(v, dim=1)
        if k is not None:
            k = _l2_normalize(k, dim=1)
    return q, k, v


# ---------------------------------------------------------------------- #
# kernels, contexts, aggregation
# ---------------------------------------------------------------------- #
def _kernels(
    weights: RSAWeights, q: torch.Tensor, key: Optional[torch.Tensor]
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The basic and relational kernels of some positions.

    Args:
        q (torch.Tensor): Their queries ``[N, P, L, Cq]``.
        key (torch.Tensor, optional): Their key contexts XK ``[N, P, M, Cq]``
            (None without a relational kernel).

    Returns:
        tuple: kV and kR, each ``[N, P, L, M]`` or None.
    """
    n, p, nq, cq = q.shape
    dim, groups = weights.latent_dim, weights.groups
    m = math.prod(weights.kernel_size)
    h2 = weights.H2.reshape(dim, m).t()  # H2 [M, D]
    basic = relational = None
    if 'V' in weights.kernel_type:
        pos = h2 @ weights.P1.t()  # P = H2 P1^T [M, Cq]
        basic = torch.einsum('nplc,mc->nplm', q, pos)  # q P^T
    if 'R' in weights.kernel_type:
        # channel-wise (Hadamard) query-key correlation, 1 q^T (.) XK
        corr = q.unsqueeze(3) * key.unsqueeze(2)  # [N, P, L, M, Cq]
        # group-wise correlation: sum the Cq / G channels of each group
        corr = corr.reshape(n, p, nq, m, groups, cq // groups).sum(-1)
        # H1 [M*G, D]: row (m, g) is filter tap m of group g
        h1 = weights.H1.reshape(groups, dim, m).permute(2, 0, 1)
        h1 = h1.reshape(m * groups, dim)
        # vec(corr) H with H = H1 H2^T [MG, M], as vec(corr) H1 then H2^T
        # (the same product; no [MG, M] matrix per position):
        # [N, P, L, MG] @ [MG, D] @ [D, M] -> [N, P, L, M]
        relational = corr.reshape(n, p, nq, m * groups) @ h1 @ h2.t()
    return basic, relational


def _contexts(weights: RSAWeights, value: torch.Tensor) -> torch.Tensor:
    """``XV (I) + XR`` of some positions, from their value contexts XV
    ``[N, P, M, Cq]``; ``[N, P, M, Cq]``."""
    cq = weights.query_channels
    m = math.prod(weights.kernel_size)
    context = 0
    if 'V' in weights.context_type:
        basic = value
        if weights.context_type == 'VR':
            basic = value @ weights.I  # XV I, I is learnable (init identity)
        context = context + basic
    if 'R' in weights.context_type:
        g = weights.G.reshape(cq, m).t()  # G [M, Cq]
        # XR = (XV XV^T) G, the self-correlation of the context times G,
        # as XV (XV^T G) (the same product; no [M, M] matrix per position):
        # [N, P, M, Cq] @ ([N, P, Cq, M] @ [M, Cq]) -> [N, P, M, Cq]
        context = context + value @ (value.transpose(-1, -2) @ g)
    return context


def _chunks(weights: RSAWeights,
            shape: Sequence[int]) -> Iterator[Tuple[int, int, int]]:
    """``(t, h0, h1)``: rows ``h0:h1`` of frame ``t``, in raster order, each
    chunk about :data:`CHUNK_ELEMENTS` large."""
    n, _, t, h, w = shape
    m = math.prod(weights.kernel_size)
    # the largest tensor: the Hadamard product [N, P, L, M, Cq]
    per_position = n * w * weights.num_queries * m * weights.query_channels
    rows = max(1, CHUNK_ELEMENTS // per_position)
    for ti in range(t):
        for h0 in range(0, h, rows):
            yield ti, h0, min(h0 + rows, h)


def _rows(view: torch.Tensor, ti: int, h0: int, h1: int) -> torch.Tensor:
    """Rows ``h0:h1`` of frame ``ti`` of a ``[N, T, H, W, ...]`` map as
    ``[N, P, ...]``."""
    chunk = view[:, ti, h0:h1]
    return chunk.reshape(chunk.shape[0], -1, *chunk.shape[3:])


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


def rsa_reference(layer: Union[RSA, RSAWeights],
                  x: torch.Tensor) -> torch.Tensor:
    """Compute ``y = (kV + kR)(XV + XR)`` literally with ``layer``'s weights.

    Args:
        layer (RSA | RSAWeights): The layer whose parameters (and options)
            are used, or those parameters.
        x (torch.Tensor): ``[N, C, T, H, W]``.

    Returns:
        torch.Tensor: The same as ``layer(x)``, up to rounding:
        ``[N, Cq*L, T, H', W']``, channel ``c * L + l`` is value channel
        ``c`` of query ``l``.
    """
    weights = _as_weights(layer)
    _check_input(weights, x)
    n, _, t, h, w = x.shape
    nq, cq = weights.num_queries, weights.query_channels
    q, k, v = _embed(weights, x)  # q: [N, THW, L, Cq]
    q = q.reshape(n, t, h, w, nq, cq)
    values = _context_view(v, weights.kernel_size)  # XV [N, T, H, W, ...]
    keys = None if k is None else _context_view(k, weights.kernel_size)

    outs = []
    for ti, h0, h1 in _chunks(weights, x.shape):
        value = _rows(values, ti, h0, h1).flatten(2, 4)  # XV [N, P, M, Cq]
        key = None if keys is None else _rows(keys, ti, h0, h1).flatten(2, 4)
        kernels = _kernels(weights, _rows(q, ti, h0, h1), key)
        kernel = sum(kn for kn in kernels if kn is not None)  # [N, P, L, M]
        # [N, P, L, M] @ [N, P, M, Cq] -> [N, P, L, Cq]
        outs.append(kernel @ _contexts(weights, value))
    out = torch.cat(outs, dim=1)  # [N, THW, L, Cq], raster order
    # output channel c * L + l is value channel c of query l:
    # [N, THW, L, Cq] -> [N, THW, Cq, L] -> [N, Cq*L, T, H, W]
    out = out.transpose(-1, -2).reshape(n, t, h, w, cq * nq)
    out = out.permute(0, 4, 1, 2, 3).contiguous()
    return _strided_average(out, weights.stride)


def reference_kernels(
    layer: Union[RSA, RSAWeights],
    x: torch.Tensor,
    positions: Optional[Sequence[Position]] = None
) -> Dict[str, Optional[torch.Tensor]]:
    """The basic and relational kernels of query positions (Eq. 8)::

        basic       kV[l] = q_n^l P^T,          P = H2 P1^T      [M]
        relational  kR[l] = vec(1 q_n^l^T (.) XK_n) H1 H2^T      [M]

    Their sum applied to the context ``XV_n + XR_n`` is :func:`rsa_reference`
    at ``n`` (before the stride pooling).

    Args:
        layer (RSA | RSAWeights): The layer, or its parameters.
        x (torch.Tensor): The layer's input ``[N, C, T, H, W]``.
        positions (Sequence[tuple[int, int, int]], optional): The query
            positions ``(t, h, w)``. Defaults to None: every position.

    Returns:
        dict: ``'basic'`` and ``'relational'``, each ``[N, P, L, M]`` (None
        when the layer has no such kernel), where P runs over ``positions``
        (or over all T*H*W positions in raster order) and the context index
        ``m`` over the ``kt x kh x kw`` window in raster order: index
        ``(i, j, k)`` is the position ``(t + i - kt//2, h + j - kh//2,
        w + k - kw//2)``.

    Raises:
        ValueError: ``x`` does not fit the layer, or a position is outside
            its feature map.
    """
    weights = _as_weights(layer)
    _check_input(weights, x)
    n, _, t, h, w = x.shape
    nq, cq = weights.num_queries, weights.query_channels
    q, k, _ = _embed(weights, x)
    q = q.reshape(n, t, h, w, nq, cq)
    keys = None if k is None else _context_view(k, weights.kernel_size)
    if positions is None:
        parts = [
            _kernels(
                weights, _rows(q, ti, h0, h1), None if keys is None else _rows(
                    keys, ti, h0, h1).flatten(2, 4))
            for ti, h0, h1 in _chunks(weights, x.shape)
        ]
    else:
        positions = [tuple(int(v) for v in p) for p in positions]
        if not positions:
            raise ValueError('positions is empty; pass at least one '
                             '(t, h, w), or None for every position.')
        for p in positions:
            if len(p) != 3 or not all(0 <= v < size
                                      for v, size in zip(p, (t, h, w))):
                raise ValueError(f'query {p} is outside the {t}x{h}x{w} '
                                 f'feature map of the layer.')
        index = tuple(torch.tensor(i) for i in zip(*positions))
        query = q[:, index[0], index[1], index[2]]  # [N, P, L, Cq]
        key = None
        if keys is not None:
            # [N, P, kt, kh, kw, Cq] -> [N, P, M, Cq]
            key = keys[:, index[0], index[1], index[2]].flatten(2, 4)
        parts = [_kernels(weights, query, key)]
    return {
        name: (None if parts[0][i] is None else torch.cat(
            [part[i] for part in parts], dim=1))
        for i, name in enumerate(('basic', 'relational'))
    }


class RSAReference(RSA):
    """:class:`RSA` whose forward is the literal :func:`rsa_reference`.

    A test and teaching oracle: importable, but not registered in
    MMAction2's ``MODELS`` (a config cannot build it by mistake).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rsa_reference(self, x)
