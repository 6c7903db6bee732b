# Copyright (c) mmrsa contributors. All rights reserved.
"""RSAHybrid: RSA layers at chosen blocks of any MMAction2 ResNet backbone.

:class:`~mmrsa.models.backbones.RSANet` is a TSN ResNet of its own. This
wrapper puts RSA into MMAction2's own ResNet family instead, keeping what
each backbone adds (temporal shift, 3D convolutions, inflation of ImageNet
weights) and the recognizer it runs under::

    RSAHybrid(backbone=dict(type='ResNetTSM', ...), rsa_blocks=...)
    │
    │  builds the backbone, then in each chosen block:
    │
    │  2D backbone (ResNet, ResNetTSM, ...; Recognizer2D, [N*T, C, H, W]):
    │      conv2.conv = FrameRSA    [N*T, C, H, W] -> [N, C, T, H, W] -> RSA
    │                               -> [N*T, C', H', W']   (needs T)
    │  3D backbone (ResNet3d, ResNet3dSlowOnly, ...; Recognizer3D,
    │  [N, C, T, H, W]):
    │      conv2.conv = RSA         [N, C, T, H, W] -> [N, C', T, H', W']
    │
    └─ forward(x) = backbone(x): same input, same outputs, same heads

``conv2`` is the 3x3 convolution of a bottleneck and the second 3x3 of a
basic block, as in RSANet; its norm, activation and the rest of the block
stay. Why a wrapper and not a ``conv_cfg=dict(type='RSA')``: ``conv_cfg``
applies to every convolution of a backbone (stem, shortcuts, all blocks),
not to chosen blocks, and RSA has no ``padding``/``dilation``/``groups``.
"""
import copy
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import BaseModule

from mmaction.registry import MODELS
from ..common.rsa import RSA
from .rsanet import (FrameRSA, check_rsa_blocks, check_rsa_cfg,
                     default_rsa_blocks, rsa_cfg_of_stage)

__all__ = ['RSAHybrid']

#: Attributes under which MMAction2's block wrappers keep the block
#: (``TemporalShift.net`` with ``shift_place='block'``,
#: ``NL3DWrapper.block`` with non-local blocks).
_WRAPPED_BLOCK_ATTRS = ('net', 'block')

