# Copyright (c) mmrsa contributors. All rights reserved.
"""Checkpoints of the authors' RSA implementation, as mmrsa checkpoints.

The authors' code (github.com/KimManjin/RSA) trains a TSN wrapper around a
``Conv3d`` ResNet-50 inside ``torch.nn.DataParallel`` and saves
``{'epoch', 'arch', 'state_dict', 'best_prec1'}`` (an ``optimizer`` entry
too in some TSN-style code; ignored here). :func:`convert_official_checkpoint`
maps its ``state_dict`` onto the matching mmrsa recognizer
(``Recognizer2D`` + :class:`~mmrsa.models.RSANet` + the recipe's head) and
writes ``{'meta': {...}, 'state_dict': {...}}`` with tensors and plain
metadata only, so the result loads with ``torch.load(weights_only=True)`` and
with a config's ``load_from``.

The source is a local file or an ``http(s)://`` URL. A URL is downloaded
once into the torch hub cache, ``torch.hub.get_dir()/checkpoints/<folder>/
<file>`` where ``<folder>`` is the URL's last folder (the authors' files all
share the name ``resnet_rgb_model_best.pth.tar``), with a progress bar; a
file copied there by hand is used without network.

Both serialisations PyTorch has written are read: the zip format (default
since PyTorch 1.6) and the legacy one (``_use_new_zipfile_serialization=
False``). Reading runs no code from the file: it goes through
:func:`mmrsa.utils.checkpoint.safe_torch_load` (``weights_only=True``). The
authors' checkpoints need nothing more: their ``main.py`` saves an ``int``
epoch, a ``str`` arch, a ``float`` best accuracy (``AverageMeter`` of
``.item()`` values) and an ``OrderedDict`` of tensors, which the
weights-only unpickler builds by itself. A file that needs more is refused
unless the caller trusts it (``trust_pickle``).

With a config the checkpoint must match the config's RSA layers (positions,
L, D, M, kernel and context types) and classes; otherwise the conversion is
refused. Without one the settings are read from the tensor shapes, the model
is the ``rsanet_r50_8x1_ssv1.py`` recipe with those settings, and the
overrides to put in a config are reported. ``verify`` runs an independent
re-implementation of the authors' forward pass (:func:`official_forward`) on
the original tensors and compares its logits with the converted model's.

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

Official RSA options and ours: ``nh`` = ``num_queries`` (L), ``dk`` = ``dv``
= Cq (mmrsa needs them equal), ``dd`` = ``latent_dim`` (D),
``kernel_size`` = ``kernel_size`` (M), ``kernel_type`` / ``feat_type``
``'V' | 'R' | 'VplusR'`` = ``kernel_type`` / ``context_type``
``'V' | 'R' | 'VR'``; the official layer always L2-normalises
(``norm='l2'``) and correlates channel-wise (``corr_groups=None``). The
official layer's output channel ``c * L + l`` (value channel major) is ours.
BN step counters missing from old checkpoints are set to 0. Both
classifiers give the same logits: the official one applies ``new_fc`` to
each frame and averages, as the recipes' ``TSMHead(is_shift=False)`` does
with ``fc_cls`` (``TSNHead`` averages first and applies ``fc_cls`` after,
which commutes: the same logits).
"""
import logging
import numbers
import os.path as osp
import re
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import init_default_scope

from mmaction.registry import MODELS
from ..models.common.rsa import RSA
from ..utils.checkpoint import (CheckpointDownloadError, CheckpointFileError,
                                UnsafeCheckpointError, download_checkpoint,
                                plain_metadata, safe_torch_load,
                                save_checkpoint_atomic, sha256_file,
                                state_dict_of)
from ..version import __version__

__all__ = [
    'OFFICIAL_CHECKPOINTS', 'ConversionError', 'is_url', 'cache_dir_of',
    'fetch_official', 'load_official',
    'official_state_dict', 'official_blocks', 'official_rsa_settings',
    'official_settings', 'settings_cfg_options', 'model_rsa_settings',
    'settings_mismatch', 'map_key', 'convert_state_dict',
    'official_rsa_forward', 'official_forward', 'build_recognizer',
    'check_against_model', 'convert_official_checkpoint'
]

