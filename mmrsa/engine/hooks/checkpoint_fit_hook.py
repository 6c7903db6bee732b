# Copyright (c) mmrsa contributors. All rights reserved.
"""Refuse a checkpoint that was saved for another architecture.

MMEngine loads weights with ``strict=False`` and only logs what did not
match, so testing a checkpoint of another model gives chance-level results
and a warning lost in the log. :func:`check_checkpoint_fits` compares the
checkpoint's tensors with the model's and raises
:class:`CheckpointMismatchError` naming the missing, unexpected and
mis-shaped keys; :class:`CheckpointFitHook` runs it on every checkpoint a
``Runner`` loads, for ``load_from`` and ``--resume`` alike, before anything
is restored (the shipped configs list it in ``custom_hooks``), and
:func:`load_checkpoint_strictly` is the same for a bare model
(``demo/demo.py``).
"""
import re
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from mmaction.registry import HOOKS
from mmrsa.fileio.checkpoint import load_checkpoint_file

__all__ = [
    'CheckpointMismatchError', 'checkpoint_state_dict',
    'check_checkpoint_fits', 'load_checkpoint_strictly', 'CheckpointFitHook'
]

#: How many keys of each kind a message lists before "and N more".
MAX_LISTED = 12
_DEFAULT_REVISE_KEYS = ((r'^module\.', ''), )


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model.

    Attributes:
        missing (list[str]): Model keys the checkpoint lacks.
        unexpected (list[str]): Checkpoint keys the model lacks.
        mismatched (list[tuple[str, tuple, tuple]]): ``(key, checkpoint
            shape, model shape)`` of the tensors with different shapes.
    """

    def __init__(
        self,
        message: str,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[Tuple[str, tuple, tuple]] = ()
    ) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


def checkpoint_state_dict(
    checkpoint: Mapping,
    revise_keys: Sequence[Tuple[str, str]] = _DEFAULT_REVISE_KEYS
) -> 'OrderedDict[str, torch.Tensor]':
    """The weights of a loaded checkpoint, keys revised as MMEngine does
    (``module.`` dropped)."""
    state_dict = checkpoint.get('state_dict', checkpoint)
    out = OrderedDict()
    for key, value in state_dict.items():
        for pattern, repl in revise_keys:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def _listed(keys: Sequence[str]) -> str:
    shown = ', '.join(keys[:MAX_LISTED])
    more = len(keys) - MAX_LISTED
    return shown + (f', ... and {more} more' if more > 0 else '')


def check_checkpoint_fits(
        model: nn.Module,
        checkpoint: Mapping,
        filename: str = 'the checkpoint',
        revise_keys: Sequence[Tuple[str, str]] = _DEFAULT_REVISE_KEYS) -> None:
    """Raise if ``checkpoint`` does not hold exactly the model's tensors.

    BN step counters (``num_batches_tracked``) may be missing, as MMEngine
    allows.

    Args:
        model (nn.Module): The model (a wrapper is unwrapped).
        checkpoint (Mapping): A loaded checkpoint, with or without a
            ``state_dict`` key.
        filename (str): Named in the message.
        revise_keys (Sequence[tuple[str, str]]): ``re.sub`` patterns applied
            to the checkpoint's keys. Defaults to dropping ``module.``.

    Raises:
        CheckpointMismatchError: Listing the missing, unexpected and
            mis-shaped keys.
    """
    if is_model_wrapper(model):
        model = model.module
    loaded = checkpoint_state_dict(checkpoint, revise_keys)
    expected: Dict[str, torch.Tensor] = model.state_dict()
    missing = [
        k for k in expected
        if k not in loaded and not k.endswith('num_batches_tracked')
    ]
    unexpected = [k for k in loaded if k not in expected]
    mismatched = [(k, tuple(loaded[k].shape), tuple(expected[k].shape))
                  for k in expected
                  if k in loaded and hasattr(loaded[k], 'shape')
                  and tuple(loaded[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or mismatched):
        return
    lines = [
        f'{filename} does not fit the model {type(model).__name__} built '
        f'from the config: it was probably saved for another architecture '
        f'or another config (e.g. a different depth, RSA layout or number '
        f'of classes).'
    ]
    if missing:
        lines.append(f'  {len(missing)} model keys missing from the '
                     f'checkpoint: {_listed(missing)}')
    if unexpected:
        lines.append(f'  {len(unexpected)} checkpoint keys the model does '
                     f'not have: {_listed(unexpected)}')
    if mismatched:
        shapes = [
            f'{k} (checkpoint {list(c)}, model {list(m)})'
            for k, c, m in mismatched
        ]
        lines.append(f'  {len(mismatched)} tensors of another shape: '
                     f'{_listed(shapes)}')
    lines.append(
        'Use the config the checkpoint was trained with, or convert '
        'the checkpoint (tools/convert/convert_official_checkpoint.py '
        'for the official RSA release).')
    raise CheckpointMismatchError('\n'.join(lines), missing, unexpected,
                                  mismatched)


def load_checkpoint_strictly(model: nn.Module,
                             filename: str,
                             map_location='cpu') -> dict:
    """Load ``filename`` into ``model`` after :func:`check_checkpoint_fits`.

    The file is read through MMEngine's loader, i.e. with
    ``weights_only=True`` unless the user trusted it (see
    :mod:`mmrsa.fileio.checkpoint`).

    Returns:
        dict: The loaded checkpoint.
    """
    checkpoint = load_checkpoint_file(filename, map_location=map_location)
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(
            f'{filename} holds a {type(checkpoint).__name__}, not a dict of '
            f'weights.')
    check_checkpoint_fits(model, checkpoint, filename)
    target = model.module if is_model_wrapper(model) else model
    _load_checkpoint_to_model(target, checkpoint, strict=True)
    return checkpoint


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Raise when the checkpoint a ``Runner`` loads does not fit its model.

    Runs :func:`check_checkpoint_fits` in ``after_load_checkpoint``, before
    the weights are copied and, when resuming, before the epoch, optimizer
    and schedulers are restored; a resumed file must also be a training
    checkpoint (``meta.epoch`` and ``meta.iter``). Opt in from a config::

        custom_hooks = [dict(type='CheckpointFitHook')]

    Args:
        filename (str, optional): Named in the message. Defaults to the
            runner's ``load_from``.
    """

    priority = 'VERY_HIGH'

    def __init__(self, filename: Optional[str] = None) -> None:
        self.filename = filename

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        filename = self.filename or getattr(runner, '_load_from',
                                            None) or 'the checkpoint'
        check_checkpoint_fits(runner.model, checkpoint, filename)
        if getattr(runner, '_resume', False):
            meta = checkpoint.get('meta')
            if not (isinstance(meta, dict) and 'epoch' in meta
                    and 'iter' in meta):
                raise CheckpointMismatchError(
                    f'{filename} holds weights but no training state '
                    f'(meta.epoch / meta.iter), so a run cannot resume from '
                    f'it. Start from its weights with load_from={filename!r} '
                    f'(or --cfg-options load_from=...) instead of --resume.')
