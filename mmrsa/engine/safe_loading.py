# Copyright (c) mmrsa contributors. All rights reserved.
"""Checkpoints are read without running code from them, unless trusted.

PyTorch >= 2.6 reads checkpoints with ``torch.load(weights_only=True)``: only
tensors, plain containers and allowlisted types are rebuilt, and a file that
pickles anything else (for example a ``__reduce__`` that calls
``os.system``) is refused. :mod:`mmrsa.utils.compat` allowlists exactly what
MMEngine's own checkpoints hold, so resuming a run and loading checkpoints
written by MMEngine keep working that way.

This module adds two things on top of MMEngine's checkpoint loader
(``mmengine.runner.CheckpointLoader``, which every ``load_from``,
``--resume``, ``tools/test.py`` checkpoint, ``init_recognizer`` and
``pretrained`` path goes through):

* a refusal says which object was refused, from which file, why, and how to
  opt in (:class:`UnsafeCheckpointError`);
* an explicit, per-file opt-in for files the user trusts: the tools'
  ``--trust-pickle`` flag, :func:`trust_checkpoint` in Python, or the
  environment variable ``MMRSA_TRUSTED_CHECKPOINTS`` (paths separated by
  ``os.pathsep``, inherited by ``torchrun`` workers). Only local files can be
  trusted; a trusted file is read with ``weights_only=False`` and a warning.
"""
import functools
import logging
import os
import os.path as osp
import pickle
import re
from typing import Callable, Optional, Set, Union

import torch
from mmengine.logging import print_log

__all__ = [
    'TRUST_ENV', 'UnsafeCheckpointError', 'trust_checkpoint',
    'is_trusted_checkpoint', 'trusted_checkpoints', 'install_safe_loading',
    'refusal_from'
]

#: Environment variable listing trusted checkpoint files.
TRUST_ENV = 'MMRSA_TRUSTED_CHECKPOINTS'

_PATCH_FLAG = '_mmrsa_safe_loading'
_REFUSED_GLOBAL = re.compile(r'GLOBAL (\S+)')
_REFUSED_OTHER = re.compile(
    r'(Trying to call reduce for unrecognized function .*|'
    r'Can only build .*, but got .*|'
    r'Can only create new object for .* but got .*|'
    r'Trying to load unsupported GLOBAL \S+)')

_trusted: Set[str] = set()


def _key(path: str) -> str:
    return osp.realpath(osp.expanduser(path))


def trusted_checkpoints() -> Set[str]:
    """The real paths of the files trusted in this process."""
    from_env = os.environ.get(TRUST_ENV, '')
    return _trusted | {_key(p) for p in from_env.split(os.pathsep) if p}


def trust_checkpoint(path: str) -> None:
    """Allow ``path`` (a local file) to be unpickled with arbitrary objects.

    Do this only for a file whose origin you trust: unpickling it may run any
    code it holds. The trust is recorded in this process and in the
    environment (:data:`TRUST_ENV`), so child processes inherit it.

    Args:
        path (str): A local checkpoint file.

    Raises:
        ValueError: ``path`` is a URL or another non-local location.
    """
    if '://' in path:
        raise ValueError(
            f'only local files can be trusted, got {path!r}; download it and '
            f'pass the local path.')
    key = _key(path)
    _trusted.add(key)
    entries = [p for p in os.environ.get(TRUST_ENV, '').split(os.pathsep) if p]
    if key not in entries:
        os.environ[TRUST_ENV] = os.pathsep.join(entries + [key])


def is_trusted_checkpoint(path: str) -> bool:
    """Whether ``path`` is a local file the user chose to trust."""
    return ('://' not in path and osp.isfile(osp.expanduser(path))
            and _key(path) in trusted_checkpoints())


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds pickled objects that could run code when loaded.

    Args:
        filename (str): The checkpoint.
        reason (str): The message of PyTorch's weights-only unpickler.
    """

    def __init__(self, filename: str, reason: str) -> None:
        self.filename = filename
        self.reason = reason
        match = _REFUSED_GLOBAL.search(reason)
        other = _REFUSED_OTHER.search(reason)
        if match is not None:
            self.refused = match.group(1)
            what = f'`{self.refused}`'
        elif other is not None:
            self.refused = None
            what = f'an object ({other.group(1).strip()})'
        else:
            self.refused = None
            what = 'an object that is not a tensor or plain data'
        local = '://' not in filename
        if local:
            opt_in = (
                f'If you trust this file (you or someone you trust wrote '
                f'it), opt in for it alone: pass --trust-pickle to the mmrsa '
                f'tool (tools/train.py, tools/test.py, demo/demo.py, '
                f'tools/convert_official_checkpoint.py), or set '
                f'{TRUST_ENV}={_key(filename)} in the environment, or call '
                f'mmrsa.engine.trust_checkpoint(path) in Python.')
        else:
            opt_in = ('If you trust this file, download it and opt in for '
                      f'the local copy (--trust-pickle, or '
                      f'{TRUST_ENV}=<local path>).')
        message = (
            f'refused to unpickle {what} from {filename}: loading it could '
            f'run arbitrary code, so the checkpoint was read with '
            f'torch.load(weights_only=True), which allows only tensors, plain '
            f'containers and the types MMEngine checkpoints hold. {opt_in} '
            f'Better still, re-save it with tensors and plain metadata only.')
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.filename, self.reason)


def _load_trusted(filename: str, map_location) -> Union[dict, object]:
    print_log(
        f'Loading {filename} with weights_only=False because it is trusted '
        f'(--trust-pickle / {TRUST_ENV}): the file may run code.',
        logger='current',
        level=logging.WARNING)
    return torch.load(
        osp.expanduser(filename),
        map_location=map_location,
        weights_only=False)


def _guarded(load_checkpoint: Callable) -> Callable:
    """Wrap ``CheckpointLoader.load_checkpoint`` (a bound classmethod)."""

    @functools.wraps(load_checkpoint)
    def wrapper(filename: str, map_location=None, logger='current'):
        if is_trusted_checkpoint(filename):
            return _load_trusted(filename, map_location)
        try:
            return load_checkpoint(filename, map_location, logger)
        except pickle.UnpicklingError as e:
            refusal = refusal_from(e, filename)
            if refusal is None or refusal is e:
                raise
            raise refusal from None

    setattr(wrapper, _PATCH_FLAG, True)
    return wrapper


def install_safe_loading() -> bool:
    """Route MMEngine's checkpoint loading through the guard above.

    Returns:
        bool: ``True`` if the loader was wrapped, ``False`` if it already was.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    current = CheckpointLoader.load_checkpoint
    if getattr(current, _PATCH_FLAG, False):
        return False
    CheckpointLoader.load_checkpoint = staticmethod(_guarded(current))
    return True


def refusal_from(error: BaseException,
                 filename: str) -> Optional[UnsafeCheckpointError]:
    """An :class:`UnsafeCheckpointError` for a weights-only refusal raised by
    a direct ``torch.load`` of ``filename``, or ``None`` for other errors."""
    if isinstance(error, UnsafeCheckpointError):
        return error
    if (isinstance(error, pickle.UnpicklingError)
            and 'Weights only load failed' in str(error)):
        return UnsafeCheckpointError(filename, str(error))
    return None