_OFFICIAL_RUNS = 'https://github.com/KimManjin/RSA/raw/master/net_runs'

#: The checkpoints the authors released, the mmrsa config each converts to
#: and the top-1 / top-5 (%) their README reports (1 clip, center crop).
OFFICIAL_CHECKPOINTS = {
    'rsanet_r50_16x1_ssv1':
    dict(
        url=f'{_OFFICIAL_RUNS}/RSA_R50_SSV1_16frames/'
        'resnet_rgb_model_best.pth.tar',
        config='configs/recognition/rsanet/rsanet_r50_16x1_ssv1.py',
        top1=54.0,
        top5=81.1),
    'rsanet_r50_16x1_ssv2':
    dict(
        url=f'{_OFFICIAL_RUNS}/RSA_R50_SSV2_16frames/'
        'resnet_rgb_model_best.pth.tar',
        config='configs/recognition/rsanet/rsanet_r50_16x1_ssv2.py',
        top1=66.0,
        top5=89.9),
}

#: official ``kernel_type`` / ``feat_type`` -> mmrsa ``kernel_type`` /
#: ``context_type``
TYPE_MAP = {'V': 'V', 'R': 'R', 'VplusR': 'VR'}

#: stage blocks -> ResNet depth, for the depths with bottleneck blocks
DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}

_PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: Where relative config paths are looked up: a source checkout, then the
#: configs a wheel carries.
_CONFIG_ROOTS = (osp.dirname(_PACKAGE_DIR), osp.join(_PACKAGE_DIR, '.mim'))
DEFAULT_CONFIG = 'configs/recognition/rsanet/rsanet_r50_8x1_ssv1.py'


class ConversionError(Exception):
    """The source is not a convertible official checkpoint."""


def _log(message: str) -> None:
    print_log(message, logger='current')


def _find_config(config: str) -> str:
    """``config`` itself if it exists, else under the checkout or ``.mim``."""
    if osp.isfile(config) or osp.isabs(config):
        return config
    for root in _CONFIG_ROOTS:
        candidate = osp.join(root, config)
        if osp.isfile(candidate):
            return candidate
    return config


# ---------------------------------------------------------------------- #
# loading
# ---------------------------------------------------------------------- #
def is_url(src: str) -> bool:
    """Whether ``src`` is an ``http://`` or ``https://`` URL."""
    return urlparse(str(src)).scheme in ('http', 'https')


def cache_dir_of(url: str) -> str:
    """The folder the download of ``url`` goes to:
    ``torch.hub.get_dir()/checkpoints`` plus the URL's last folder."""
    parts = [p for p in urlparse(url).path.split('/') if p]
    root = osp.join(torch.hub.get_dir(), 'checkpoints')
    return osp.join(root, parts[-2]) if len(parts) > 1 else root


def fetch_official(src: str, progress: Optional[bool] = None) -> str:
    """The local file of ``src``: ``src`` itself, or its download.

    Raises:
        ConversionError: The download failed; the message says where to
            put the file to work offline.
    """
    if not is_url(src):
        return src
    try:
        return download_checkpoint(src, cache_dir_of(src), progress)
    except CheckpointDownloadError as err:
        raise ConversionError(str(err)) from None


