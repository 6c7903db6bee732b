# Copyright (c) mmrsa contributors. All rights reserved.
"""Publishable checkpoints: weights and plain metadata, named by sha256.

A training checkpoint of MMEngine's runner holds the optimizer, the
schedulers, the message hub (``HistoryBuffer`` objects) and the metadata of
the run. :func:`publish_checkpoint` keeps the model's ``state_dict`` (tensors
only) and the plain part of ``meta`` (str / int / float / bool / None and
lists and dicts of those; numpy scalars become Python numbers, tuples
become lists), drops everything else, and writes
``<out_prefix>-<first 8 hex digits of its sha256>.pth``, as MMAction2's model
zoo names its files. The result loads with ``torch.load(weights_only=True)``;
the same input always gives the same bytes, hence the same name.

The input is read by :func:`mmrsa.fileio.checkpoint.load_checkpoint_file`
(no code from the file runs; a file the user trusts may hold more).
"""
import hashlib
import io
import os.path as osp
from typing import List, Tuple

import torch

from ..fileio.atomic import refuse_existing, write_bytes_atomic
from ..fileio.checkpoint import (is_declarative_config, load_checkpoint_file,
                                 plain_metadata, safe_torch_load, sha256_file,
                                 state_dict_of)

__all__ = ['publish_checkpoint', 'metafile_entry']


def publish_checkpoint(in_path: str,
                       out_prefix: str,
                       force: bool = False) -> Tuple[str, str, List[str]]:
    """Write the publishable form of ``in_path``.

    Args:
        in_path (str): A training checkpoint (MMEngine's, or any
            ``torch.save`` of a state dict or of ``{'state_dict': ...}``): a
            local path or any location MMEngine's loader takes.
        out_prefix (str): Output path without the hash; a trailing ``.pth``
            is dropped.
        force (bool): Overwrite an existing output file. Defaults to False,
            which keeps it (a file of the same name and sha256, i.e. the
            same release, is returned as it is).

    Returns:
        tuple[str, str, list[str]]: The file written, its full sha256 and
        the top-level keys and metadata entries that were dropped.

    Raises:
        OverwriteRefusedError: The output exists with other content and
            ``force`` is False (a ``FileExistsError``).
        UnsafeCheckpointError: ``in_path`` pickles objects other than data
            (and is not trusted).
        CheckpointFileError: ``in_path`` is not a checkpoint, or it has no
            state dict of tensors.
        NonFiniteWeightsError: A weight or buffer holds ``inf`` or ``nan``
            (a ``RuntimeError``; nothing is written).
    """
    from ..engine.hooks.non_finite_check_hook import (NonFiniteWeightsError,
                                                      describe_non_finite,
                                                      non_finite_tensors)
    checkpoint = load_checkpoint_file(in_path, map_location='cpu')
    state_dict = state_dict_of(checkpoint)
    non_finite = non_finite_tensors(state_dict)
    if non_finite:
        raise NonFiniteWeightsError(
            f'{in_path} holds non-finite values (inf/nan) in '
            f'{describe_non_finite(non_finite, limit=10)}: it is not '
            f'published (nothing was written). It was saved from a diverged '
            f'run; publish an earlier, finite checkpoint.')
    dropped: List[str] = []
    meta = {}
    if isinstance(checkpoint, dict) and 'state_dict' in checkpoint:
        dropped += [k for k in checkpoint if k not in ('meta', 'state_dict')]
        if 'meta' in checkpoint:
            meta = plain_metadata(checkpoint['meta'], 'meta', dropped)
            if not isinstance(meta, dict):
                meta = {}
    if isinstance(meta.get('cfg'),
                  str) and not is_declarative_config(meta['cfg']):
        # MMEngine executes the stored config text: keep only declarative
        dropped.append('meta.cfg (not declarative config text)')
        del meta['cfg']
    buffer = io.BytesIO()  # not a file: its name would enter the archive
    torch.save({'meta': meta, 'state_dict': state_dict}, buffer)
    data = buffer.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    if out_prefix.endswith('.pth'):
        out_prefix = out_prefix[:-len('.pth')]
    out_path = f'{out_prefix}-{sha256[:8]}.pth'
    if osp.lexists(out_path) and not force:
        if osp.isfile(out_path) and sha256_file(out_path) == sha256:
            return out_path, sha256, dropped  # the same release, kept
    refuse_existing(out_path, force)
    write_bytes_atomic(out_path, data)
    safe_torch_load(out_path, map_location='cpu')  # what was written loads
    return out_path, sha256, dropped


def _yaml_scalar(value) -> str:
    """``value`` as a YAML scalar (quoted where plain YAML would misread
    it)."""
    if isinstance(value, bool) or value is None:
        return {True: 'true', False: 'false', None: 'null'}[value]
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    plain = text and text.strip() == text and not any(
        c in text for c in ':#{}[],&*!|>\'"%@`') and text.lower() not in (
            'true', 'false', 'null', 'yes', 'no', 'on', 'off', '~')
    if plain:
        try:
            float(text)
        except ValueError:
            return text
    return '"' + text.replace('\\', '\\\\').replace('"', '\\"') + '"'


def metafile_entry(name: str,
                   config: str,
                   weights: str,
                   metadata: dict,
                   results: List[dict],
                   collection: str = 'RSANet') -> str:
    """One model of an MMAction2 ``metafile.yml`` (the ``Models:`` list
    item), as text to paste under ``Models:``.

    Args:
        name (str): The model's name.
        config (str): Its config, relative to the repository root.
        weights (str): The ``Weights:`` value: the URL or path users load
            the released file from (a placeholder for the user to fill is
            fine).
        metadata (dict): ``Metadata:`` entries, e.g. ``Architecture``,
            ``Epochs``, ``Training Data``.
        results (list[dict]): ``Results:`` items, each with ``Dataset``,
            ``Task`` and a ``Metrics`` dict.
        collection (str): ``In Collection``. Defaults to 'RSANet'.
    """
    lines = [
        f'  - Name: {_yaml_scalar(name)}',
        f'    Config: {_yaml_scalar(config)}',
        f'    In Collection: {_yaml_scalar(collection)}',
        '    Metadata:',
    ]
    lines += [f'      {k}: {_yaml_scalar(v)}' for k, v in metadata.items()]
    lines.append('    Results:')
    for result in results:
        lines.append(f'      - Dataset: {_yaml_scalar(result["Dataset"])}')
        lines.append(f'        Task: {_yaml_scalar(result["Task"])}')
        lines.append('        Metrics:')
        lines += [
            f'          {k}: {_yaml_scalar(v)}'
            for k, v in result['Metrics'].items()
        ]
    lines.append(f'    Weights: {_yaml_scalar(weights)}')
    return '\n'.join(lines)
