# Copyright (c) mmrsa contributors. All rights reserved.
"""Local spatio-temporal self-attention and its variants of the paper's
Table 2.

Kim, Kwon, Wang, Kwak, Cho. "Relational Self-Attention: What's Missing in
Attention for Video Understanding". NeurIPS 2021, Sec. 5.3, Table 2: the
stand-alone self-attention of Ramachandran et al. 2019 ("Stand-Alone
Self-Attention in Vision Models", the paper's [37]) over the same
``M = kt x kh x kw`` neighbourhood as RSA, and its ablations.

This module imports only torch; the registration into MMAction2's
``MODELS`` lives in :mod:`mmrsa.models.common` (glue).
"""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .spatiotemporal_conv import check_kernel_size

__all__ = ['LocalSelfAttention', 'ATTENTION_KERNELS', 'unfold_neighbourhood']

#: What the attention logits of :class:`LocalSelfAttention` are made of:
#: content-to-content ``q K^T`` and/or content-to-position ``q P^T``.
ATTENTION_KERNELS = ('content+position', 'content', 'position')


def unfold_neighbourhood(x: torch.Tensor,
                         kernel_size: Sequence[int]) -> torch.Tensor:
    """The zero-padded ``kt x kh x kw`` neighbourhood of every position.

    Args:
        x (torch.Tensor): ``[N, C, T, H, W]``.
        kernel_size (Sequence[int]): ``(kt, kh, kw)``, odd.

    Returns:
        torch.Tensor: ``[N, C, T, H, W, M]`` (a view of the padded input);
        neighbour ``m = (i * kh + j) * kw + k`` is the offset
        ``(i - kt // 2, j - kh // 2, k - kw // 2)``.
    """
    kt, kh, kw = kernel_size
    n, c, t, h, w = x.shape
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2, kt // 2, kt // 2))
    # [N, C, T+kt-1, H+kh-1, W+kw-1] -> [N, C, T, H, W, kt, kh, kw]
    windows = padded.unfold(2, kt, 1).unfold(3, kh, 1).unfold(4, kw, 1)
    return windows.reshape(n, c, t, h, w, kt * kh * kw)


