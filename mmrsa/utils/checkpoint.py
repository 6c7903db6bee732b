# Copyright (c) mmrsa contributors. All rights reserved.
"""Checkpoint files: safe loading for every path and URL, plain metadata,
sha256 names and atomic writes.

Loading runs no code from the file. Every checkpoint is read with
``torch.load(weights_only=True)``: tensors, plain containers and the types
MMEngine's own checkpoints hold (allow-listed by
:func:`mmrsa.utils.compat.patch_checkpoint_safe_globals`). A file that
pickles anything else is refused with :class:`UnsafeCheckpointError`, which
names the object, the file and the per-file opt-in. A file that is empty,
truncated or not a checkpoint at all raises :class:`CheckpointFileError`.

:func:`register_safe_schemes` (run by ``import mmrsa``) puts these loaders
behind MMEngine's extension point, ``CheckpointLoader.register_scheme``, for
local paths and for every remote scheme MMEngine knows (``http://``,
``https://``, ``torchvision://``, ``modelzoo://``, ``open-mmlab://``,
``openmmlab://``, ``mmcls://``, ``s3://``/``petrel://``), so ``load_from``,
``--resume``, ``init_recognizer``, a backbone's ``pretrained`` and every tool
load the same way. MMEngine's own HTTP loader goes through
``torch.hub.load_state_dict_from_url``, which unpickles without
``weights_only``: a file planted in the download cache would run.

A user opts in for a local file they trust (their own old checkpoint that
pickles a custom class, say) with the tools' ``--trust-pickle``,
:func:`trust_checkpoint` or the environment variable
``MMRSA_TRUSTED_CHECKPOINTS`` (paths separated by ``os.pathsep``, inherited by
``torchrun`` workers). A URL is never trusted: download it, then trust the
local copy.
"""
import hashlib
import io
import logging
import os
import os.path as osp
import pickle
import re
import tempfile
import zipfile
from collections import OrderedDict
from typing import IO, Any, Callable, List, Optional, Set, Union
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from mmengine.logging import print_log

__all__ = [
    'TRUST_ENV', 'UnsafeCheckpointError', 'CheckpointFileError',
    'CheckpointDownloadError', 'trust_checkpoint', 'is_trusted_checkpoint',
    'trusted_checkpoints', 'safe_torch_load', 'load_local_checkpoint',
    'download_checkpoint', 'load_url_checkpoint', 'load_checkpoint_file',
    'register_safe_schemes', 'SAFE_SCHEMES', 'plain_metadata',
    'state_dict_of', 'sha256_file', 'save_checkpoint_atomic'
]

#: Environment variable listing trusted checkpoint files.
TRUST_ENV = 'MMRSA_TRUSTED_CHECKPOINTS'

_REFUSED_GLOBAL = re.compile(r'GLOBAL (\S+)')
_REFUSED_OTHER = re.compile(
    r'(Trying to call reduce for unrecognized function .*|'
    r'Can only build .*, but got .*|'
    r'Can only create new object for .* but got .*|'
    r'Trying to load unsupported GLOBAL \S+)')

_trusted: Set[str] = set()


def _key(path: str) -> str:
    return osp.realpath(osp.expanduser(path))


def _is_url(path: str) -> bool:
    return '://' in str(path)


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
    if _is_url(path):
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
    return (not _is_url(path) and osp.isfile(osp.expanduser(path))
            and _key(path) in trusted_checkpoints())


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds pickled objects that could run code when loaded.

    Args:
        filename (str): The checkpoint (a path or the URL it came from).
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
        if _is_url(filename):
            opt_in = ('A URL is never trusted. If you trust this file, '
                      'download it and opt in for the local copy '
                      f'(--trust-pickle, or {TRUST_ENV}=<local path>).')
        else:
            opt_in = (
                f'If you trust this file (you or someone you trust wrote '
                f'it), opt in for it alone: pass --trust-pickle to the mmrsa '
                f'tool, or set {TRUST_ENV}={_key(filename)} in the '
                f'environment, or call '
                f'mmrsa.utils.checkpoint.trust_checkpoint(path) in Python.')
        message = (
            f'refused to unpickle {what} from {filename}: loading it could '
            f'run arbitrary code, so the checkpoint was read with '
            f'torch.load(weights_only=True), which allows only tensors, plain '
            f'containers and the types MMEngine checkpoints hold. {opt_in} '
            f'Better still, re-save it with tensors and plain metadata only.')
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.filename, self.reason)


class CheckpointFileError(ValueError):
    """A file that should be a checkpoint is empty, truncated or not one."""


class CheckpointDownloadError(OSError):
    """A remote checkpoint could not be downloaded."""


