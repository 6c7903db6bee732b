# Copyright (c) mmrsa contributors. All rights reserved.
"""The authors' TSN-RSANet forward pass, on their own tensors (``--verify``).

An oracle for the conversion: :func:`official_forward` runs the official
network (a ``Conv3d`` ResNet with ``(1, k, k)`` kernels, RSA layers in place
of some ``conv2``, ``new_fc`` on every frame averaged over the frames) on an
official state dict, without the key map and without mmrsa's model, and the
converter compares its logits with the converted model's. Its RSA layers
are the literal reference, :func:`mmrsa.models.common.rsa_reference.
rsa_reference`, fed with the official tensors
(:func:`official_rsa_weights`); it shares no code with the production layer
:mod:`mmrsa.models.common.rsa`, which the converted model runs, so a mistake
in the key map or in the layer shows up as a difference.
"""
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from ...models.common.rsa_reference import RSAWeights, rsa_reference
from .settings import official_blocks, official_settings

__all__ = ['official_rsa_weights', 'official_rsa_forward', 'official_forward']


def _bn(x: torch.Tensor, sd: Dict, prefix: str) -> torch.Tensor:
    """The official ``BatchNorm3d`` at ``prefix`` in eval mode."""
    return F.batch_norm(x, sd[prefix + 'running_mean'],
                        sd[prefix + 'running_var'], sd[prefix + 'weight'],
                        sd[prefix + 'bias'], False, 0., 1e-5)


def official_rsa_weights(sd: Dict,
                         prefix: str,
                         settings: Dict,
                         stride: int = 1) -> RSAWeights:
    """The official RSA layer at ``prefix`` as the reference's weights.

    The tensors keep their official layout except the leading 1 of ``P1``
    and ``I``; the official basic-only kernel, which has no ``P1``,
    multiplies the query by the identity (``P1 = eye(Cq)``). The official
    layer always L2-normalises and correlates channel-wise.

    Args:
        sd (dict): Official state dict (``module.`` dropped).
        prefix (str): ``'base_model.layerX.Y.conv2.'``.
        settings (dict): From
            :func:`~mmrsa.converters.official.settings.official_rsa_settings`.
        stride (int): Spatial stride of the block. Defaults to 1.
    """
    cq = settings['query_channels']
    projection = sd[prefix + 'projection.weight']
    p1 = sd.get(prefix + 'P1')
    if p1 is not None:
        p1 = p1[0]  # [1, Cq, D] -> [Cq, D]
    elif 'V' in settings['kernel_type']:
        p1 = torch.eye(cq, dtype=projection.dtype, device=projection.device)
    eye = sd.get(prefix + 'I')
    return RSAWeights(
        projection=projection,
        H2=sd[prefix + 'H2.weight'],
        num_queries=settings['num_queries'],
        query_channels=cq,
        kernel_type=settings['kernel_type'],
        context_type=settings['context_type'],
        H1=sd.get(prefix + 'H1.weight'),
        P1=p1,
        G=sd.get(prefix + 'G.weight'),
        I=None if eye is None else eye[0],  # [1, Cq, Cq] -> [Cq, Cq]
        corr_groups=None,
        norm='l2',
        stride=stride)


def official_rsa_forward(x: torch.Tensor, sd: Dict, prefix: str,
                         settings: Dict, stride: int) -> torch.Tensor:
    """The official RSA layer at ``prefix``, by the literal reference.

    Args:
        x (torch.Tensor): ``[N, C, T, H, W]``.
        sd (dict): Official state dict.
        prefix (str): ``'base_model.layerX.Y.conv2.'``.
        settings (dict): From
            :func:`~mmrsa.converters.official.settings.official_rsa_settings`.
        stride (int): Spatial stride of the block.

    Returns:
        torch.Tensor: ``[N, Cq*L, T, H', W']``, channel ``c * L + l`` (value
        channel major), as the official layer.
    """
    return rsa_reference(official_rsa_weights(sd, prefix, settings, stride), x)


@torch.no_grad()
def official_forward(sd: Dict,
                     clip: torch.Tensor,
                     settings: Optional[Dict] = None) -> torch.Tensor:
    """Logits of the official TSN-RSANet, from its own tensors.

    Args:
        sd (dict): Official state dict (``module.`` dropped).
        clip (torch.Tensor): ``[N, T, 3, H, W]`` normalised frames.
        settings (dict, optional): From
            :func:`~mmrsa.converters.official.settings.official_settings`.
            Defaults to reading them from ``sd``.

    Returns:
        torch.Tensor: ``[N, classes]``: ``new_fc`` on every frame's pooled
        feature, averaged over the T frames.
    """
    settings = settings or official_settings(sd)
    n, t = clip.shape[:2]
    x = clip.transpose(1, 2)  # [N, T, 3, H, W] -> [N, 3, T, H, W]
    x = F.conv3d(
        x, sd['base_model.conv1.weight'], stride=(1, 2, 2), padding=(0, 3, 3))
    x = F.relu(_bn(x, sd, 'base_model.bn1.'))
    x = F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))
    for stage, indices in enumerate(official_blocks(sd), 1):
        for i in indices:
            p = f'base_model.layer{stage}.{i}.'
            stride = 2 if stage > 1 and i == 0 else 1
            out = F.relu(
                _bn(F.conv3d(x, sd[p + 'conv1.weight']), sd, p + 'bn1.'))
            block = f'layer{stage}.{i}'
            if block in settings['rsa_layers']:
                out = official_rsa_forward(out, sd, p + 'conv2.',
                                           settings['rsa_layers'][block],
                                           stride)
            else:
                weight = sd[p + 'conv2.weight']
                out = F.conv3d(
                    out,
                    weight,
                    stride=(1, stride, stride),
                    padding=(0, weight.shape[3] // 2, weight.shape[4] // 2))
            out = F.relu(_bn(out, sd, p + 'bn2.'))
            out = _bn(F.conv3d(out, sd[p + 'conv3.weight']), sd, p + 'bn3.')
            if p + 'downsample.0.weight' in sd:
                x = _bn(
                    F.conv3d(
                        x,
                        sd[p + 'downsample.0.weight'],
                        stride=(1, stride, stride)), sd, p + 'downsample.1.')
            x = F.relu(out + x)
    feat = x.mean((3, 4)).transpose(1, 2)  # [N, C, T, H, W] -> [N, T, C]
    fc = 'new_fc.' if 'new_fc.weight' in sd else 'base_model.fc1.'
    # [N*T, C, 1] -> [N*T, classes, 1] -> [N, T, classes] -> [N, classes]
    logits = F.conv1d(
        feat.reshape(n * t, -1, 1), sd[fc + 'weight'], sd[fc + 'bias'])
    return logits.reshape(n, t, -1).mean(1)