class LocalSelfAttention(nn.Module):
    """Multi-query self-attention over a spatio-temporal neighbourhood.

    For every position ``n`` with context ``N(n)`` (its ``M`` neighbours),
    each of the L queries ``q_n`` (Cq channels) attends as

    .. code-block:: none

        y_n = kernel_n XV_n                                     [Cq]
        kernel_n = σ(q_n XK_n^T + q_n P^T)   kernel='content+position'
                   σ(q_n XK_n^T)             kernel='content'
                   σ(q_n P^T)                kernel='position'
                   q_n P^T                   kernel='position', softmax=False

    with ``XK_n``, ``XV_n`` ``[M, Cq]`` the keys and values of the context
    and ``P`` ``[M, Cq]`` a learned relative position embedding, one row per
    offset. These are the four self-attention rows of Table 2; the last one,
    without softmax, is RSA's basic kernel on the basic context (``kV XV``,
    the involution), with ``P`` a full table instead of RSA's ``H2 P1``::

        x ─ 1x1x1 projection ─┬─ q [L, Cq] ─────────────┐
                              ├─ k ─ unfold ─ XK [M, Cq] ┼─ logits [L, M]
                              │               P [M, Cq] ─┘   │ σ
                              └─ v ─ unfold ─ XV [M, Cq] ── kernel · XV
                                                             y [L, Cq]

    Symbols: ``num_queries`` = L, ``Cq = out_channels / L`` (the paper's
    ``C^Q``, ``D = C / L`` of the issue), ``kernel_size`` = M. As RSA is, the
    layer is multi-query (Shazeer 2019; paper Sec. 4.2): the L queries share
    one key and one value of Cq channels, and the output channel
    ``c * L + l`` holds value channel ``c`` of query ``l`` (value major,
    query minor).

    What the paper leaves open and what is chosen here:

    - heads: multi-query with L = 8 like RSA (the paper compares the
      transforms at equal settings and prints the same parameter count for
      self-attention and RSA's ``kV XV``);
    - ``P``: one learned ``[M, Cq]`` table shared by the L queries (the key
      side of the multi-query layer), rather than [37]'s concatenated row
      and column embeddings, so that ``q P^T`` can express every kernel that
      RSA's ``q P1^T H2^T`` can (rank ``D = Cq``);
    - no normalisation of query, key and value (as in [37]); with softmax
      the logits are scaled by ``1 / sqrt(Cq)`` (as in Transformers);
    - the neighbourhood is zero-padded at the borders and, with softmax,
      the padded positions are masked out of the softmax (they get weight
      0); without softmax they contribute nothing since their values are 0;
    - a spatial stride is applied by a (1, 3, 3) average pool of the output,
      as RSA does.

    FLOPs (one multiply-add = one FLOP, per position): the projection
    ``C (L Cq + Ck + Cq)``, ``L Cq M`` for each of ``q XK^T`` and ``q P^T``
    and ``L M Cq`` for the aggregation. The products are batched matrix
    products so MMEngine's counter sees all of them.

    Parameter layout:

    - ``projection``: ``Conv3d(in, L*Cq [+ Cq] + Cq, 1)`` producing
      ``[query (L*Cq) | key (Cq, only with content) | value (Cq)]``;
    - ``position``: ``(M, Cq)``, only with position, drawn from
      ``N(0, 1 / (M * Cq))`` (the scale of RSA's ``P``).

    Args:
        in_channels (int): Channels C of the input ``[N, C, T, H, W]``.
        out_channels (int, optional): Output channels ``L * Cq``. Defaults to
            ``in_channels``.
        kernel_size (int | Sequence[int]): Context size (kt, kh, kw), odd.
            Defaults to ``(5, 7, 7)``.
        stride (int): Spatial stride. Defaults to 1.
        num_queries (int): Number of queries L. Defaults to 8.
        kernel (str): 'content+position', 'content' or 'position'. Defaults
            to 'content+position'.
        softmax (bool): Normalise the kernel with a softmax over the
            context. Defaults to True.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: Optional[int] = None,
                 *,
                 kernel_size: Union[int, Sequence[int]] = (5, 7, 7),
                 stride: int = 1,
                 num_queries: int = 8,
                 kernel: str = 'content+position',
                 softmax: bool = True) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        for name, value in (('in_channels', in_channels), ('out_channels',
                                                           out_channels),
                            ('num_queries', num_queries), ('stride', stride)):
            if (not isinstance(value, int) or isinstance(value, bool)
                    or value <= 0):
                raise ValueError(
                    f'{name} must be a positive int, got {value!r}.')
        if out_channels % num_queries != 0:
            raise ValueError(
                f'out_channels={out_channels} is not divisible by '
                f'num_queries={num_queries}; choose num_queries among the '
                f'divisors of out_channels.')
        if kernel not in ATTENTION_KERNELS:
            raise ValueError(f'kernel={kernel!r} is not supported; choose '
                             f'one of {ATTENTION_KERNELS}.')
        if not isinstance(softmax, bool):
            raise ValueError(
                f'softmax must be True or False, got {softmax!r}.')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = check_kernel_size(kernel_size)
        self.stride = stride
        self.num_queries = num_queries
        self.query_channels = out_channels // num_queries
        self.kernel = kernel
        self.softmax = softmax
        self.use_content = 'content' in kernel
        self.use_position = 'position' in kernel

        cq = self.query_channels
        key_channels = cq if self.use_content else 0
        self.split_sizes = (num_queries * cq, key_channels, cq)
        self.projection = nn.Conv3d(
            in_channels, sum(self.split_sizes), 1, bias=False)
        self.position = (
            nn.Parameter(torch.empty(self.context_size, cq))
            if self.use_position else None)
        self.reset_parameters()

    @property
    def context_size(self) -> int:
        """M, the number of positions in the context."""
        return math.prod(self.kernel_size)

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation of the projection (RSANet
        MSRA-initialises it); ``P`` from ``N(0, 1 / (M * Cq))``."""
        self.projection.reset_parameters()
        if self.position is not None:
            nn.init.normal_(
                self.position,
                std=math.sqrt(1.0 / (self.context_size * self.query_channels)))

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size='
                f'{self.kernel_size}, stride={self.stride}, num_queries='
                f'{self.num_queries}, kernel={self.kernel!r}, '
                f'softmax={self.softmax}')

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``[N, C, T, H, W]`` with
        ``C = in_channels``."""
        if not isinstance(x, torch.Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)
            raise ValueError(
                f'LocalSelfAttention expects a 5-D input [N, C, T, H, W], '
                f'got {shape}. Reshape frame batches [N*T, C, H, W] to '
                f'[N, C, T, H, W] first.')
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'LocalSelfAttention was built with in_channels='
                f'{self.in_channels} but the input has {x.shape[1]} channels '
                f'(shape {tuple(x.shape)}).')

    # ------------------------------------------------------------------ #
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the attention.

        Args:
            x (torch.Tensor): ``[N, in_channels, T, H, W]``.

        Returns:
            torch.Tensor: ``[N, out_channels, T, H', W']`` with
            ``H' = ceil(H / stride)``.
        """
        self.check_input(x)
        return self.attend(self.projection(x))

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The attention kernels of every position (what Fig. 3 shows).

        Args:
            x (torch.Tensor): ``[N, in_channels, T, H, W]``.

        Returns:
            torch.Tensor: ``[N, L, T, H, W, kt, kh, kw]``; with softmax each
            kernel sums to 1 over the context (0 on padded positions).
        """
        self.check_input(x)
        n, _, t, h, w = x.shape
        kernel, _ = self._kernel_and_values(self.projection(x))
        # [N*THW, L, M] -> [N, T, H, W, L, M] -> [N, L, T, H, W, kt, kh, kw]
        kernel = kernel.reshape(n, t, h, w, self.num_queries, -1)
        return kernel.permute(0, 4, 1, 2, 3,
                              5).reshape(n, self.num_queries, t, h, w,
                                         *self.kernel_size)

    def attend(self, proj: torch.Tensor) -> torch.Tensor:
        """The layer after its input projection.

        Args:
            proj (torch.Tensor): ``self.projection(x)``,
                ``[N, L*Cq + Ck + Cq, T, H, W]``.

        Returns:
            torch.Tensor: ``[N, out_channels, T, H', W']``.
        """
        n, _, t, h, w = proj.shape
        nq, cq = self.num_queries, self.query_channels
        kernel, values = self._kernel_and_values(proj)
        # [N*THW, L, M] @ [N*THW, M, Cq] -> [N*THW, L, Cq]
        out = torch.bmm(kernel, values)
        # [N*THW, L, Cq] -> [N, T, H, W, Cq, L] -> [N, Cq*L, T, H, W]
        out = out.reshape(n, t, h, w, nq, cq).transpose(4, 5)
        out = out.reshape(n, t, h, w, cq * nq).permute(0, 4, 1, 2, 3)
        out = out.contiguous()
        if self.stride == 1:
            return out
        return F.avg_pool3d(
            out, (1, 3, 3),
            stride=(1, self.stride, self.stride),
            padding=(0, 1, 1))

    def _kernel_and_values(
            self, proj: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The kernels ``[N*THW, L, M]`` and the unfolded values
        ``[N*THW, M, Cq]`` of a projection ``[N, L*Cq + Ck + Cq, T, H, W]``."""
        n, _, t, h, w = proj.shape
        nq, cq, m = self.num_queries, self.query_channels, self.context_size
        num_pos = t * h * w
        q, k, v = torch.split(proj, self.split_sizes, dim=1)
        # [N, L*Cq, T, H, W] -> [N, T, H, W, L*Cq] -> [N*THW, L, Cq]
        q = q.permute(0, 2, 3, 4, 1).reshape(n * num_pos, nq, cq)
        logits = None
        if self.use_content:
            # [N, Cq, T, H, W] -> [N, Cq, T, H, W, M] -> [N*THW, Cq, M]
            keys = unfold_neighbourhood(k, self.kernel_size)
            keys = keys.permute(0, 2, 3, 4, 1, 5).reshape(n * num_pos, cq, m)
            logits = torch.bmm(q, keys)  # [N*THW, L, M]
        if self.use_position:
            # [N*THW, L, Cq] @ [Cq, M] -> [N*THW, L, M]
            position = torch.matmul(q, self.position.t())
            logits = position if logits is None else logits + position
        if self.softmax:
            logits = logits * self.query_channels**-0.5
            # padded neighbours out of the softmax: [THW, M] -> [1, THW, 1, M]
            inside = unfold_neighbourhood(
                proj.new_ones(1, 1, t, h, w), self.kernel_size)
            inside = inside.reshape(1, num_pos, 1, m) > 0
            logits = logits.view(n, num_pos, nq,
                                 m).masked_fill(~inside, float('-inf'))
            kernel = logits.softmax(dim=-1).view(n * num_pos, nq, m)
        else:
            kernel = logits
        # [N, Cq, T, H, W] -> [N, Cq, T, H, W, M] -> [N*THW, M, Cq]
        values = unfold_neighbourhood(v, self.kernel_size)
        values = values.permute(0, 2, 3, 4, 5, 1).reshape(n * num_pos, m, cq)
        return kernel, values
