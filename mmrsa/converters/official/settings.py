# Copyright (c) mmrsa contributors. All rights reserved.
"""The RSA settings of an official checkpoint, read from its tensor shapes.

:func:`official_settings` reads the ResNet depth, where the RSA layers are,
each layer's L, Cq, D, M, kernel and context types (:func:`official_rsa_
settings`) and the classes from an official state dict (``module.``
dropped); :func:`settings_cfg_options` turns them into the config overrides
that build that model on top of ``rsanet_r50_8x1_ssv1.py``, and
:func:`settings_mismatch` lists how they differ from an mmrsa recognizer.

Official RSA options and ours: ``nh`` = ``num_queries`` (L), ``dk`` = ``dv``
= Cq (mmrsa needs them equal), ``dd`` = ``latent_dim`` (D),
``kernel_size`` = ``kernel_size`` (M), ``kernel_type`` / ``feat_type``
``'V' | 'R' | 'VplusR'`` = ``kernel_type`` / ``context_type``
``'V' | 'R' | 'VR'``; the official layer always L2-normalises
(``norm='l2'``) and correlates channel-wise (``corr_groups=None``).
"""
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

from ...models.common.rsa import RSA
from .errors import ConversionError

__all__ = [
    'TYPE_MAP', 'DEPTHS', 'official_blocks', 'official_rsa_settings',
    'official_settings', 'settings_cfg_options', 'model_rsa_settings',
    'settings_mismatch'
]

#: official ``kernel_type`` / ``feat_type`` -> mmrsa ``kernel_type`` /
#: ``context_type``
TYPE_MAP = {'V': 'V', 'R': 'R', 'VplusR': 'VR'}

#: stage blocks -> ResNet depth, for the depths with bottleneck blocks
DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}

_BLOCK = re.compile(r'^base_model\.layer(\d)\.(\d+)\.')


def official_blocks(sd: Dict[str, torch.Tensor]) -> List[Tuple[int, ...]]:
    """Per stage, the block indices present in the official state dict."""
    blocks: Dict[int, set] = {}
    for key in sd:
        match = _BLOCK.match(key)
        if match:
            blocks.setdefault(int(match.group(1)),
                              set()).add(int(match.group(2)))
    if sorted(blocks) != [1, 2, 3, 4]:
        raise ConversionError(f'expected ResNet stages layer1..layer4, found '
                              f'{["layer%d" % s for s in sorted(blocks)]}.')
    return [tuple(sorted(blocks[s])) for s in (1, 2, 3, 4)]


