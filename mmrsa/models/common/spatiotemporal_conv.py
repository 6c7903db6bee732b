# Copyright (c) mmrsa contributors. All rights reserved.
"""Static spatio-temporal convolutions of the paper's Table 2.

Kim, Kwon, Wang, Kwak, Cho. "Relational Self-Attention: What's Missing in
Attention for Video Understanding". NeurIPS 2021, Sec. 5.3, Table 2: one
3x3 spatial convolution of TSN-ResNet50 (res4, 8 frames) is replaced by one
spatio-temporal transform with ``M = 5x7x7``:

- :class:`Conv3dTransform`: a 3D convolution ``W_3D`` of size
  ``kt x kh x kw`` (Tran et al. 2015, the paper's [48]);
- :class:`Conv2Plus1dTransform`: the (2+1)D factorisation
  ``W_1D o W_2D`` (Tran et al. 2018, the paper's [50]): a ``1 x kh x kw``
  convolution followed by a ``kt x 1 x 1`` one.

Both are static (input-independent) kernels, the counterpart of the dynamic
kernels of self-attention and RSA. This module imports only torch; the
registration into MMAction2's ``MODELS`` lives in
:mod:`mmrsa.models.common` (glue).
"""
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn

__all__ = ['Conv3dTransform', 'Conv2Plus1dTransform', 'check_kernel_size']


def check_kernel_size(value: Union[int, Sequence[int]],
                      name: str = 'kernel_size') -> Tuple[int, int, int]:
    """``value`` as a ``(t, h, w)`` triple of positive odd ints.

    Raises:
        ValueError: ``value`` is not an int or a sequence of 3 ints, or a
            size is not positive and odd (the neighbourhood must be centred
            on the query).
    """

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if is_int(value):
        value = (value, value, value)
    if (not isinstance(value, Sequence) or isinstance(value, str)
            or len(value) != 3 or not all(is_int(v) for v in value)):
        raise ValueError(f'{name} must be an int or a sequence of 3 ints '
                         f'(t, h, w), got {value!r}.')
    if any(v <= 0 or v % 2 == 0 for v in value):
        raise ValueError(f'{name} must hold positive odd sizes so the '
                         f'neighbourhood is centred on the query, got '
                         f'{tuple(value)!r}.')
    return tuple(value)


def _check_channels_and_stride(in_channels: int, out_channels: int,
                               stride: int) -> None:
    for name, value in (('in_channels', in_channels),
                        ('out_channels', out_channels), ('stride', stride)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f'{name} must be a positive int, got {value!r}.')


def _check_input(x: torch.Tensor, in_channels: int, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)
        raise ValueError(f'{name} expects a 5-D input [N, C, T, H, W], got '
                         f'{shape}.')
    if x.shape[1] != in_channels:
        raise ValueError(f'{name} was built with in_channels={in_channels} '
                         f'but the input has {x.shape[1]} channels (shape '
                         f'{tuple(x.shape)}).')


class Conv3dTransform(nn.Module):
    """A 3D convolution over a ``kt x kh x kw`` neighbourhood (Table 2,
    "3D convolution", ``W_3D``)::

        x [N, C, T, H, W] ─ Conv3d kt x kh x kw, stride (1, s, s) ─ y

    Zero padding keeps T, and H, W up to the stride. No bias: a batch norm
    follows it in the residual block.

    Args:
        in_channels (int): Channels C of the input ``[N, C, T, H, W]``.
        out_channels (int, optional): Output channels. Defaults to
            ``in_channels``.
        kernel_size (int | Sequence[int]): ``(kt, kh, kw)``, odd, the
            paper's M. Defaults to ``(5, 7, 7)``.
        stride (int): Spatial stride. Defaults to 1.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: Union[int, None] = None,
                 *,
                 kernel_size: Union[int, Sequence[int]] = (5, 7, 7),
                 stride: int = 1) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        _check_channels_and_stride(in_channels, out_channels, stride)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = check_kernel_size(kernel_size)
        self.stride = stride
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            self.kernel_size,
            stride=(1, stride, stride),
            padding=tuple(k // 2 for k in self.kernel_size),
            bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default (Kaiming-uniform) initialisation; RSANet
        MSRA-initialises it like every other convolution."""
        self.conv.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, T, H, W]`` -> ``[N, C', T, ceil(H / s), ceil(W / s)]``."""
        _check_input(x, self.in_channels, type(self).__name__)
        return self.conv(x)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size='
                f'{self.kernel_size}, stride={self.stride}')


