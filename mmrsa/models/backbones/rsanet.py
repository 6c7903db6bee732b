# Copyright (c) mmrsa contributors. All rights reserved.
"""RSANet: a TSN ResNet whose selected 3x3 convolutions are RSA layers (or,
with ``transform``, another spatio-temporal transform of the paper's
Table 2).

Kim, Kwon, Wang, Kwak, Cho. "Relational Self-Attention: What's Missing in
Attention for Video Understanding". NeurIPS 2021, Sec. 5.1 and supplementary
Sec. 1.

The backbone keeps MMAction2's TSN interface: it takes a batch of frames
``[N*T, 3, H, W]`` and returns ``[N*T, C, h, w]``, so ``Recognizer2D`` and its
heads and necks work unchanged. Only the RSA layers see the clip: they reshape
the frame batch to ``[N, C, T, h, w]`` and back. An RSA bottleneck::

    x [N*T, Cin, h, w]
    │ ─────────────────────────────────────────────────────┐
    conv1 1x1 + BN + ReLU                                  │
    │  [N*T, C, h, w] -> [N, C, T, h, w]                   │
    RSA (kt x kh x kw context, L queries)                  │ identity or
    │  [N, C, T, h, w] -> [N*T, C, h, w]                   │ downsample
    BN + ReLU                                              │
    conv3 1x1 + BN (gamma = 0 at init)                     │
    drop path (whole clips, stochastic depth)              │
    │ <────────────────────────── + ───────────────────────┘
    ReLU
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.logging import MMLogger
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm
from torch.utils import checkpoint as cp

from mmaction.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmaction.registry import MODELS
from ...fileio.checkpoint import load_checkpoint_file
from ..common.local_attention import LocalSelfAttention
from ..common.rsa import RSA
from ..common.spatiotemporal_conv import Conv2Plus1dTransform, Conv3dTransform

__all__ = [
    'RSANet', 'FrameRSA', 'ClipDropPath', 'DropPathBasicBlock',
    'DropPathBottleneck', 'PAPER_RSA_BLOCKS', 'default_rsa_blocks',
    'check_rsa_blocks', 'check_rsa_cfg', 'rsa_cfg_of_stage', 'FrameTransform',
    'TRANSFORMS'
]

#: The paper's 7 RSA layers in ResNet-50 (supplementary Sec. 1): every second
#: block from the third block of res2 to the second block of res5.
PAPER_RSA_BLOCKS = ((2, ), (1, 3), (1, 3, 5), (1, ))

#: Keyword arguments of :class:`RSA` that ``rsa_cfg`` may set. The channel
#: counts and the stride come from the block the layer replaces.
RSA_CFG_KEYS = ('kernel_size', 'num_queries', 'latent_dim', 'kernel_type',
                'context_type', 'corr_groups', 'norm', 'path')

#: The ``rsa_cfg`` keys that may also be given per stage, as a tuple with one
#: value per stage (e.g. ``latent_dim=(4, 8, 16, 32)`` for D = Cq / 2).
PER_STAGE_KEYS = ('num_queries', 'latent_dim', 'corr_groups')

#: The spatio-temporal transforms of the paper's Table 2 that RSANet's
#: ``transform`` selects, as data: ``(layer class, the rsa_cfg keys it
#: takes, fixed keyword arguments)``. ``'rsa'`` is :class:`FrameRSA`; the
#: others are wrapped in :class:`FrameTransform`. ``'involution'`` is
#: ``q P^T`` without softmax: RSA's ``kV XV`` computed as the attention rows
#: are (ablation ``1layer_kV-xV`` is the same kernel as an RSA layer, with
#: ``P = H2 P1``).
TRANSFORMS: Dict[str, Tuple[type, Tuple[str, ...], Dict]] = {
    'rsa': (RSA, RSA_CFG_KEYS, {}),
    'conv3d': (Conv3dTransform, ('kernel_size', ), {}),
    'conv2plus1d': (Conv2Plus1dTransform, ('kernel_size', ), {}),
    'sa': (LocalSelfAttention, ('kernel_size', 'num_queries'),
           dict(kernel='content+position', softmax=True)),
    'sa-content': (LocalSelfAttention, ('kernel_size', 'num_queries'),
                   dict(kernel='content', softmax=True)),
    'sa-position': (LocalSelfAttention, ('kernel_size', 'num_queries'),
                    dict(kernel='position', softmax=True)),
    'involution': (LocalSelfAttention, ('kernel_size', 'num_queries'),
                   dict(kernel='position', softmax=False)),
}


def default_rsa_blocks(
        stage_blocks: Sequence[int]) -> Tuple[Tuple[int, ...], ...]:
    """Every second block from the third block of the first stage to the
    second block of the last stage, counted over the whole network.

    This is the rule of supplementary Sec. 1; for ResNet-50
    (``stage_blocks=(3, 4, 6, 3)``) it gives :data:`PAPER_RSA_BLOCKS`.

    Args:
        stage_blocks (Sequence[int]): Number of blocks in each stage.

    Returns:
        tuple[tuple[int]]: Per stage, the 0-based indices of the RSA blocks.
    """
    last_stage_start = sum(stage_blocks[:-1])
    selected = set(range(2, last_stage_start + 2, 2))
    out, start = [], 0
    for num_blocks in stage_blocks:
        out.append(
            tuple(i for i in range(num_blocks) if start + i in selected))
        start += num_blocks
    return tuple(out)


def check_rsa_blocks(
        rsa_blocks: Sequence[Sequence[int]],
        stage_blocks: Sequence[int],
        *,
        arch: str,
        dilations: Optional[Sequence[int]] = None
) -> Tuple[Tuple[int, ...], ...]:
    """Validate ``rsa_blocks`` (per stage, 0-based block indices) against
    the stages of a ResNet; the one check :class:`RSANet` and
    :class:`~mmrsa.models.backbones.RSAHybrid` share.

    Args:
        rsa_blocks (Sequence[Sequence[int]]): One sequence of indices per
            stage.
        stage_blocks (Sequence[int]): Number of blocks in each stage.
        arch (str): The network's name in messages, e.g. ``'ResNet-50'``.
        dilations (Sequence[int], optional): Per-stage dilations; a stage
            with RSA must have dilation 1. Defaults to None (not checked).

    Returns:
        tuple[tuple[int]]: Per stage, the sorted indices.

    Raises:
        ValueError: Not one sequence per stage; an index that is not an int
            (bools included), out of range or repeated; RSA in a dilated
            stage.
    """
    num_stages = len(stage_blocks)
    if (not isinstance(rsa_blocks, Sequence) or isinstance(rsa_blocks, str)
            or len(rsa_blocks) != num_stages):
        raise ValueError(
            f'rsa_blocks must hold one sequence of block indices per '
            f'stage ({num_stages} stages), got {rsa_blocks!r}.')
    checked = []
    for stage, (indices,
                num_blocks) in enumerate(zip(rsa_blocks, stage_blocks)):
        if not isinstance(indices, Sequence) or isinstance(indices, str):
            raise ValueError(
                f'rsa_blocks[{stage}] must be a sequence of block '
                f'indices, got {indices!r}.')
        indices = tuple(indices)
        if any(not isinstance(i, int) or isinstance(i, bool)
               or not 0 <= i < num_blocks
               for i in indices) or len(set(indices)) != len(indices):
            raise ValueError(
                f'rsa_blocks[{stage}]={indices!r} must hold distinct '
                f'block indices in [0, {num_blocks}) for stage {stage} of '
                f'{arch}.')
        if indices and dilations is not None and dilations[stage] != 1:
            raise ValueError(
                f'RSA layers do not support dilation; stage {stage} has '
                f'dilation {dilations[stage]}.')
        checked.append(tuple(sorted(indices)))
    return tuple(checked)


def check_rsa_cfg(rsa_cfg: Optional[Dict], num_stages: int) -> Dict:
    """Validate ``rsa_cfg`` (keyword arguments of the RSA layers, see
    :data:`RSA_CFG_KEYS`; those of :data:`PER_STAGE_KEYS` may hold one value
    per stage) and return it as a new dict (``{}`` for None).

    Raises:
        ValueError: Not a dict, an unknown key, or a per-stage value whose
            length is not ``num_stages``.
    """
    if rsa_cfg is not None and not isinstance(rsa_cfg, dict):
        raise ValueError(f'rsa_cfg must be a dict of RSA keyword '
                         f'arguments or None, got {rsa_cfg!r}.')
    rsa_cfg = dict(rsa_cfg or {})
    unknown = sorted(set(rsa_cfg) - set(RSA_CFG_KEYS))
    if unknown:
        raise ValueError(f'rsa_cfg has unknown keys {unknown}; allowed '
                         f'keys are {RSA_CFG_KEYS}.')
    for key in PER_STAGE_KEYS:
        value = rsa_cfg.get(key)
        if isinstance(value, (list, tuple)) and len(value) != num_stages:
            raise ValueError(
                f'rsa_cfg[{key!r}]={value!r} must be a single value or '
                f'one value per stage ({num_stages} stages).')
    return rsa_cfg


def rsa_cfg_of_stage(rsa_cfg: Dict, stage: int) -> Dict:
    """The RSA keyword arguments of the layers in ``stage`` (per-stage
    values of a checked ``rsa_cfg`` resolved)."""
    cfg = dict(rsa_cfg)
    for key in PER_STAGE_KEYS:
        if isinstance(cfg.get(key), (list, tuple)):
            cfg[key] = cfg[key][stage]
    return cfg


class ClipDropPath(nn.Module):
    """Stochastic depth that drops the residual branch of whole clips.

    The frames of one clip share the mask, as in the official
    implementation, which applies the mask to ``[N, C, T, H, W]`` tensors.
    Kept branches are scaled by ``1 / (1 - drop_prob)``.

    Args:
        drop_prob (float): Probability of dropping the branch of a clip.
            Defaults to 0.
        num_segments (int): Frames per clip T. Defaults to 8.
    """

    def __init__(self, drop_prob: float = 0., num_segments: int = 8) -> None:
        super().__init__()
        if not 0. <= drop_prob < 1.:
            raise ValueError(
                f'drop_prob must be in [0, 1), got {drop_prob!r}.')
        self.drop_prob = float(drop_prob)
        self.num_segments = num_segments

    def clip_scale(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Per-frame factors ``[N*T, 1, ..., 1]`` for a branch ``x``: 0 for
        the frames of dropped clips, ``1 / (1 - drop_prob)`` for the rest;
        ``None`` when nothing is dropped (evaluation or ``drop_prob=0``)."""
        if not self.training or self.drop_prob == 0.:
            return None
        keep_prob = 1. - self.drop_prob
        num_clips = x.shape[0] // self.num_segments
        # one draw per clip: [N, 1] -> [N, T] -> [N*T, 1, ..., 1]
        scale = x.new_empty(num_clips, 1).bernoulli_(keep_prob)
        scale.div_(keep_prob)
        return scale.expand(num_clips,
                            self.num_segments).reshape((-1, ) + (1, ) *
                                                       (x.dim() - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Drop the branch ``x`` ``[N*T, ...]`` of random clips."""
        scale = self.clip_scale(x)
        return x if scale is None else x * scale

    def add_to(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """``identity + self(x)`` as one fused operation (a residual block
        with stochastic depth makes one pass over its output, not three)."""
        scale = self.clip_scale(x)
        if scale is None:
            return x + identity
        return torch.addcmul(identity, x, scale)

    def extra_repr(self) -> str:
        return (f'drop_prob={self.drop_prob:.3f}, '
                f'num_segments={self.num_segments}')


class FrameRSA(RSA):
    """An :class:`RSA` layer that takes and returns frame batches.

    It reshapes ``[N*T, C, H, W]`` to ``[N, C, T, H, W]``, applies RSA and
    reshapes back, so it can stand in the place of a 2D convolution of a TSN
    ResNet. Its parameters are those of :class:`RSA`.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        num_segments (int): Frames per clip T. Defaults to 8.
        **kwargs: Keyword arguments of :class:`RSA` (``kernel_size``,
            ``stride``, ``num_queries``, ...).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 *,
                 num_segments: int = 8,
                 **kwargs) -> None:
        super().__init__(in_channels, out_channels, **kwargs)
        self.num_segments = num_segments

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply RSA to a batch of frames.

        Args:
            x (torch.Tensor): ``[N*T, C, H, W]``.

        Returns:
            torch.Tensor: ``[N*T, C', H', W']``.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels or (
                x.shape[0] % self.num_segments):
            raise ValueError(
                f'FrameRSA expects frames [N*T, C={self.in_channels}, H, W] '
                f'with T={self.num_segments} frames per clip, got '
                f'{tuple(x.shape)}; check num_segments against the clip '
                f'length of the data pipeline.')
        num_frames, _, h, w = x.shape
        t = self.num_segments
        n = num_frames // t
        # the 1x1x1 projection as a 1x1 convolution of the frames (faster
        # than a Conv3d on the transposed clips, forward and backward):
        # [N*T, C, H, W] -> [N*T, P, H, W] -> [N, P, T, H, W]
        weight = self.projection.weight
        proj = F.conv2d(x, weight.view(weight.shape[:2] + (1, 1)))
        # float32 on the CPU: the native products read and write frames
        out = self.attend_frames(proj, t)
        if out is not None:
            return out
        proj = proj.view(n, t, -1, h, w).transpose(1, 2).contiguous()
        out = self.attend(proj)  # [N, C', T, H', W']
        # [N, C', T, H', W'] -> [N, T, C', H', W'] -> [N*T, C', H', W']
        out = out.transpose(1, 2).reshape((num_frames, ) + out.shape[1:2] +
                                          out.shape[3:])
        return out

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, num_segments={self.num_segments}'


class FrameTransform(nn.Module):
    """A clip transform ``[N, C, T, H, W]`` applied to frame batches.

    It reshapes ``[N*T, C, H, W]`` to ``[N, C, T, H, W]``, applies ``layer``
    (a :class:`~mmrsa.models.common.Conv3dTransform`,
    :class:`~mmrsa.models.common.Conv2Plus1dTransform` or
    :class:`~mmrsa.models.common.LocalSelfAttention`) and reshapes back, so
    the layer can stand in the place of a 2D convolution of a TSN ResNet.

    Args:
        layer (nn.Module): The transform; it has ``in_channels`` and
            ``out_channels``.
        num_segments (int): Frames per clip T. Defaults to 8.
    """

    def __init__(self, layer: nn.Module, *, num_segments: int = 8) -> None:
        super().__init__()
        self.layer = layer
        self.num_segments = num_segments

    @property
    def in_channels(self) -> int:
        return self.layer.in_channels

    @property
    def out_channels(self) -> int:
        return self.layer.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N*T, C, H, W]`` -> ``[N*T, C', H', W']``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or (
                x.shape[0] % self.num_segments):
            raise ValueError(
                f'FrameTransform expects frames [N*T, C={self.in_channels}, '
                f'H, W] with T={self.num_segments} frames per clip, got '
                f'{tuple(x.shape)}; check num_segments against the clip '
                f'length of the data pipeline.')
        num_frames, c, h, w = x.shape
        t = self.num_segments
        # [N*T, C, H, W] -> [N, T, C, H, W] -> [N, C, T, H, W]
        clips = x.view(num_frames // t, t, c, h, w).transpose(1, 2)
        out = self.layer(clips)  # [N, C', T, H', W']
        # [N, C', T, H', W'] -> [N, T, C', H', W'] -> [N*T, C', H', W']
        return out.transpose(1, 2).reshape((num_frames, ) + out.shape[1:2] +
                                           out.shape[3:])

    def extra_repr(self) -> str:
        return f'num_segments={self.num_segments}'


def _add_residual(drop_path: nn.Module, out: torch.Tensor,
                  identity: torch.Tensor) -> torch.Tensor:
    """``identity + drop_path(out)``, fused when ``drop_path`` is a
    :class:`ClipDropPath`."""
    if isinstance(drop_path, ClipDropPath):
        return drop_path.add_to(out, identity)
    return drop_path(out) + identity


class DropPathBasicBlock(BasicBlock):
    """MMAction2's ``BasicBlock`` with stochastic depth on its branch, and
    with gradient checkpointing (which MMAction2's ``BasicBlock`` lacks).

    Args:
        *args: Positional arguments of ``BasicBlock``.
        with_cp (bool): Recompute the block in the backward pass instead of
            keeping its activations. Defaults to False.
        **kwargs: Keyword arguments of ``BasicBlock``.
    """

    def __init__(self, *args, with_cp: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.with_cp = with_cp
        # set by RSANet; the identity until then
        self.drop_path: nn.Module = nn.Identity()

    @property
    def last_norm(self) -> nn.Module:
        """The BN at the end of the residual branch."""
        return self.conv2.bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block with the branch dropped per clip."""

        def _inner_forward(x: torch.Tensor) -> torch.Tensor:
            identity = x
            out = self.conv1(x)
            out = self.conv2(out)
            if self.downsample is not None:
                identity = self.downsample(x)
            return _add_residual(self.drop_path, out, identity)

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(_inner_forward, x, use_reentrant=False)
        else:
            out = _inner_forward(x)
        return self.relu(out)


class DropPathBottleneck(Bottleneck):
    """MMAction2's ``Bottleneck`` with stochastic depth on its branch.

    Args:
        *args: Positional arguments of ``Bottleneck``.
        **kwargs: Keyword arguments of ``Bottleneck``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # set by RSANet; the identity until then
        self.drop_path: nn.Module = nn.Identity()

    @property
    def last_norm(self) -> nn.Module:
        """The BN at the end of the residual branch."""
        return self.conv3.bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block with the branch dropped per clip."""

        def _inner_forward(x: torch.Tensor) -> torch.Tensor:
            identity = x
            out = self.conv1(x)
            out = self.conv2(out)
            out = self.conv3(out)
            if self.downsample is not None:
                identity = self.downsample(x)
            return _add_residual(self.drop_path, out, identity)

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(_inner_forward, x, use_reentrant=False)
        else:
            out = _inner_forward(x)
        return self.relu(out)


@MODELS.register_module()
class RSANet(ResNet):
    """TSN ResNet with relational self-attention (RSANet).

    The 3x3 convolution of the blocks listed in ``rsa_blocks`` becomes an RSA
    layer with the same input and output channels and the same spatial
    stride (for ``BasicBlock``, the second 3x3 convolution). All other layers
    are MMAction2's :class:`ResNet`, so ImageNet weights load into them.
    With ``transform`` the selected blocks get another spatio-temporal
    transform of the paper's Table 2 the same way (:data:`TRANSFORMS`): a 3D
    or (2+1)D convolution, local self-attention or one of its variants.

    Initialisation (paper Sec. 5.1, supplementary Sec. 1), one step in
    :meth:`init_weights`:

    1. every convolution is MSRA-initialised (Kaiming normal, fan-out, the
       RSA layers' convolutions included, as the official code's ResNet init
       loop does; ``P1`` and ``I`` of RSA keep the layer's own init), every
       BN gets weight 1 and bias 0;
    2. if ``pretrained`` is set, the stem and every block without RSA are
       loaded from the ImageNet checkpoint (torchvision layout); the blocks
       that contain RSA are not;
    3. the last BN of every block that was not loaded gets gamma 0, so it
       starts as the identity (``zero_init_residual=True``, the paper's
       choice; a network trained from scratch may learn faster without it).

    What was loaded, what was not and which checkpoint tensors went unused
    are logged through :class:`~mmengine.logging.MMLogger`.

    Args:
        depth (int): ResNet depth, one of 18, 34, 50, 101.
        num_segments (int): Frames per clip T; the input batch must hold a
            whole number of clips. Defaults to 8.
        rsa_blocks (Sequence[Sequence[int]], optional): Per stage, the 0-based
            indices of the blocks whose 3x3 convolution becomes RSA. Defaults
            to ``None``: the paper's rule (:func:`default_rsa_blocks`), which
            for ResNet-50 is ``((2,), (1, 3), (1, 3, 5), (1,))`` (7 layers).
        rsa_cfg (dict, optional): Keyword arguments of the RSA layers, among
            ``kernel_size``, ``num_queries``, ``latent_dim``, ``kernel_type``,
            ``context_type``, ``corr_groups`` and ``norm``. ``num_queries``,
            ``latent_dim`` and ``corr_groups`` may also be a tuple with one
            value per stage (``latent_dim=(4, 8, 16, 32)`` is D = Cq / 2 with
            L = 8 in ResNet-50). Defaults to ``None``: the :class:`RSA`
            defaults (the paper's L = 8, D = Cq, M = 5x7x7, VR kernel, VR
            context, G = Cq, L2 norm). With another ``transform``, the
            keyword arguments of its layers, among the keys
            :data:`TRANSFORMS` lists (``kernel_size``; ``num_queries`` for
            the attentions).
        transform (str): The layer the selected blocks get: ``'rsa'``,
            ``'conv3d'`` (:class:`~mmrsa.models.common.Conv3dTransform`),
            ``'conv2plus1d'``
            (:class:`~mmrsa.models.common.Conv2Plus1dTransform`), ``'sa'``
            (:class:`~mmrsa.models.common.LocalSelfAttention`,
            ``σ(qK^T + qP^T)``), ``'sa-content'`` (``σ(qK^T)``),
            ``'sa-position'`` (``σ(qP^T)``) or ``'involution'`` (``qP^T``).
            Defaults to ``'rsa'``.
        drop_path_rate (float): Stochastic depth rate of the last block; the
            rate grows linearly from 0 at the first block. Defaults to 0
            (the paper's recipes use 0.2).
        pretrained (str, optional): ImageNet checkpoint in the torchvision
            layout: ``'torchvision://resnet50'``, a URL or a local path.
            Defaults to None.
        zero_init_residual (bool): Set the last BN's gamma of every block
            not loaded from ``pretrained`` to zero. Defaults to True.
        **kwargs: Other arguments of MMAction2's :class:`ResNet`
            (``out_indices``, ``frozen_stages``, ``norm_eval``, ``with_cp``,
            ``partial_bn``, ``norm_cfg``, ...).
    """

    arch_settings = {
        18: (DropPathBasicBlock, (2, 2, 2, 2)),
        34: (DropPathBasicBlock, (3, 4, 6, 3)),
        50: (DropPathBottleneck, (3, 4, 6, 3)),
        101: (DropPathBottleneck, (3, 4, 23, 3)),
    }

    def __init__(self,
                 depth: int,
                 num_segments: int = 8,
                 rsa_blocks: Optional[Sequence[Sequence[int]]] = None,
                 rsa_cfg: Optional[Dict] = None,
                 transform: str = 'rsa',
                 drop_path_rate: float = 0.,
                 pretrained: Optional[str] = None,
                 zero_init_residual: bool = True,
                 **kwargs) -> None:
        if depth not in self.arch_settings:
            raise ValueError(f'depth={depth!r} is not supported; choose one '
                             f'of {tuple(self.arch_settings)}.')
        if not isinstance(num_segments, int) or num_segments <= 0:
            raise ValueError(f'num_segments must be a positive int, got '
                             f'{num_segments!r}.')
        if not isinstance(drop_path_rate,
                          (int, float)) or not (0. <= drop_path_rate < 1.):
            raise ValueError(f'drop_path_rate must be in [0, 1), got '
                             f'{drop_path_rate!r}.')
        if pretrained is not None and not isinstance(pretrained, str):
            raise ValueError(f'pretrained must be a str or None, got '
                             f'{pretrained!r}.')
        if not kwargs.pop('torchvision_pretrain', True):
            raise ValueError(
                'RSANet loads ImageNet weights in the torchvision layout '
                'only; to start from a full RSANet checkpoint, use the '
                "config's `load_from`.")
        kwargs.setdefault('init_cfg', None)
        super().__init__(
            depth, pretrained=pretrained, torchvision_pretrain=True, **kwargs)
        if not isinstance(transform, str) or transform not in TRANSFORMS:
            raise ValueError(f'transform={transform!r} is not supported; '
                             f'choose one of {tuple(TRANSFORMS)}.')
        transform_keys = TRANSFORMS[transform][1]
        unknown = sorted(set(rsa_cfg) - set(transform_keys)) if isinstance(
            rsa_cfg, dict) else []
        if unknown:
            raise ValueError(f'rsa_cfg has unknown keys {unknown} for '
                             f'transform={transform!r}; allowed keys are '
                             f'{transform_keys}.')
        rsa_cfg = check_rsa_cfg(rsa_cfg, self.num_stages)
        self.transform = transform
        self.num_segments = num_segments
        self.zero_init_residual = bool(zero_init_residual)
        self.rsa_cfg = rsa_cfg
        self.drop_path_rate = float(drop_path_rate)
        self.rsa_blocks = self._check_rsa_blocks(rsa_blocks)
        self._add_drop_path()
        self._add_rsa_layers()

    # ------------------------------------------------------------------ #
    # structure
    # ------------------------------------------------------------------ #
    def _check_rsa_blocks(
        self, rsa_blocks: Optional[Sequence[Sequence[int]]]
    ) -> Tuple[Tuple[int, ...], ...]:
        """Validate ``rsa_blocks`` against the stages of this depth."""
        if rsa_blocks is None:
            full = default_rsa_blocks(self.arch_settings[self.depth][1])
            rsa_blocks = full[:self.num_stages]
        return check_rsa_blocks(
            rsa_blocks,
            self.stage_blocks,
            arch=f'ResNet-{self.depth}',
            dilations=self.dilations)

    def _blocks(self) -> List[Tuple[str, nn.Module]]:
        """All residual blocks in order, as ``(name, block)``."""
        return [(f'{layer_name}.{i}', block) for layer_name in self.res_layers
                for i, block in enumerate(getattr(self, layer_name))]

    def _add_drop_path(self) -> None:
        """Give block ``i`` of ``n`` the drop rate ``rate * i / (n - 1)``."""
        blocks = self._blocks()
        for i, (_, block) in enumerate(blocks):
            rate = self.drop_path_rate * i / max(len(blocks) - 1, 1)
            block.drop_path = (
                ClipDropPath(rate, self.num_segments)
                if rate > 0 else nn.Identity())

    def stage_rsa_cfg(self, stage: int) -> Dict:
        """The RSA keyword arguments of the layers in ``stage``."""
        return rsa_cfg_of_stage(self.rsa_cfg, stage)

    def _add_rsa_layers(self) -> None:
        """Replace the 3x3 convolution of the selected blocks with RSA (or
        with ``transform``); ``rsa_block_names`` lists those blocks."""
        self.rsa_block_names: List[str] = []
        layer_type, _, fixed = TRANSFORMS[self.transform]
        for stage, indices in enumerate(self.rsa_blocks):
            res_layer = getattr(self, self.res_layers[stage])
            rsa_cfg = self.stage_rsa_cfg(stage)
            for i in indices:
                block = res_layer[i]
                conv_module = block.conv2
                conv = conv_module.conv
                stride = conv.stride[0] if isinstance(conv.stride,
                                                      tuple) else conv.stride
                if self.transform == 'rsa':
                    conv_module.conv = FrameRSA(
                        conv.in_channels,
                        conv.out_channels,
                        num_segments=self.num_segments,
                        stride=stride,
                        **rsa_cfg)
                else:
                    conv_module.conv = FrameTransform(
                        layer_type(
                            conv.in_channels,
                            conv.out_channels,
                            stride=stride,
                            **fixed,
                            **rsa_cfg),
                        num_segments=self.num_segments)
                self.rsa_block_names.append(f'{self.res_layers[stage]}.{i}')

    # ------------------------------------------------------------------ #
    # initialisation
    # ------------------------------------------------------------------ #
    def _msra_init(self) -> None:
        """MSRA convolutions, unit BNs; RSA's ``P1`` and ``I`` (and the
        attention's ``P``) as the layer defines them."""
        transform_types = tuple({t for t, _, _ in TRANSFORMS.values()})
        for m in self.modules():
            if isinstance(m, transform_types):
                m.reset_parameters()
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(
                    m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _BatchNorm):
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                m.reset_running_stats()

    def load_imagenet_weights(
            self,
            pretrained: str,
            logger: Optional[MMLogger] = None) -> Tuple[List[str], List[str]]:
        """Load a torchvision-layout ResNet into all blocks without RSA.

        Args:
            pretrained (str): ``torchvision://NAME``, a URL or a local path.
            logger (MMLogger, optional): Where to log. Defaults to the
                current MMLogger.

        Returns:
            tuple[list[str], list[str]]: The names of the blocks that were
            loaded (``'stem'`` and ``'layerX.Y'``) and of those that were not.
        """
        logger = logger or MMLogger.get_current_instance()
        checkpoint = load_checkpoint_file(pretrained, map_location='cpu')
        for key in ('state_dict', 'model'):
            if isinstance(checkpoint, dict) and key in checkpoint:
                checkpoint = checkpoint[key]
        state_dict = OrderedDict((k[7:] if k.startswith('module.') else k, v)
                                 for k, v in checkpoint.items())

        # each unit is loaded completely or not at all
        units = [('stem', [('conv1', self.conv1)])] + [(name, [
            (f'{name}.{sub}', m)
            for sub, m in block.named_modules() if isinstance(m, ConvModule)
        ]) for name, block in self._blocks()]
        used, loaded, skipped, incomplete = set(), [], [], []
        for unit, conv_modules in units:
            if unit in self.rsa_block_names:
                skipped.append(unit)
                continue
            pairs = [
                pair for name, module in conv_modules
                for pair in self._tv_tensors(name, module)
            ]
            missing = [
                k for k, t in pairs
                if k not in state_dict or state_dict[k].shape != t.shape
            ]
            # BN step counters are copied when the checkpoint has them
            pairs += [(k, t) for name, module in conv_modules
                      for k, t in self._tv_counters(name, module)
                      if k in state_dict]
            if missing:
                incomplete.append(unit)
                logger.warning(
                    f'RSANet: {unit} is not loaded from {pretrained}; '
                    f'missing or mis-shaped tensors: {missing}')
                continue
            with torch.no_grad():
                for k, t in pairs:
                    t.copy_(state_dict[k])
                    used.add(k)
            loaded.append(unit)

        unused = sorted(set(state_dict) - used)
        logger.info(f'RSANet: loaded {len(used)} tensors from {pretrained} '
                    f'into the stem and the blocks without RSA: {loaded}')
        logger.info(
            f'RSANet: blocks with RSA, MSRA-initialised with zero last-BN '
            f'gamma (not loaded): {skipped}')
        if unused:
            logger.info(f'RSANet: checkpoint tensors not loaded: '
                        f'{self._summarise(unused)}')
        return loaded, skipped + incomplete

    @staticmethod
    def _tv_names(name: str) -> Tuple[str, str]:
        """Torchvision names of the conv and the BN of one ConvModule.

        ``layerX.Y.convK`` -> ``layerX.Y.convK`` and ``layerX.Y.bnK``;
        ``layerX.Y.downsample`` -> ``layerX.Y.downsample.0`` and ``.1``;
        ``conv1`` (stem) -> ``conv1`` and ``bn1``.
        """
        if name.endswith('downsample'):
            return f'{name}.0', f'{name}.1'
        head, _, last = name.rpartition('.')
        return name, (f'{head}.' if head else '') + last.replace('conv', 'bn')

    @classmethod
    def _tv_tensors(cls, name: str,
                    module: ConvModule) -> List[Tuple[str, torch.Tensor]]:
        """The tensors of one ConvModule under their torchvision names."""
        conv_name, bn_name = cls._tv_names(name)
        tensors = [(f'{conv_name}.weight', module.conv.weight)]
        if module.conv.bias is not None:
            tensors.append((f'{conv_name}.bias', module.conv.bias))
        bn = module.bn
        for key in ('weight', 'bias', 'running_mean', 'running_var'):
            tensors.append((f'{bn_name}.{key}', getattr(bn, key)))
        return tensors

    @classmethod
    def _tv_counters(cls, name: str,
                     module: ConvModule) -> List[Tuple[str, torch.Tensor]]:
        """The BN step counter of one ConvModule, as torchvision names it."""
        _, bn_name = cls._tv_names(name)
        counter = getattr(module.bn, 'num_batches_tracked', None)
        if counter is None:
            return []
        return [(f'{bn_name}.num_batches_tracked', counter)]

    @staticmethod
    def _summarise(keys: List[str]) -> str:
        """``['layer1.2.conv1.weight', ...]`` -> ``'layer1.2.* (15)'``."""
        groups: Dict[str, int] = OrderedDict()
        for key in keys:
            parts = key.split('.')
            prefix = '.'.join(
                parts[:2]) if parts[0].startswith('layer') else parts[0]
            groups[prefix] = groups.get(prefix, 0) + 1
        return ', '.join(f'{p}.* ({n})' for p, n in groups.items())

    def init_weights(self) -> None:
        """MSRA init, ImageNet weights for the blocks without RSA, zero
        last-BN gamma for the rest (see the class docstring)."""
        logger = MMLogger.get_current_instance()
        self._msra_init()
        if self.pretrained is None:
            not_loaded = [name for name, _ in self._blocks()]
            logger.info('RSANet: no `pretrained`, every layer MSRA-'
                        'initialised' + (' with zero last-BN gamma.' if self.
                                         zero_init_residual else '.'))
        else:
            _, not_loaded = self.load_imagenet_weights(self.pretrained, logger)
        if not self.zero_init_residual:
            return
        blocks = dict(self._blocks())
        for name in not_loaded:
            if name in blocks:
                nn.init.zeros_(blocks[name].last_norm.weight)

    # ------------------------------------------------------------------ #
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Refuse, loudly, a checkpoint that would leave the backbone random.

        ``init_recognizer`` and ``load_from=`` load non-strictly: a
        checkpoint with none of the backbone's keys, or with tensors of other
        shapes, would only log a warning and run with random weights. Both
        raise :class:`~mmrsa.engine.CheckpointMismatchError` here. Missing
        RSA tensors (an ImageNet/TSN checkpoint) and another head stay
        allowed, as MMEngine allows them.
        """
        ours = {prefix + k: v for k, v in self.state_dict().items()}
        given = [k for k in state_dict if k.startswith(prefix)]
        problems = []
        if ours and not given:
            sample = ', '.join(list(state_dict)[:4]) or 'no keys at all'
            problems.append(
                f'none of the backbone\'s {len(ours)} tensors ({prefix}...) '
                f'is in the checkpoint (it holds e.g. {sample})')
        mismatched = [(k, tuple(state_dict[k].shape), tuple(v.shape))
                      for k, v in ours.items()
                      if k in state_dict and hasattr(state_dict[k], 'shape')
                      and tuple(state_dict[k].shape) != tuple(v.shape)]
        if mismatched:
            shown = [
                f'{k}: checkpoint {c}, model {m}' for k, c, m in mismatched[:4]
            ]
            problems.append(f'{len(mismatched)} tensors have other shapes: '
                            f'{shown}')
        if problems:
            from mmrsa.engine.hooks.checkpoint_fit_hook import \
                CheckpointMismatchError
            raise CheckpointMismatchError(
                'the checkpoint does not fit this RSANet: ' +
                '; '.join(problems) + '. Loading it would leave the backbone '
                'with random weights. Check that config and checkpoint '
                'belong together (an authors\' .pth.tar is converted by '
                'the loader; tools/convert/convert_official_checkpoint.py '
                'writes a converted copy).', [], [], mismatched)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def train(self, mode: bool = True) -> 'RSANet':
        """Set the training mode (``ResNet.train`` frozen stages and
        ``norm_eval`` included) and return ``self`` as ``nn.Module`` does."""
        super().train(mode)
        return self

    def forward(
            self,
            x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """Extract features from a batch of whole clips.

        Args:
            x (torch.Tensor): ``[N*T, 3, H, W]``, T = ``num_segments``.
                Several clips of one video (e.g. ``twice_sample``) are just
                more clips.

        Returns:
            torch.Tensor | tuple[torch.Tensor]: ``[N*T, C, h, w]`` for each
            stage in ``out_indices``.
        """
        if x.dim() != 4 or x.shape[0] % self.num_segments != 0:
            raise ValueError(
                f'RSANet was built for clips of num_segments='
                f'{self.num_segments} frames and expects a batch of whole '
                f'clips [N*{self.num_segments}, C, H, W], got shape '
                f'{tuple(x.shape)}. Sample {self.num_segments} frames per '
                f'clip (SampleFrames(num_clips={self.num_segments}, '
                f'clip_len=1)) or set the backbone\'s num_segments.')
        return super().forward(x)