def official_rsa_settings(sd: Dict[str, torch.Tensor], prefix: str) -> Dict:
    """The RSA options of the official layer at ``prefix`` (``...conv2.``).

    Returns:
        dict: ``kernel_size``, ``num_queries`` (nh), ``query_channels``
        (dk = dv), ``latent_dim`` (dd), ``kernel_type``, ``context_type``
        (mmrsa names) and ``out_channels``.

    Raises:
        ConversionError: The shapes are not those of an official RSA layer,
            or it uses ``dk != dv``, which mmrsa's layer does not support.
    """
    name = prefix.rstrip('.')
    get = sd.get
    proj, h1, h2 = (get(prefix + 'projection.weight'),
                    get(prefix + 'H1.weight'), get(prefix + 'H2.weight'))
    g, p1, eye = (get(prefix + 'G.weight'), get(prefix + 'P1'),
                  get(prefix + 'I'))
    bn = get(prefix.replace('conv2.', 'bn2.') + 'weight')
    if proj is None or h2 is None or proj.dim() != 5 or h2.dim() != 5:
        raise ConversionError(f'{name}: an RSA layer needs projection.weight '
                              f'and H2.weight (5-D Conv3d weights).')
    if bn is None:
        raise ConversionError(f'{name}: no bn2 after the RSA layer.')
    out_channels, hidden = bn.shape[0], proj.shape[0]
    dd, kernel_size = h2.shape[0], tuple(h2.shape[2:])
    if h1 is not None:
        dk = h1.shape[0] // dd
    elif eye is not None:
        dk = eye.shape[-1]
    else:
        dk = dd  # the official basic-only kernel multiplies q by identity
    kernel_type = 'VplusR' if h1 is not None and p1 is not None else (
        'R' if h1 is not None else 'V')
    if p1 is not None and h1 is None:
        raise ConversionError(f'{name}: P1 without H1 is not an official '
                              f'RSA layer.')
    feat_type = 'VplusR' if eye is not None else (
        'R' if g is not None else 'V')
    if eye is not None and g is None:
        raise ConversionError(f'{name}: I without G is not an official RSA '
                              f'layer.')
    key = dk if h1 is not None else 0
    # hidden = nh * dk + key + dv with nh * dv = out_channels
    candidates = [
        nh for nh in range(1, out_channels + 1) if out_channels %
        nh == 0 and nh * dk + key + out_channels // nh == hidden
    ]
    if g is not None:
        candidates = [
            nh for nh in candidates if out_channels // nh == g.shape[0]
        ]
    if not candidates:
        raise ConversionError(
            f'{name}: projection has {hidden} channels, which no number of '
            f'queries gives for dk={dk} and {out_channels} output channels.')
    nh = min(candidates, key=lambda n: abs(out_channels // n - dk))
    dv = out_channels // nh
    if dv != dk:
        raise ConversionError(
            f'{name}: the official layer uses dk={dk} != dv={dv}; mmrsa\'s '
            f'RSA has one query width Cq for query, key and value.')
    if h1 is not None and tuple(h1.shape) != (dk * dd, 1) + kernel_size:
        raise ConversionError(f'{name}: H1 has shape {tuple(h1.shape)}, '
                              f'expected {(dk * dd, 1) + kernel_size}.')
    if p1 is not None and tuple(p1.shape) != (1, dk, dd):
        raise ConversionError(f'{name}: P1 has shape {tuple(p1.shape)}, '
                              f'expected (1, {dk}, {dd}).')
    return dict(
        kernel_size=kernel_size,
        num_queries=nh,
        query_channels=dk,
        latent_dim=dd,
        kernel_type=TYPE_MAP[kernel_type],
        context_type=TYPE_MAP[feat_type],
        out_channels=out_channels)


def official_settings(sd: Dict[str, torch.Tensor]) -> Dict:
    """Depth, RSA blocks and settings, and classes of an official model.

    Returns:
        dict: ``depth``, ``rsa_blocks`` (per stage), ``rsa_layers``
        (``{'layerX.Y': settings}``), ``num_classes``, ``in_channels``.
    """
    blocks = official_blocks(sd)
    stage_blocks = tuple(len(b) for b in blocks)
    if any(b != tuple(range(len(b))) for b in blocks):
        raise ConversionError(f'block indices are not contiguous: {blocks}.')
    if stage_blocks not in DEPTHS:
        raise ConversionError(
            f'stages with {stage_blocks} blocks are not a bottleneck ResNet '
            f'(50: (3, 4, 6, 3), 101: (3, 4, 23, 3)).')
    rsa_layers, rsa_blocks = OrderedDict(), []
    for stage, indices in enumerate(blocks, 1):
        in_stage = []
        for i in indices:
            prefix = f'base_model.layer{stage}.{i}.conv2.'
            if prefix + 'projection.weight' in sd:
                rsa_layers[f'layer{stage}.{i}'] = official_rsa_settings(
                    sd, prefix)
                in_stage.append(i)
        rsa_blocks.append(tuple(in_stage))
    fc = sd.get('new_fc.weight', sd.get('base_model.fc1.weight'))
    if fc is None:
        raise ConversionError('no classifier: expected new_fc.weight (or '
                              'base_model.fc1.weight when dropout was 0).')
    return dict(
        depth=DEPTHS[stage_blocks],
        rsa_blocks=tuple(rsa_blocks),
        rsa_layers=rsa_layers,
        num_classes=fc.shape[0],
        in_channels=fc.shape[1])


def _latent_dim_option(rsa_layers: Dict[str, Dict]):
    """``rsa_cfg.latent_dim`` for these layers: None (D = Cq), one D, or one
    D per stage (e.g. D = Cq / 2)."""
    if all(v['latent_dim'] == v['query_channels']
           for v in rsa_layers.values()):
        return None
    per_stage = []
    for stage in range(1, 5):
        dims = {
            v['latent_dim']
            for name, v in rsa_layers.items()
            if name.startswith(f'layer{stage}.')
        }
        if len(dims) > 1:
            raise ConversionError(
                f'RSA layers of stage {stage} differ in latent_dim; write a '
                f'config for this model and pass --config.')
        per_stage.append(dims.pop() if dims else None)
    used = [d for d in per_stage if d is not None]
    if len(set(used)) == 1:
        return used[0]
    return tuple(d if d is not None else used[0] for d in per_stage)


def settings_cfg_options(settings: Dict) -> Dict:
    """Config overrides that build the model of ``settings``."""
    layers = list(settings['rsa_layers'].values())
    rsa_cfg = dict(norm='l2', corr_groups=None)
    if layers:
        for key in ('kernel_size', 'num_queries', 'kernel_type',
                    'context_type'):
            values = {
                tuple(v[key]) if key == 'kernel_size' else v[key]
                for v in layers
            }
            if len(values) > 1:
                raise ConversionError(
                    f'the RSA layers differ in {key} ({sorted(values)}); '
                    f'write a config for this model and pass --config.')
            rsa_cfg[key] = values.pop()
        rsa_cfg['latent_dim'] = _latent_dim_option(settings['rsa_layers'])
    return {
        'model.backbone.depth': settings['depth'],
        'model.backbone.rsa_blocks': settings['rsa_blocks'],
        'model.backbone.rsa_cfg': rsa_cfg,
        'model.cls_head.num_classes': settings['num_classes'],
        'model.cls_head.in_channels': settings['in_channels'],
    }


def model_rsa_settings(model: torch.nn.Module) -> Dict[str, Dict]:
    """``{'layerX.Y': settings}`` of the RSA layers of an mmrsa recognizer,
    in the terms of :func:`official_rsa_settings`, plus ``corr_groups``
    and ``norm``."""
    out = OrderedDict()
    for name, module in model.backbone.named_modules():
        if isinstance(module, RSA):
            block = name[:-len('.conv2.conv')]
            out[block] = dict(
                kernel_size=tuple(module.kernel_size),
                num_queries=module.num_queries,
                query_channels=module.query_channels,
                latent_dim=module.latent_dim,
                kernel_type=module.kernel_type,
                context_type=module.context_type,
                out_channels=module.out_channels,
                corr_groups=module.corr_groups,
                norm=module.norm)
    return out


def settings_mismatch(settings: Dict, model: torch.nn.Module) -> List[str]:
    """Human-readable differences between a checkpoint and a model."""
    problems = []
    ours = model_rsa_settings(model)
    theirs = settings['rsa_layers']
    if list(ours) != list(theirs):
        problems.append(f'RSA layers in the checkpoint: {list(theirs)}; in '
                        f'the config: {list(ours)}')
    compared = ('kernel_size', 'num_queries', 'latent_dim', 'kernel_type',
                'context_type')
    for block in sorted(set(ours) & set(theirs)):
        diffs = [
            f'{key} {theirs[block][key]!r} vs {ours[block][key]!r}'
            for key in compared if theirs[block][key] != ours[block][key]
        ]
        layer = ours[block]
        if layer['corr_groups'] != layer['query_channels']:
            diffs.append(f'corr_groups {layer["query_channels"]} (the '
                         f'official layer is channel-wise) vs '
                         f'{layer["corr_groups"]}')
        if layer['norm'] != 'l2':
            diffs.append(f'norm \'l2\' (the official layer) vs '
                         f'{layer["norm"]!r}')
        if diffs:
            problems.append(f'{block} (checkpoint vs config): ' +
                            ', '.join(diffs))
    head = model.cls_head.fc_cls
    if head.out_features != settings['num_classes']:
        problems.append(f'classes: checkpoint {settings["num_classes"]}, '
                        f'config {head.out_features}')
    depth = getattr(model.backbone, 'depth', None)
    if depth != settings['depth']:
        problems.append(f'depth: checkpoint ResNet-{settings["depth"]}, '
                        f'config ResNet-{depth}')
    return problems