class Conv2Plus1dTransform(nn.Module):
    """A (2+1)D convolution: ``1 x kh x kw`` spatial, then ``kt x 1 x 1``
    temporal (Table 2, "(2+1)D convolution", ``W_1D o W_2D``)::

        x [N, C, T, H, W]
        ─ Conv3d 1 x kh x kw, C -> C', stride (1, s, s)
        ─ BN + ReLU                (mid_activation=True)
        ─ Conv3d kt x 1 x 1, C' -> C'
        ─ y [N, C', T, H', W']

    What the paper leaves open and what is chosen here: the intermediate
    width is the output width C' (no expansion to match the 3D kernel's
    parameters as Tran et al. 2018 do; the paper's 26.8 M parameters and
    37.3 GFLOPs are those of two ``C -> C`` convolutions), and, as in Tran et
    al., a batch norm and a ReLU sit between the two convolutions (which
    adds ``2 C'`` parameters and no counted FLOPs);
    ``mid_activation=False`` composes the two linearly.

    Args:
        in_channels (int): Channels C of the input ``[N, C, T, H, W]``.
        out_channels (int, optional): Output channels C'. Defaults to
            ``in_channels``.
        kernel_size (int | Sequence[int]): ``(kt, kh, kw)``, odd: the
            spatial convolution is ``1 x kh x kw``, the temporal one
            ``kt x 1 x 1``. Defaults to ``(5, 7, 7)``.
        stride (int): Spatial stride (of the spatial convolution).
            Defaults to 1.
        mid_activation (bool): BN + ReLU between the two convolutions.
            Defaults to True.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: Union[int, None] = None,
                 *,
                 kernel_size: Union[int, Sequence[int]] = (5, 7, 7),
                 stride: int = 1,
                 mid_activation: bool = True) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        _check_channels_and_stride(in_channels, out_channels, stride)
        if not isinstance(mid_activation, bool):
            raise ValueError(f'mid_activation must be True or False, got '
                             f'{mid_activation!r}.')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = check_kernel_size(kernel_size)
        self.stride = stride
        self.mid_activation = mid_activation
        kt, kh, kw = self.kernel_size
        self.spatial = nn.Conv3d(
            in_channels,
            out_channels, (1, kh, kw),
            stride=(1, stride, stride),
            padding=(0, kh // 2, kw // 2),
            bias=False)
        # an identity when mid_activation=False, so the parameter names stay
        self.mid = (
            nn.Sequential(nn.BatchNorm3d(out_channels), nn.ReLU(
                inplace=True)) if mid_activation else nn.Identity())
        self.temporal = nn.Conv3d(
            out_channels,
            out_channels, (kt, 1, 1),
            padding=(kt // 2, 0, 0),
            bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation; the mid BN starts as weight 1,
        bias 0. RSANet MSRA-initialises the convolutions."""
        self.spatial.reset_parameters()
        self.temporal.reset_parameters()
        if self.mid_activation:
            self.mid[0].reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, T, H, W]`` -> ``[N, C', T, ceil(H / s), ceil(W / s)]``."""
        _check_input(x, self.in_channels, type(self).__name__)
        # [N, C, T, H, W] -> [N, C', T, H', W'] -> [N, C', T, H', W']
        return self.temporal(self.mid(self.spatial(x)))

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size='
                f'{self.kernel_size}, stride={self.stride}, '
                f'mid_activation={self.mid_activation}')