def load_official(src: str,
                  trust_pickle: bool = False,
                  progress: Optional[bool] = None) -> Tuple[Any, str]:
    """Read an official checkpoint without running code from it.

    Args:
        src (str): A local file or an ``http(s)://`` URL (downloaded into
            the torch hub cache, see the module docstring).
        trust_pickle (bool): Read a local file with ``weights_only=False``:
            it may run code. Defaults to False.
        progress (bool, optional): Progress bar of a download. Defaults to
            whether standard error is a terminal.

    Returns:
        tuple: The loaded object and the local file it was read from.

    Raises:
        ConversionError: The file is missing, cannot be downloaded, is not a
            torch file, or pickles objects that a safe load refuses.
    """
    if trust_pickle and is_url(src):
        raise ConversionError(
            f'--trust-pickle applies to local files only, not to {src}: '
            f'download it and pass the local path.')
    path = fetch_official(src, progress)
    if not osp.isfile(path):
        raise ConversionError(f'{src}: no such file.')
    name = src if path == src else f'{src} (cached at {path})'
    if trust_pickle:
        print_log(
            f'Loading {path} with weights_only=False (--trust-pickle): the '
            f'file may run code.',
            logger='current',
            level=logging.WARNING)
    try:
        return safe_torch_load(
            path, map_location='cpu', name=name, trusted=trust_pickle), path
    except UnsafeCheckpointError as err:
        raise ConversionError(
            f'{err} The authors\' checkpoints hold only tensors and plain '
            f'numbers and load safely.') from None
    except CheckpointFileError as err:
        with open(path, 'rb') as f:
            head = f.read(64)
        if head.startswith(b'version https://git-lfs'):
            raise ConversionError(
                f'{name} is a Git LFS pointer, not the checkpoint: download '
                f'the file itself (the repository\'s "raw" URL) and pass '
                f'it.') from None
        raise ConversionError(str(err)) from None


def official_state_dict(checkpoint: Any) -> 'OrderedDict[str, torch.Tensor]':
    """The model tensors of an official checkpoint, ``module.`` dropped.

    Every other entry (``epoch``, ``arch``, ``best_prec1``, ``optimizer``)
    is left aside.

    Raises:
        ConversionError: The object is not an official RSA checkpoint.
    """
    try:
        out = state_dict_of(checkpoint)
    except CheckpointFileError as err:
        raise ConversionError(
            f'not a checkpoint of the authors\' RSA implementation: {err}'
        ) from None
    if not any(k.startswith('base_model.layer') for k in out):
        sample = ', '.join(list(out)[:3])
        raise ConversionError(
            'not a checkpoint of the authors\' RSA implementation: expected '
            'keys "module.base_model.layer..." (TSN wrapper around their '
            f'ResNet) and "module.new_fc.*", found e.g. {sample}. mmrsa and '
            'MMAction2 checkpoints need no conversion.')
    return out


# ---------------------------------------------------------------------- #
# reading the structure and the RSA settings from the shapes
# ---------------------------------------------------------------------- #
_BLOCK = re.compile(r'^base_model\.layer(\d)\.(\d+)\.')


