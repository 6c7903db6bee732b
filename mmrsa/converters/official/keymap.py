# Copyright (c) mmrsa contributors. All rights reserved.
"""Official key -> mmrsa key, and the tensor layout changes.

Key and layout map (official key with ``module.`` dropped -> mmrsa key;
``X`` = 1..4 is the stage, ``Y`` the block, ``K`` = 1, 2, 3)::

    base_model.conv1.weight       -> backbone.conv1.conv.weight
        [64, 3, 1, 7, 7] -> [64, 3, 7, 7]
    base_model.bn1.*              -> backbone.conv1.bn.*
    base_model.layerX.Y.convK.weight (plain convolutions)
                                  -> backbone.layerX.Y.convK.conv.weight
        [O, I, 1, k, k] -> [O, I, k, k]
    base_model.layerX.Y.bnK.*     -> backbone.layerX.Y.convK.bn.*
    base_model.layerX.Y.downsample.0.weight
                                  -> backbone.layerX.Y.downsample.conv.weight
        [O, I, 1, 1, 1] -> [O, I, 1, 1]
    base_model.layerX.Y.downsample.1.*
                                  -> backbone.layerX.Y.downsample.bn.*
    RSA layers: base_model.layerX.Y.conv2.<p>
                                  -> backbone.layerX.Y.conv2.conv.<p>
    projection.weight  same, [L*Cq (+ Cq) + Cq, C, 1, 1, 1],
                       rows [query | key (relational kernel only) | value]
    H1.weight          same, [Cq*D, 1, kt, kh, kw]
    H2.weight          same, [D, 1, kt, kh, kw]
    G.weight           same, [Cq, 1, kt, kh, kw]
    P1                 [1, Cq, D] -> [Cq, D]; absent in the official
                       basic-only kernel ('V'), which is P1 = eye(Cq), D = Cq
    I                  [1, Cq, Cq] -> [Cq, Cq]
    new_fc.weight      -> cls_head.fc_cls.weight
        [classes, 2048, 1] -> [classes, 2048]
    new_fc.bias        -> cls_head.fc_cls.bias
    (base_model.fc1.* instead of new_fc.* when trained with dropout 0)

The official layer's output channel ``c * L + l`` (value channel major) is
ours. BN step counters missing from old checkpoints are set to 0. Both
classifiers give the same logits: the official one applies ``new_fc`` to
each frame and averages, as the recipes' ``TSMHead(is_shift=False)`` does
with ``fc_cls`` (``TSNHead`` averages first and applies ``fc_cls`` after,
which commutes: the same logits).
"""
import re
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch

from .errors import ConversionError
from .settings import official_settings

__all__ = ['map_key', 'convert_state_dict']

_RULES = (
    # (pattern on the official key, mmrsa key template, layout)
    (r'^base_model\.conv1\.weight$', 'backbone.conv1.conv.weight', 'conv'),
    (r'^base_model\.bn1\.(\w+)$', r'backbone.conv1.bn.\1', 'same'),
    (r'^base_model\.layer(\d)\.(\d+)\.conv2\.(projection|H1|H2|G)\.weight$',
     r'backbone.layer\1.\2.conv2.conv.\3.weight', 'same'),
    (r'^base_model\.layer(\d)\.(\d+)\.conv2\.(P1|I)$',
     r'backbone.layer\1.\2.conv2.conv.\3', 'squeeze0'),
    (r'^base_model\.layer(\d)\.(\d+)\.conv([123])\.weight$',
     r'backbone.layer\1.\2.conv\3.conv.weight', 'conv'),
    (r'^base_model\.layer(\d)\.(\d+)\.bn([123])\.(\w+)$',
     r'backbone.layer\1.\2.conv\3.bn.\4', 'same'),
    (r'^base_model\.layer(\d)\.(\d+)\.downsample\.0\.weight$',
     r'backbone.layer\1.\2.downsample.conv.weight', 'conv'),
    (r'^base_model\.layer(\d)\.(\d+)\.downsample\.1\.(\w+)$',
     r'backbone.layer\1.\2.downsample.bn.\3', 'same'),
    (r'^(?:new_fc|base_model\.fc1)\.weight$', 'cls_head.fc_cls.weight', 'fc'),
    (r'^(?:new_fc|base_model\.fc1)\.bias$', 'cls_head.fc_cls.bias', 'same'),
)


def map_key(key: str) -> Tuple[str, str]:
    """``(mmrsa key, layout)`` of an official key.

    Raises:
        ConversionError: The key is not part of the official model.
    """
    for pattern, template, layout in _RULES:
        match = re.match(pattern, key)
        if match:
            return match.expand(template), layout
    raise ConversionError(f'unknown key {key!r}')


def _convert_tensor(key: str, tensor: torch.Tensor,
                    layout: str) -> torch.Tensor:
    if layout == 'conv':
        if tensor.dim() != 5 or tensor.shape[2] != 1:
            raise ConversionError(
                f'{key}: expected a Conv3d weight with a (1, k, k) kernel, '
                f'got shape {tuple(tensor.shape)}; only TSN-ResNets (2D '
                f'convolutions outside RSA) convert.')
        return tensor[:, :, 0].clone()
    if layout == 'squeeze0':
        if tensor.dim() != 3 or tensor.shape[0] != 1:
            raise ConversionError(
                f'{key}: expected shape (1, a, b), got {tuple(tensor.shape)}.')
        return tensor[0].clone()
    if layout == 'fc':
        if tensor.dim() == 3 and tensor.shape[2] == 1:
            return tensor[:, :, 0].clone()
        if tensor.dim() == 2:
            return tensor.clone()
        raise ConversionError(f'{key}: expected a Conv1d weight '
                              f'[classes, C, 1], got {tuple(tensor.shape)}.')
    return tensor.clone()


def convert_state_dict(
        sd: Dict[str, torch.Tensor],
        settings: Optional[Dict] = None) -> 'OrderedDict[str, torch.Tensor]':
    """Map an official state dict (``module.`` dropped) to mmrsa keys.

    Adds ``P1 = eye(Cq)`` for official basic-only ('V') kernels and zero BN
    step counters where the checkpoint has none.

    Raises:
        ConversionError: A key has no counterpart or an unexpected shape.
    """
    settings = settings or official_settings(sd)
    out, unknown = OrderedDict(), []
    for key, tensor in sd.items():
        try:
            new_key, layout = map_key(key)
        except ConversionError:
            unknown.append(key)
            continue
        out[new_key] = _convert_tensor(key, tensor, layout)
    if unknown:
        raise ConversionError(
            f'{len(unknown)} keys have no counterpart in RSANet: '
            f'{unknown[:8]}{" ..." if len(unknown) > 8 else ""}')
    for block, layer in settings['rsa_layers'].items():
        p1 = f'backbone.{block}.conv2.conv.P1'
        if layer['kernel_type'] == 'V' and p1 not in out:
            out[p1] = torch.eye(layer['query_channels'])
    for key in list(out):
        if key.endswith('.bn.running_var'):
            counter = key[:-len('running_var')] + 'num_batches_tracked'
            if counter not in out:
                out[counter] = torch.tensor(0, dtype=torch.long)
    return out