def _describe_bad_file(name: str, size: Optional[int],
                       error: BaseException) -> str:
    detail = str(error).strip().splitlines()
    detail = detail[0] if detail else type(error).__name__
    if size == 0:
        what = 'is empty (0 bytes)'
    elif isinstance(error, EOFError) or 'failed finding central' in str(
            error) or 'truncated' in str(error).lower():
        what = (f'is truncated or not a checkpoint ({size} bytes; '
                f'{type(error).__name__}: {detail})')
    else:
        what = (f'is not a PyTorch checkpoint ({type(error).__name__}: '
                f'{detail})')
    return (f'{name} {what}. Pass a file written by torch.save (e.g. a '
            f'checkpoint of tools/train.py); if it was being written or '
            f'downloaded, write or download it again.')


def safe_torch_load(source: Union[str, IO[bytes]],
                    map_location: Any = None,
                    name: Optional[str] = None,
                    trusted: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` and clear errors.

    Args:
        source (str | file): A local path or a binary file object.
        map_location: Same as :func:`torch.load`. Defaults to None.
        name (str, optional): What to call the file in messages (e.g. the URL
            it came from). Defaults to ``source`` itself.
        trusted (bool): Read with ``weights_only=False`` (the file may run
            code). Defaults to False.

    Raises:
        UnsafeCheckpointError: The file pickles objects other than data.
        CheckpointFileError: The file is empty, truncated or not a
            checkpoint.
    """
    name = name or (source if isinstance(source, str) else 'the checkpoint')
    size = None
    if isinstance(source, str):
        source = osp.expanduser(source)
        size = osp.getsize(source)
    elif isinstance(source, io.BytesIO):
        size = source.getbuffer().nbytes
    if size == 0:
        raise CheckpointFileError(
            _describe_bad_file(name, 0, EOFError('empty file')))
    try:
        return torch.load(
            source, map_location=map_location, weights_only=not trusted)
    except UnsafeCheckpointError:
        raise
    except pickle.UnpicklingError as e:
        if 'Weights only load failed' in str(e) and not _is_bad_data(e):
            raise UnsafeCheckpointError(name, str(e)) from None
        raise CheckpointFileError(_describe_bad_file(name, size, e)) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile) as e:
        message = str(e)
        if isinstance(e, RuntimeError) and not any(
                s in message for s in ('PytorchStreamReader', 'zip archive',
                                       'central directory', 'unexpected EOF',
                                       'storage has wrong byte size',
                                       'Invalid magic number',
                                       'invalid load key')):
            raise
        raise CheckpointFileError(_describe_bad_file(name, size, e)) from None


def _is_bad_data(error: BaseException) -> bool:
    """A weights-only failure caused by bytes that are not a pickle at all."""
    text = str(error)
    return any(s in text for s in ('invalid load key', 'Unsupported operand',
                                   'pickle data was truncated',
                                   'unpickling stack underflow',
                                   'Ran out of input', 'EOF'))


def load_local_checkpoint(filename: str, map_location: Any = None) -> Any:
    """Load a local checkpoint safely (the ``''`` scheme).

    A file the user trusts (:func:`trust_checkpoint`) is read with
    ``weights_only=False`` and a warning.
    """
    path = osp.expanduser(filename)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{filename} can not be found.')
    trusted = is_trusted_checkpoint(path)
    if trusted:
        print_log(
            f'Loading {filename} with weights_only=False because it is '
            f'trusted (--trust-pickle / {TRUST_ENV}): the file may run code.',
            logger='current',
            level=logging.WARNING)
    return safe_torch_load(path, map_location, name=filename, trusted=trusted)


def _cache_path(url: str, model_dir: Optional[str] = None) -> str:
    """Where ``torch.hub`` keeps a download of ``url``."""
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    return osp.join(model_dir, osp.basename(urlparse(url).path))


def download_checkpoint(url: str,
                        model_dir: Optional[str] = None,
                        progress: Optional[bool] = None) -> str:
    """Download ``url`` into the torch hub cache unless it is there already.

    The file keeps the name ``torch.hub`` gives it
    (``$TORCH_HOME/hub/checkpoints/<file name>``), so a file copied there by
    hand is used offline.

    Args:
        url (str): An ``http://`` or ``https://`` URL.
        model_dir (str, optional): Cache folder. Defaults to
            ``torch.hub.get_dir()/checkpoints``.
        progress (bool, optional): Show a progress bar. Defaults to whether
            standard error is a terminal.

    Returns:
        str: The local file.

    Raises:
        CheckpointDownloadError: The download failed (e.g. no network); the
            message says where to put the file to work offline.
    """
    cached = _cache_path(url, model_dir)
    if osp.isfile(cached):
        return cached
    os.makedirs(osp.dirname(cached), exist_ok=True)
    if progress is None:
        progress = os.isatty(2)
    print_log(f'Downloading {url} to {cached}', logger='current')
    try:
        # writes to a temporary file and moves it into place when complete
        torch.hub.download_url_to_file(url, cached, progress=progress)
    except (URLError, OSError, ValueError) as e:
        reason = getattr(e, 'reason', e)
        raise CheckpointDownloadError(
            f'cannot download {url}: {reason}. Without network, download the '
            f'file on another machine and either pass its local path instead '
            f'of the URL (e.g. pretrained=/path/to/file, load_from=, '
            f'--resume), or copy it to {cached}, where it is used without '
            f'downloading.') from None
    return cached


def load_url_checkpoint(url: str,
                        map_location: Any = None,
                        model_dir: Optional[str] = None,
                        progress: Optional[bool] = None) -> Any:
    """Download (or take from the cache) and safely load ``url``.

    In a distributed run, local rank 0 downloads first while the other ranks
    wait, as MMEngine does.
    """
    from mmengine.dist import get_dist_info
    rank, world_size = get_dist_info()
    local_rank = int(os.environ.get('LOCAL_RANK', rank))
    if local_rank == 0:
        path = download_checkpoint(url, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if local_rank > 0:
            path = download_checkpoint(url, model_dir, progress)
    return safe_torch_load(path, map_location, name=f'{url} (cached at {path})')


def _torchvision_urls() -> dict:
    """torchvision's model URLs; MMEngine's table when torchvision is
    missing."""
    from mmengine.runner.checkpoint import get_torchvision_models
    try:
        return get_torchvision_models()
    except ImportError:
        import mmengine
        return mmengine.load(
            osp.join(mmengine.__path__[0], 'hub', 'torchvision_0.12.json'))


def _load_torchvision(filename: str, map_location: Any = None) -> Any:
    name = filename.split('://', 1)[1]
    urls = _torchvision_urls()
    if name not in urls:
        raise KeyError(f'{filename}: unknown torchvision model {name!r}; '
                       f'known names include {sorted(urls)[:8]}.')
    return load_url_checkpoint(urls[name], map_location)


def _load_openmmlab(filename: str, map_location: Any = None) -> Any:
    from mmengine.runner.checkpoint import (_get_mmengine_home,
                                            get_deprecated_model_names,
                                            get_external_models)
    name = filename.split('://', 1)[1]
    name = get_deprecated_model_names().get(name, name)
    urls = get_external_models()
    if name not in urls:
        raise KeyError(f'{filename}: unknown OpenMMLab model {name!r}.')
    url = urls[name]
    if url.startswith(('http://', 'https://')):
        return load_url_checkpoint(url, map_location)
    return load_local_checkpoint(
        osp.join(_get_mmengine_home(), url), map_location)


def _load_mmcls(filename: str, map_location: Any = None) -> Any:
    from mmengine.runner.checkpoint import (_process_mmcls_checkpoint,
                                            get_mmcls_models)
    name = filename[len('mmcls://'):]
    checkpoint = load_url_checkpoint(get_mmcls_models()[name], map_location)
    return _process_mmcls_checkpoint(checkpoint)


def _load_storage(filename: str, map_location: Any = None) -> Any:
    """``s3://`` and ``petrel://`` through MMEngine's file backend."""
    from mmengine.fileio import get_file_backend
    backend = get_file_backend(filename, backend_args={'backend': 'petrel'})
    with io.BytesIO(backend.get(filename)) as buffer:
        return safe_torch_load(buffer, map_location, name=filename)


def _load_pavi(filename: str, map_location: Any = None) -> Any:
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError(
            'Please install pavi to load checkpoint from modelcloud.')
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp_dir:
        downloaded = osp.join(tmp_dir, model.name)
        model.download(downloaded)
        return safe_torch_load(downloaded, map_location, name=filename)


# Names chosen so that MMEngine's log line "Loads checkpoint by <name[10:]>
# backend" reads well.
def load_from_local(filename, map_location=None):
    return load_local_checkpoint(filename, map_location)


def load_from_http(filename, map_location=None):
    return load_url_checkpoint(filename, map_location)


def load_from_torchvision(filename, map_location=None):
    return _load_torchvision(filename, map_location)


def load_from_openmmlab(filename, map_location=None):
    return _load_openmmlab(filename, map_location)


def load_from_mmcls(filename, map_location=None):
    return _load_mmcls(filename, map_location)


def load_from_ceph(filename, map_location=None):
    return _load_storage(filename, map_location)


def load_from_pavi(filename, map_location=None):
    return _load_pavi(filename, map_location)


#: The schemes :func:`register_safe_schemes` registers, with their loaders.
SAFE_SCHEMES = (
    ('', load_from_local),
    (('http://', 'https://'), load_from_http),
    (('modelzoo://', 'torchvision://'), load_from_torchvision),
    (('open-mmlab://', 'openmmlab://'), load_from_openmmlab),
    ('mmcls://', load_from_mmcls),
    ((r'(\S+\:)?s3://', r'(\S+\:)?petrel://'), load_from_ceph),
    ('pavi://', load_from_pavi),
)


def register_safe_schemes() -> bool:
    """Register the safe loaders for every scheme MMEngine knows.

    Uses MMEngine's extension point ``CheckpointLoader.register_scheme``
    (``force=True`` replaces MMEngine's own loaders for these prefixes).

    Returns:
        bool: ``True`` if a loader was (re)registered, ``False`` when all of
        them were in place already.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    changed = False
    for prefixes, loader in SAFE_SCHEMES:
        names = (prefixes, ) if isinstance(prefixes, str) else prefixes
        if all(CheckpointLoader._schemes.get(p) is loader for p in names):
            continue
        CheckpointLoader.register_scheme(prefixes, loader, force=True)
        changed = True
    return changed


def load_checkpoint_file(filename: str,
                         map_location: Any = 'cpu',
                         logger: str = 'current') -> Any:
    """Load a checkpoint from a local path or any registered scheme, safely.

    This is MMEngine's ``CheckpointLoader.load_checkpoint`` with the loaders
    of :func:`register_safe_schemes` in place (registered if needed).

    Raises:
        FileNotFoundError: No such local file.
        UnsafeCheckpointError: The file pickles objects other than data.
        CheckpointFileError: The file is empty, truncated or not a
            checkpoint.
        CheckpointDownloadError: A URL could not be downloaded.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    register_safe_schemes()
    return CheckpointLoader.load_checkpoint(
        str(filename), map_location=map_location, logger=logger)


def plain_metadata(value: Any,
                   path: str = 'meta',
                   dropped: Optional[List[str]] = None) -> Any:
    """Keep the plain part of ``value``; list what was dropped in
    ``dropped``.

    str / int / float / bool / None are kept, numpy and one-element tensor
    scalars become Python numbers, tuples become lists, dicts keep their
    string keys; anything else is dropped (and its path appended to
    ``dropped``).
    """
    import numpy as np
    dropped = [] if dropped is None else dropped
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, np.generic) and value.shape == ():
        item = value.item()
        if type(item) in (str, int, float, bool):
            return item
    if isinstance(value, torch.Tensor) and value.numel() == 1 \
            and value.dim() == 0:
        return value.item()
    if isinstance(value, (list, tuple)):
        out = []
        for i, item in enumerate(value):
            kept = plain_metadata(item, f'{path}[{i}]', dropped)
            if kept is not None or item is None:
                out.append(kept)
        return out
    if isinstance(value, dict):
        out = OrderedDict()
        for key, item in value.items():
            if not isinstance(key, str):
                dropped.append(f'{path}[{key!r}]')
                continue
            kept = plain_metadata(item, f'{path}.{key}', dropped)
            if kept is not None or item is None:
                out[key] = kept
        return dict(out)
    dropped.append(f'{path} ({type(value).__name__})')
    return None


def state_dict_of(checkpoint: Any) -> 'OrderedDict[str, torch.Tensor]':
    """The model weights of a loaded checkpoint: its ``state_dict`` (or the
    checkpoint itself), ``module.`` prefixes of a wrapped model dropped,
    tensors detached, on the CPU and contiguous.

    Raises:
        CheckpointFileError: There is no non-empty mapping of names to
            tensors.
    """
    if isinstance(checkpoint, dict) and 'state_dict' in checkpoint:
        state_dict = checkpoint['state_dict']
    else:
        state_dict = checkpoint
    if not isinstance(state_dict, dict) or not state_dict:
        raise CheckpointFileError(
            'the checkpoint has no state_dict of tensors (got '
            f'{type(state_dict).__name__}).')
    bad = [
        k for k, v in state_dict.items()
        if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    ]
    if bad:
        raise CheckpointFileError(
            f'the state_dict holds entries that are not tensors: {bad[:5]}')
    keys = list(state_dict)
    if all(k.startswith('module.') for k in keys):  # a wrapped model
        keys = [k[len('module.'):] for k in keys]
    return OrderedDict((k, v.detach().cpu().contiguous().clone())
                       for k, v in zip(keys, state_dict.values()))


def sha256_file(path: str, chunk_size: int = 1 << 20) -> str:
    """The full sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint_atomic(obj: Any,
                           path: str,
                           save: Optional[Callable[[Any, IO[bytes]],
                                                   None]] = None) -> None:
    """Write ``obj`` to ``path`` so that ``path`` is never partial.

    The bytes go to a temporary file in the same folder, are flushed to disk
    and then renamed over ``path`` (``os.replace`` is atomic on POSIX and
    Windows): a crash leaves either the old file or the new one.

    Args:
        obj: What to save.
        path (str): The destination.
        save (callable, optional): ``save(obj, file)``. Defaults to
            :func:`torch.save`.
    """
    save = save or torch.save
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