def official_blocks(sd: Dict[str, torch.Tensor]) -> List[Tuple[int, ...]]:
    """Per stage, the block indices present in the official state dict."""
    blocks: Dict[int, set] = {}
    for key in sd:
        match = _BLOCK.match(key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(
                int(match.group(2)))
    if sorted(blocks) != [1, 2, 3, 4]:
        raise ConversionError(
            f'expected ResNet stages layer1..layer4, found '
            f'{["layer%d" % s for s in sorted(blocks)]}.')
    return [tuple(sorted(blocks[s])) for s in (1, 2, 3, 4)]


def official_rsa_settings(sd: Dict[str, torch.Tensor],
                          prefix: str) -> Dict:
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
        nh for nh in range(1, out_channels + 1) if out_channels % nh == 0
        and nh * dk + key + out_channels // nh == hidden
    ]
    if g is not None:
        candidates = [nh for nh in candidates
                      if out_channels // nh == g.shape[0]]
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
            values = {tuple(v[key]) if key == 'kernel_size' else v[key]
                      for v in layers}
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


# ---------------------------------------------------------------------- #
# the map
# ---------------------------------------------------------------------- #
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
    (r'^(?:new_fc|base_model\.fc1)\.weight$', 'cls_head.fc_cls.weight',
     'fc'),
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


def convert_state_dict(sd: Dict[str, torch.Tensor],
                       settings: Optional[Dict] = None
                       ) -> 'OrderedDict[str, torch.Tensor]':
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


# ---------------------------------------------------------------------- #
# an independent forward pass of the official model (for --verify)
# ---------------------------------------------------------------------- #
def _bn(x: torch.Tensor, sd: Dict, prefix: str) -> torch.Tensor:
    return F.batch_norm(x, sd[prefix + 'running_mean'],
                        sd[prefix + 'running_var'], sd[prefix + 'weight'],
                        sd[prefix + 'bias'], False, 0., 1e-5)


def _l2(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x / (x.pow(2).sum(dim, keepdim=True) + 1e-6).sqrt()


def official_rsa_forward(x: torch.Tensor, sd: Dict, prefix: str,
                         settings: Dict, stride: int) -> torch.Tensor:
    """The official RSA layer, written from its equations and tensor names.

    Args:
        x (torch.Tensor): ``[N, C, T, H, W]``.
        sd (dict): Official state dict.
        prefix (str): ``'base_model.layerX.Y.conv2.'``.
        settings (dict): From :func:`official_rsa_settings`.
        stride (int): Spatial stride of the block.
    """
    n, _, t, h, w = x.shape
    nh, ck, dd = (settings['num_queries'], settings['query_channels'],
                  settings['latent_dim'])
    pad = tuple(k // 2 for k in settings['kernel_size'])
    relational_kernel = prefix + 'H1.weight' in sd
    proj = F.conv3d(x, sd[prefix + 'projection.weight'])
    sizes = [nh * ck] + ([ck] if relational_kernel else []) + [ck]
    parts = torch.split(proj, sizes, dim=1)
    q = _l2(parts[0].reshape(n, nh, ck, t, h, w), 2)  # [n, l, c, t, h, w]
    v = _l2(parts[-1], 1)  # [n, c, t, h, w]
    if relational_kernel:
        k = _l2(parts[1], 1)
        # XK (*) r(H1): [n, c*d, t, h, w] -> [n, c, d, t, h, w]
        kh1 = F.conv3d(k, sd[prefix + 'H1.weight'], padding=pad, groups=ck)
        kh1 = kh1.reshape(n, ck, dd, t, h, w)
        if prefix + 'P1' in sd:
            kh1 = kh1 + sd[prefix + 'P1'][0][:, :, None, None, None]
        kernel = torch.einsum('nlcthw,ncdthw->nldthw', q, kh1)
    else:
        kernel = q  # P1 = identity: [n, l, d = c, t, h, w]
    # H2^T XV: each value channel convolved on its own
    vv = v.reshape(n * ck, 1, t, h, w)
    context = F.conv3d(vv, sd[prefix + 'H2.weight'], padding=pad)
    context = context.reshape(n, ck, dd, t, h, w)  # [n, c, d, ...]
    if prefix + 'G.weight' in sd:
        vg = F.conv3d(vv, sd[prefix + 'G.weight'], padding=pad)
        vg = vg.reshape(n, ck, ck, t, h, w)  # [n, c, c', ...]
        if prefix + 'I' in sd:
            vg = vg + sd[prefix + 'I'][0][:, :, None, None, None]
        context = torch.einsum('nabthw,nadthw->nbdthw', vg, context)
    out = torch.einsum('nldthw,ncdthw->nclthw', kernel, context)
    out = out.reshape(n, ck * nh, t, h, w)  # channel c * L + l
    if stride > 1:
        out = F.avg_pool3d(out, (1, 3, 3), (1, stride, stride), (0, 1, 1))
    return out


@torch.no_grad()
def official_forward(sd: Dict, clip: torch.Tensor,
                     settings: Optional[Dict] = None) -> torch.Tensor:
    """Logits of the official TSN-RSANet, from its own tensors.

    Args:
        sd (dict): Official state dict (``module.`` dropped).
        clip (torch.Tensor): ``[N, T, 3, H, W]`` normalised frames.
        settings (dict, optional): From :func:`official_settings`.

    Returns:
        torch.Tensor: ``[N, classes]``: ``new_fc`` on every frame's pooled
        feature, averaged over the T frames.
    """
    settings = settings or official_settings(sd)
    n, t = clip.shape[:2]
    x = clip.transpose(1, 2)  # [N, 3, T, H, W]
    x = F.conv3d(x, sd['base_model.conv1.weight'], stride=(1, 2, 2),
                 padding=(0, 3, 3))
    x = F.relu(_bn(x, sd, 'base_model.bn1.'))
    x = F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))
    for stage, indices in enumerate(official_blocks(sd), 1):
        for i in indices:
            p = f'base_model.layer{stage}.{i}.'
            stride = 2 if stage > 1 and i == 0 else 1
            out = F.relu(_bn(F.conv3d(x, sd[p + 'conv1.weight']), sd,
                             p + 'bn1.'))
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
                    F.conv3d(x, sd[p + 'downsample.0.weight'],
                             stride=(1, stride, stride)), sd,
                    p + 'downsample.1.')
            x = F.relu(out + x)
    feat = x.mean((3, 4)).transpose(1, 2)  # [N, T, C]
    fc = 'new_fc.' if 'new_fc.weight' in sd else 'base_model.fc1.'
    logits = F.conv1d(
        feat.reshape(n * t, -1, 1), sd[fc + 'weight'], sd[fc + 'bias'])
    return logits.reshape(n, t, -1).mean(1)


