# Copyright (c) mmrsa contributors. All rights reserved.
"""Convert a checkpoint of the authors' RSA code into an mmrsa checkpoint.

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
once by :func:`mmrsa.fileio.checkpoint.download_checkpoint`, with a progress
bar, into the torch hub cache: ``torch.hub.get_dir()/checkpoints/<folder>/
<file>``, where ``<folder>`` is the URL's last folder (the authors' files all
share the name ``resnet_rgb_model_best.pth.tar``, see
:func:`mmrsa.fileio.checkpoint.cache_path`); a file copied there by hand is
used without network.

Both serialisations PyTorch has written are read: the zip format (default
since PyTorch 1.6) and the legacy one (``_use_new_zipfile_serialization=
False``). Reading runs no code from the file: it goes through
:func:`mmrsa.fileio.checkpoint.safe_torch_load` (``weights_only=True``). The
authors' checkpoints need nothing more: their ``main.py`` saves an ``int``
epoch, a ``str`` arch, a ``float`` best accuracy (``AverageMeter`` of
``.item()`` values) and an ``OrderedDict`` of tensors, which the
weights-only unpickler builds by itself. A file that needs more is refused
unless the caller trusts it (``trust_pickle``).

With a config the checkpoint must match the config's RSA layers (positions,
L, D, M, kernel and context types) and classes; otherwise the conversion is
refused. Without one the settings are read from the tensor shapes
(:mod:`.settings`), the model is the ``rsanet_r50_8x1_ssv1.py`` recipe with
those settings, and the overrides to put in a config are reported. The model
comes from :func:`mmrsa.apis.build_model`, the key map is :mod:`.keymap`,
and ``verify`` compares the converted model's logits with those of the
authors' network run on the original tensors (:mod:`.oracle`). The output is
written by :func:`mmrsa.fileio.atomic.write_atomic` and an existing one is
kept unless ``overwrite`` (:func:`mmrsa.fileio.atomic.refuse_existing`).
"""
import functools
import logging
import numbers
import os.path as osp
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import urlparse

import torch
from mmengine.logging import print_log

from ...apis.model import CONFIG_ROOTS, build_model, find_config
from ...fileio.atomic import refuse_existing, write_atomic
from ...fileio.checkpoint import (CheckpointDownloadError, CheckpointFileError,
                                  UnsafeCheckpointError, download_checkpoint,
                                  plain_metadata, safe_torch_load, sha256_file,
                                  state_dict_of)
from ...version import __version__
from .errors import ConversionError
from .keymap import convert_state_dict
from .oracle import official_forward
from .settings import (official_settings, settings_cfg_options,
                       settings_mismatch)

__all__ = [
    'OFFICIAL_CHECKPOINTS', 'DEFAULT_CONFIG', 'is_url', 'fetch_official',
    'load_official', 'official_state_dict', 'check_against_model',
    'convert_official_checkpoint'
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

#: The recipe the settings read from a checkpoint override when no config
#: is given.
DEFAULT_CONFIG = 'configs/recognition/rsanet/rsanet_r50_8x1_ssv1.py'


def _log(message: str) -> None:
    print_log(message, logger='current')


# ---------------------------------------------------------------------- #
# loading
# ---------------------------------------------------------------------- #
def is_url(src: str) -> bool:
    """Whether ``src`` is an ``http://`` or ``https://`` URL."""
    return urlparse(str(src)).scheme in ('http', 'https')


def fetch_official(src: str, progress: Optional[bool] = None) -> str:
    """The local file of ``src``: ``src`` itself, or its download.

    Raises:
        ConversionError: The download failed; the message says where to
            put the file to work offline.
    """
    if not is_url(src):
        return src
    try:
        return download_checkpoint(src, progress=progress)
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
# conversion
# ---------------------------------------------------------------------- #
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
    for root in CONFIG_ROOTS:
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
        config (str, optional): The mmrsa config the checkpoint must match
            (a path, or one under the checkout / ``.mim``, see
            :func:`mmrsa.apis.find_config`). Defaults to None: settings read
            from the shapes, on top of ``rsanet_r50_8x1_ssv1.py``.
        trust_pickle (bool): Allow a local ``src`` to unpickle arbitrary
            objects (runs code from it). Defaults to False.
        verify (bool): Compare the converted model's logits with
            :func:`~mmrsa.converters.official.oracle.official_forward` on one
            random clip. Defaults to False.
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
        ConversionError: ``src`` cannot be converted for ``config``.
        OverwriteRefusedError: ``dst`` exists and ``overwrite`` is False, or
            it is a folder (a ``FileExistsError``, from
            :func:`mmrsa.fileio.atomic.refuse_existing`).
        FileNotFoundError: ``config`` does not exist.
    """
    refuse_existing(dst, overwrite)
    given = config is not None
    config = find_config(config if given else DEFAULT_CONFIG)
    checkpoint, path = load_official(src, trust_pickle, progress)
    sd = official_state_dict(checkpoint)
    settings = official_settings(sd)
    cfg_options = None if given else settings_cfg_options(settings)
    model = build_model(config, cfg_options=cfg_options)
    problems = settings_mismatch(settings, model)
    if problems:
        raise ConversionError(
            f'{src} does not match {_config_name(config)}:\n  - ' +
            '\n  - '.join(problems))
    converted = convert_state_dict(sd, settings)
    check_against_model(converted, model)
    model.load_state_dict(converted, strict=True)

    meta = OrderedDict(
        converted_from=osp.basename(urlparse(src).path)
        if is_url(src) else osp.basename(src),
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
        frames = int(model.cfg.model.backbone.get('num_segments', 8))
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
    payload = {'meta': dict(meta), 'state_dict': converted}
    refuse_existing(dst, overwrite)  # again: the conversion took a while
    write_atomic(dst, functools.partial(torch.save, payload))
    # what was written must load safely
    safe_torch_load(dst, map_location='cpu')
    log(f'{len(converted)} tensors ({len(settings["rsa_layers"])} RSA '
        f'layers) written to {dst}; it loads into {_config_name(config)} '
        f'with no missing or unexpected keys.')
    return result