#: ``pretrained`` not given: the wrapped backbone's own setting stands.
_KEEP = object()


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@MODELS.register_module()
class RSAHybrid(BaseModule):
    """An MMAction2 ResNet-family backbone with RSA at chosen blocks.

    The wrapped backbone is built from ``backbone`` as MMAction2 builds it;
    then the ``conv2`` convolution of every block listed in ``rsa_blocks``
    becomes an RSA layer with the same input and output channels and the
    same spatial stride:

    - a ``Conv2d`` (2D backbones, frames ``[N*T, C, H, W]``) becomes a
      :class:`~mmrsa.models.backbones.FrameRSA`, which regroups the frames
      into clips of ``num_segments`` frames;
    - a ``Conv3d`` (3D backbones, clips ``[N, C, T, H, W]``) becomes an
      :class:`~mmrsa.models.common.RSA`, its ``(1, s, s)`` stride the RSA
      layer's stride ``s``.

    A replaced convolution must be "same"-padded with odd kernels, without
    dilation and without temporal stride (RSA keeps T); otherwise a
    ``ValueError`` names the block.

    Initialisation (:meth:`init_weights`): the wrapped backbone's own
    ``init_weights`` runs on a fresh copy of the plain backbone (so its
    ImageNet loading, e.g. ``pretrained`` with ``pretrained2d=True`` for
    TSM or 3D inflation, sees the structure it was written for), and every
    tensor of that copy is copied into this backbone except the replaced
    convolutions' weights. The RSA layers keep their own initialisation
    (:meth:`RSA.reset_parameters`); the norm after each of them is the
    backbone's (loaded, or as its init sets it, e.g. zero gamma with
    ``zero_init_residual``). The blocks with RSA and the tensors not
    loaded are logged.

    Args:
        backbone (dict): Config of an MMAction2 ResNet-family backbone,
            e.g. ``dict(type='ResNetTSM', depth=50, num_segments=8)``,
            ``dict(type='ResNet3dSlowOnly', depth=50, ...)``. It must have
            ``res_layers`` and ``stage_blocks`` (MMAction2's ``ResNet``,
            ``ResNetTSM``, ``ResNetTIN``, ``ResNet3d``, ``ResNet3dSlowOnly``
            and their relatives). ``temporal_pool=True`` is not supported.
        rsa_blocks (Sequence[Sequence[int]], optional): Per stage, the
            0-based indices of the blocks whose ``conv2`` becomes RSA, e.g.
            ``((), (1, ), (1, ), ())``. Defaults to ``None``: the paper's
            rule (:func:`~mmrsa.models.backbones.default_rsa_blocks`).
        rsa_cfg (dict, optional): Keyword arguments of the RSA layers, as
            RSANet's ``rsa_cfg`` (per-stage tuples allowed for
            ``num_queries``, ``latent_dim``, ``corr_groups``). Defaults to
            ``None`` (the :class:`RSA` defaults).
        num_segments (int, optional): Frames per clip T of a 2D backbone.
            Defaults to ``None``: the backbone's own ``num_segments`` (as
            ``ResNetTSM`` has). Not accepted for a 3D backbone, which sees
            the clip.
        pretrained (str, optional): Only for tools that set
            ``model.backbone.pretrained`` (MMAction2's benchmark, tests):
            when given, it replaces the wrapped backbone's ``pretrained``;
            ``None`` turns ImageNet loading off (and ``pretrained2d`` with
            it, which MMAction2's TSM and 3D backbones need). Not given by
            default: write ``pretrained`` in the wrapped backbone's config.
        init_cfg (dict, optional): Not supported (the wrapped backbone's
            ``pretrained``/``init_cfg`` initialise it); must be None.
    """

    def __init__(self,
                 backbone: Dict,
                 *,
                 rsa_blocks: Optional[Sequence[Sequence[int]]] = None,
                 rsa_cfg: Optional[Dict] = None,
                 num_segments: Optional[int] = None,
                 pretrained: Union[str, None, object] = _KEEP,
                 init_cfg: Optional[Dict] = None) -> None:
        if not isinstance(backbone, dict) or 'type' not in backbone:
            raise ValueError(
                f'backbone must be the config dict of an MMAction2 backbone '
                f"(with a 'type'), e.g. dict(type='ResNetTSM', depth=50), "
                f'got {backbone!r}.')
        if init_cfg is not None:
            raise ValueError(
                'RSAHybrid takes no init_cfg: set `pretrained` (and '
                '`pretrained2d`) or `init_cfg` in the wrapped backbone\'s '
                'config; the RSA layers keep their own initialisation.')
        if num_segments is not None and not _positive_int(num_segments):
            raise ValueError(f'num_segments must be a positive int or None, '
                             f'got {num_segments!r}.')
        if pretrained is not _KEEP and pretrained is not None and \
                not isinstance(pretrained, str):
            raise ValueError(f'pretrained must be a str or None, got '
                             f'{pretrained!r}.')
        super().__init__()
        self.backbone_cfg = copy.deepcopy(dict(backbone))
        if pretrained is not _KEEP:
            self.backbone_cfg['pretrained'] = pretrained
        self.backbone = MODELS.build(copy.deepcopy(self.backbone_cfg))
        if pretrained is None and getattr(self.backbone, 'pretrained2d',
                                          False):
            # MMAction2's TSM and 3D backbones fail with pretrained=None
            # unless pretrained2d is False
            self.backbone_cfg['pretrained2d'] = False
            self.backbone.pretrained2d = False
        self.arch = self._arch_name()
        stage_blocks = self._stage_blocks()
        if getattr(self.backbone, 'temporal_pool', False):
            raise ValueError(
                f'RSAHybrid does not support {self.arch} with '
                f'temporal_pool=True: the clip length changes inside the '
                f'network, so the RSA layers would not know T.')
        if rsa_blocks is None:
            rsa_blocks = default_rsa_blocks(stage_blocks)
        self.rsa_blocks = check_rsa_blocks(
            rsa_blocks, stage_blocks, arch=self.arch)
        self.rsa_cfg = check_rsa_cfg(rsa_cfg, len(stage_blocks))
        self._requested_segments = num_segments
        self.num_segments: Optional[int] = None
        self.rsa_block_names: List[str] = []
        #: names of the replaced convolutions' tensors (not loaded at init)
        self.replaced_keys: List[str] = []
        self._add_rsa_layers()

    # ------------------------------------------------------------------ #
    # structure
    # ------------------------------------------------------------------ #
    def _arch_name(self) -> str:
        """``'ResNetTSM-50'``: the type and depth, for messages."""
        kind = self.backbone_cfg['type']
        kind = kind if isinstance(kind, str) else getattr(
            kind, '__name__', str(kind))
        depth = getattr(self.backbone, 'depth', None)
        return f'{kind}-{depth}' if depth is not None else kind

    def _stage_blocks(self) -> Tuple[int, ...]:
        res_layers = getattr(self.backbone, 'res_layers', None)
        stage_blocks = getattr(self.backbone, 'stage_blocks', None)
        if not res_layers or stage_blocks is None:
            raise ValueError(
                f'RSAHybrid wraps MMAction2\'s ResNet family (backbones with '
                f'`res_layers` and `stage_blocks`: ResNet, ResNetTSM, '
                f'ResNet3d, ResNet3dSlowOnly, ...); {self.arch} has none.')
        return tuple(stage_blocks)[:len(res_layers)]

    def _block(self, stage: int, index: int) -> nn.Module:
        """Block ``index`` of ``stage``, unwrapped from MMAction2's block
        wrappers (temporal shift, non-local)."""
        block = getattr(self.backbone, self.backbone.res_layers[stage])[index]
        while not hasattr(block, 'conv2'):
            inner = next((getattr(block, a) for a in _WRAPPED_BLOCK_ATTRS
                          if isinstance(getattr(block, a, None), nn.Module)),
                         None)
            if inner is None:
                raise ValueError(
                    f'{self.backbone.res_layers[stage]}.{index} of '
                    f'{self.arch} ({type(block).__name__}) has no conv2 to '
                    f'replace with RSA.')
            block = inner
        return block

    def _segments_for_2d(self) -> int:
        """T of a 2D backbone: the wrapper's or the backbone's, which must
        agree when both are given."""
        own = getattr(self.backbone, 'num_segments', None)
        wanted = self._requested_segments
        if wanted is not None and own is not None and wanted != own:
            raise ValueError(
                f'num_segments={wanted} but the wrapped {self.arch} has '
                f'num_segments={own}; set it once, in the backbone.')
        value = wanted if wanted is not None else own
        if not _positive_int(value):
            raise ValueError(
                f'{self.arch} is a 2D backbone: its RSA layers regroup '
                f'frames [N*T, C, H, W] into clips, so RSAHybrid needs '
                f'num_segments=T (got {value!r}).')
        return value

    def _rsa_stride(self, conv: nn.Module, where: str) -> int:
        """The spatial stride of ``conv``, after checking that an RSA layer
        can replace it (odd same-padded kernel, no dilation, no temporal
        stride, equal spatial strides)."""
        dims = 2 if isinstance(conv, nn.Conv2d) else 3
        kernel, padding = tuple(conv.kernel_size), tuple(conv.padding)
        stride, dilation = tuple(conv.stride), tuple(conv.dilation)
        if any(d != 1 for d in dilation):
            raise ValueError(
                f'RSA layers do not support dilation; the conv2 of {where} '
                f'has dilation {dilation}.')
        if isinstance(conv.padding, str) or any(
                k % 2 == 0 or p != k // 2 for k, p in zip(kernel, padding)):
            raise ValueError(
                f'The conv2 of {where} (kernel {kernel}, padding '
                f'{conv.padding}) is not an odd, same-padded convolution; an '
                f'RSA layer in its place would change the output size.')
        if dims == 3 and stride[0] != 1:
            raise ValueError(
                f'RSA layers keep the number of frames; the conv2 of {where} '
                f'has temporal stride {stride[0]}. Choose another block or '
                f'set the stage\'s temporal stride to 1.')
        if stride[-1] != stride[-2]:
            raise ValueError(
                f'RSA layers take one spatial stride; the conv2 of {where} '
                f'has stride {stride}.')
        return stride[-1]

    def _add_rsa_layers(self) -> None:
        """Replace the ``conv2`` convolution of the chosen blocks."""
        for stage, indices in enumerate(self.rsa_blocks):
            layer_name = self.backbone.res_layers[stage]
            rsa_cfg = rsa_cfg_of_stage(self.rsa_cfg, stage)
            for index in indices:
                where = f'{layer_name}.{index} of {self.arch}'
                block = self._block(stage, index)
                conv_module = block.conv2
                conv = getattr(conv_module, 'conv', None)
                if not isinstance(conv, (nn.Conv2d, nn.Conv3d)):
                    raise ValueError(
                        f'The conv2 of {where} is a {type(conv).__name__}; '
                        f'RSAHybrid replaces plain nn.Conv2d (2D backbones) '
                        f'or nn.Conv3d (3D backbones) convolutions only.')
                stride = self._rsa_stride(conv, where)
                if isinstance(conv, nn.Conv2d):
                    if self.num_segments is None:
                        self.num_segments = self._segments_for_2d()
                    layer: nn.Module = FrameRSA(
                        conv.in_channels,
                        conv.out_channels,
                        num_segments=self.num_segments,
                        stride=stride,
                        **rsa_cfg)
                else:
                    if self._requested_segments is not None:
                        raise ValueError(
                            f'num_segments is for 2D backbones; {self.arch} '
                            f'is 3D and takes whole clips [N, C, T, H, W]. '
                            f'Remove num_segments.')
                    layer = RSA(
                        conv.in_channels,
                        conv.out_channels,
                        stride=stride,
                        **rsa_cfg)
                conv_module.conv = layer
                # the replaced tensors, under their names in the backbone
                prefix = self._module_name(conv_module)
                self.replaced_keys += [
                    f'{prefix}.conv.{k}' for k in conv.state_dict()
                ]
                self.rsa_block_names.append(f'{layer_name}.{index}')
        if self.num_segments is None and self._requested_segments is not None:
            # no RSA layer in a 2D backbone: keep what was asked (for checks)
            self.num_segments = self._requested_segments

    def _module_name(self, module: nn.Module) -> str:
        return next(name for name, m in self.backbone.named_modules()
                    if m is module)

    def rsa_layers(self) -> List[Tuple[str, RSA]]:
        """The RSA layers, as ``(name in the backbone, layer)``."""
        return [(name, m) for name, m in self.backbone.named_modules()
                if isinstance(m, RSA)]

    # ------------------------------------------------------------------ #
    # initialisation
    # ------------------------------------------------------------------ #
    def init_weights(self) -> None:
        """The wrapped backbone's own initialisation, the RSA layers' own
        (see the class docstring); logs which blocks have RSA."""
        logger = MMLogger.get_current_instance()
        # the plain backbone, initialised by its own code (ImageNet loading,
        # inflation, zero_init_residual, ...)
        plain = MODELS.build(copy.deepcopy(self.backbone_cfg))
        # as a submodule of a model would be: MMEngine records the init of
        # a top-level module and logs every tensor of it, which for this
        # throwaway copy would list tensors the model does not have
        init_info = defaultdict(dict)
        for param in plain.parameters():
            init_info[param]['init_info'] = f'{self.arch}.init_weights'
            init_info[param]['tmp_mean_value'] = param.detach().mean().cpu()
        for module in plain.modules():
            module._params_init_info = init_info
        plain.init_weights()
        source = plain.state_dict()
        target = self.backbone.state_dict()
        not_loaded = sorted(set(source) - set(target))
        rsa_only = sorted(set(target) - set(source))
        expected_rsa = {
            f'{name}.{k}'
            for name, layer in self.rsa_layers()
            for k in layer.state_dict()
        }
        if (set(not_loaded) != set(self.replaced_keys)
                or set(rsa_only) != expected_rsa):
            raise RuntimeError(
                f'RSAHybrid: the plain {self.arch} and this backbone differ '
                f'beyond the replaced convolutions (only in the plain one: '
                f'{not_loaded}; only here: {rsa_only}).')
        with torch.no_grad():
            for key, tensor in target.items():
                if key in source:
                    tensor.copy_(source[key])
            for _, layer in self.rsa_layers():
                layer.reset_parameters()
        del plain, source
        pretrained = self.backbone_cfg.get('pretrained')
        logger.info(
            f'RSAHybrid: {self.arch} initialised by its own init_weights '
            f'(pretrained={pretrained!r}); RSA layers with their own '
            f'initialisation (not loaded) in the blocks {self.rsa_block_names}'
        )
        if not_loaded:
            logger.info(f'RSAHybrid: {self.arch} tensors replaced by RSA, not '
                        f'used: {not_loaded}')

    # ------------------------------------------------------------------ #
    def train(self, mode: bool = True) -> 'RSAHybrid':
        """Set the training mode (the wrapped backbone's frozen stages and
        ``norm_eval`` included) and return ``self``."""
        super().train(mode)
        return self

    def forward(
            self,
            x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """The wrapped backbone's forward.

        Args:
            x (torch.Tensor): What the wrapped backbone takes: frames
                ``[N*T, C, H, W]`` (2D, T = ``num_segments``) or clips
                ``[N, C, T, H, W]`` (3D).

        Returns:
            torch.Tensor | tuple[torch.Tensor]: What it returns.
        """
        t = self.num_segments
        if t is not None and (x.dim() != 4 or x.shape[0] % t != 0):
            raise ValueError(
                f'RSAHybrid({self.arch}) was built for clips of '
                f'num_segments={t} frames and expects a batch of whole '
                f'clips [N*{t}, C, H, W], got shape {tuple(x.shape)}. Sample '
                f'{t} frames per clip (SampleFrames(num_clips={t}, '
                f'clip_len=1)) or set the backbone\'s num_segments.')
        return self.backbone(x)