# ---------------------------------------------------------------------- #
# conversion
# ---------------------------------------------------------------------- #
def build_recognizer(config: str, cfg_options: Optional[Dict] = None):
    """The recognizer of ``config`` (no pretrained weights), in eval mode,
    and the config."""
    cfg = Config.fromfile(_find_config(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.model.backbone.pretrained = None
    init_default_scope(cfg.get('default_scope', 'mmaction'))
    return MODELS.build(cfg.model).eval(), cfg


def check_against_model(state_dict: Dict[str, torch.Tensor],
                        model: torch.nn.Module) -> None:
    """Raise unless ``state_dict`` has exactly ``model``'s keys and shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f'{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}'
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise ConversionError(
            'the converted weights do not fit the config\'s model: '
            f'missing {missing[:5]}, unexpected {unexpected[:5]}, '
            f'shape (checkpoint vs config) {shapes[:5]}.')


def _plain_number(value: Any) -> Any:
    """``value`` as plain metadata; a one-element tensor or any other real
    number (say a ``Fraction`` from a trusted file) as a number; else
    None."""
    kept = plain_metadata(value, dropped=[])
    if kept is not None or value is None:
        return kept
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()  # e.g. an accuracy kept as a 1-element tensor
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def _config_name(config: str) -> str:
    """``config`` relative to the checkout (or ``.mim``) when inside it."""
    path = osp.abspath(config)
    for root in _CONFIG_ROOTS:
        if path.startswith(osp.abspath(root) + osp.sep):
            return osp.relpath(path, root)
    return config


def convert_official_checkpoint(src: str,
                                dst: str,
                                config: Optional[str] = None,
                                trust_pickle: bool = False,
                                verify: bool = False,
                                verify_size: int = 224,
                                overwrite: bool = False,
                                progress: Optional[bool] = None,
                                log: Callable[[str], None] = _log) -> Dict:
    """Convert the official checkpoint ``src`` and write it to ``dst``.

    Args:
        src (str): A local file or an ``http(s)://`` URL.
        dst (str): The mmrsa checkpoint to write.
        config (str, optional): The mmrsa config the checkpoint must match.
            Defaults to None: settings read from the shapes, on top of
            ``rsanet_r50_8x1_ssv1.py``.
        trust_pickle (bool): Allow a local ``src`` to unpickle arbitrary
            objects (runs code from it). Defaults to False.
        verify (bool): Compare the converted model's logits with
            :func:`official_forward` on one random clip. Defaults to False.
        verify_size (int): Frame size of that clip. Defaults to 224.
        overwrite (bool): Replace an existing ``dst``. Defaults to False.
        progress (bool, optional): Progress bar of a download. Defaults to
            whether standard error is a terminal.
        log (callable): Receives the report lines. Defaults to MMEngine's
            current logger.

    Returns:
        dict: The ``meta`` written to ``dst``, plus ``cfg_options`` (the
        overrides read from the shapes when ``config`` is None) and, with
        ``verify``, ``max_logit_diff`` and ``logit_scale``.

    Raises:
        ConversionError: ``src`` cannot be converted for ``config``, or
            ``dst`` exists and ``overwrite`` is False.
    """
    if osp.exists(dst) and not overwrite:
        raise ConversionError(
            f'{dst} already exists; pass --force (overwrite=True) to '
            f'overwrite it.')
    checkpoint, path = load_official(src, trust_pickle, progress)
    sd = official_state_dict(checkpoint)
    settings = official_settings(sd)
    cfg_options = None
    if config is None:
        config = DEFAULT_CONFIG
        cfg_options = settings_cfg_options(settings)
    config = _find_config(config)
    model, cfg = build_recognizer(config, cfg_options)
    problems = settings_mismatch(settings, model)
    if problems:
        raise ConversionError(
            f'{src} does not match {_config_name(config)}:\n  - ' +
            '\n  - '.join(problems))
    converted = convert_state_dict(sd, settings)
    check_against_model(converted, model)
    model.load_state_dict(converted, strict=True)

    meta = OrderedDict(
        converted_from=osp.basename(urlparse(src).path) if is_url(src) else
        osp.basename(src),
        source_sha256=sha256_file(path),
        source='KimManjin/RSA checkpoint (TSN + ResNet with RSA layers)',
        config=_config_name(config),
        mmrsa_version=__version__,
        rsa_blocks=[list(b) for b in settings['rsa_blocks']],
        num_classes=settings['num_classes'])
    if is_url(src):
        meta['source_url'] = src
    if isinstance(checkpoint, dict):
        for key in ('epoch', 'arch', 'best_prec1'):
            value = _plain_number(checkpoint.get(key))
            if value is not None:
                meta[f'official_{key}'] = value
    if cfg_options is not None:
        log('No config given: the settings read from the checkpoint are, as '
            'overrides of rsanet_r50_8x1_ssv1.py:')
        for key, value in cfg_options.items():
            log(f'  {key} = {value!r}')
    result = dict(meta, cfg_options=cfg_options)
    if verify:
        frames = int(cfg.model.backbone.get('num_segments', 8))
        generator = torch.Generator().manual_seed(0)
        # [N, T, 3, H, W] normalised frames
        clip = torch.randn(
            1, frames, 3, verify_size, verify_size, generator=generator)
        with torch.no_grad():
            ours = model(clip, mode='tensor', stage='head')
        theirs = official_forward(sd, clip, settings)
        diff = (ours - theirs).abs().max().item()
        scale = theirs.abs().max().item()
        result.update(max_logit_diff=diff, logit_scale=scale)
        log(f'verify: max |logit difference| {diff:.3g} (logits up to '
            f'{scale:.3g}) on one random {frames}x3x{verify_size}x'
            f'{verify_size} clip')
        if diff > 1e-3 * max(1., scale):
            raise ConversionError(
                f'verification failed: the converted model\'s logits differ '
                f'from the official forward pass by {diff:.3g}.')
    save_checkpoint_atomic({'meta': dict(meta), 'state_dict': converted}, dst)
    # what was written must load safely
    safe_torch_load(dst, map_location='cpu')
    log(f'{len(converted)} tensors ({len(settings["rsa_layers"])} RSA '
        f'layers) written to {dst}; it loads into {_config_name(config)} '
        f'with no missing or unexpected keys.')
    return result
