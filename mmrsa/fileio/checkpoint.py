# Copyright (c) mmrsa contributors. All rights reserved.
"""Checkpoint and score files: the one loader, for every path and URL.

Loading runs no code from the file. Every checkpoint is read with
``torch.load(weights_only=True)``: tensors, plain containers and the few
types MMEngine's own checkpoints hold (:func:`allowed_globals`: its log
buffers and numeric numpy data). The allow-list is applied only inside this
loader (``torch.serialization.safe_globals`` as a context), never to the
process, and what was loaded is checked again afterwards (no numpy array or
scalar of a non-numeric dtype gets out). Score dumps (``tools/test.py
--dump``), plain pickles, are read by :func:`load_score_file` with the same
allow-list. A file that
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
import ast
import contextlib
import copyreg
import hashlib
import io
import logging
import os
import os.path as osp
import pickle
import re
import tempfile
from collections import OrderedDict
from typing import IO, Any, Dict, Iterator, List, Optional, Set, Union
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from mmengine.logging import print_log

__all__ = [
    'allowed_globals', 'load_score_file', 'torchvision_url', 'check_file_hash',
    'check_config_text', 'is_declarative_config', 'cache_path',
    'is_official_layout', 'from_official_layout', 'torch_load_through_loader',
    'HASH_IN_NAME', 'TRUST_ENV', 'UnsafeCheckpointError',
    'CheckpointFileError', 'CheckpointDownloadError', 'trust_checkpoint',
    'is_trusted_checkpoint', 'trusted_checkpoints', 'safe_torch_load',
    'load_local_checkpoint', 'download_checkpoint', 'load_url_checkpoint',
    'load_checkpoint_file', 'register_safe_schemes', 'SAFE_SCHEMES',
    'plain_metadata', 'state_dict_of', 'sha256_file'
]

#: Environment variable listing trusted checkpoint files.
TRUST_ENV = 'MMRSA_TRUSTED_CHECKPOINTS'

_REFUSED_GLOBAL = re.compile(r'GLOBAL (\S+)')
_REFUSED_OTHER = re.compile(
    r'(Unsupported config text: .*|a numpy value at .*|'
    r'numpy\.dtype\([^)]*\) is not a numeric dtype|'
    r'Trying to call reduce for unrecognized function .*|'
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
                f'mmrsa.fileio.checkpoint.trust_checkpoint(path) in Python.')
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


# ---------------------------------------------------------------------- #
# the one allow-list
# ---------------------------------------------------------------------- #
# The statistics of ``HistoryBuffer`` that MMEngine registers itself; their
# functions are pickled as ``getattr(HistoryBuffer, name)``.
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
# numpy dtype kinds a checkpoint or score file may hold: bool, ints,
# unsigned ints, floats, complex numbers.
_NUMERIC_KINDS = 'biufc'


def _history_buffer_getattr(obj: object, name: str) -> object:
    """``getattr`` restricted to the statistics of ``HistoryBuffer``.

    MMEngine pickles the statistics table of its log buffers as
    ``getattr(HistoryBuffer, 'mean')`` and so on. Allowing ``getattr`` itself
    would let a file reach any attribute of anything it can name, so this
    stands in for it: it returns a public method of ``HistoryBuffer`` and
    refuses everything else.

    Raises:
        pickle.UnpicklingError: For any other object or name.
    """
    from mmengine.logging import HistoryBuffer
    allowed = set(_HISTORY_BUFFER_STATISTICS) | set(
        HistoryBuffer._statistics_methods)
    if (obj is HistoryBuffer and isinstance(name, str)
            and not name.startswith('_') and name in allowed
            and callable(vars(HistoryBuffer).get(name))):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL builtins.getattr was not an allowed '
        f'global by default. mmrsa allows it only as getattr(HistoryBuffer, '
        f'<statistic>), not as getattr({obj!r}, {name!r}).')


def _numeric_dtype(*args, **kwargs):
    """``numpy.dtype(...)`` for numeric dtypes only.

    Stands in for ``numpy.dtype`` while unpickling: an object, string, void
    or structured dtype is refused before any array is built from it.

    Raises:
        pickle.UnpicklingError: The dtype is not numeric.
    """
    import numpy as np
    dtype = np.dtype(*args, **kwargs)
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject or dtype.fields:
        raise pickle.UnpicklingError(
            f'Unsupported global: numpy.dtype({args[0]!r}) is not a numeric '
            f'dtype; only numeric numpy data are read from a checkpoint.')
    return dtype


def _numeric_dtype_classes() -> list:
    """numpy's classes of the numeric dtypes (``numpy.dtypes.Float64DType``,
    ...), whose state the unpickler sets when it builds a dtype."""
    import numpy as np
    kinds = set()
    for code in np.typecodes['All']:
        dtype = np.dtype(code)
        if dtype.kind in _NUMERIC_KINDS:
            kinds.add(type(dtype))
    return sorted(kinds, key=lambda c: c.__name__)


def allowed_globals() -> Dict[str, Any]:
    """The one allow-list for checkpoint and score files: the name a file
    uses for a global, and the object the loader gives it.

    Found by saving real checkpoints with ``Runner`` (train, validation,
    best-checkpoint and resume states) and score dumps with
    ``DumpResults``: ``HistoryBuffer`` log buffers,
    ``getattr(HistoryBuffer, <statistic>)``, numpy arrays and scalars of
    numeric dtypes, the classes of those dtypes (the unpickler sets their
    state) and numpy's reconstruct functions (also under their numpy < 2
    path, ``numpy.core``, that files written with numpy 1 name).
    ``numpy.dtype`` is :func:`_numeric_dtype`, so an object dtype is refused.
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    allowed = {
        'mmengine.logging.history_buffer.HistoryBuffer': HistoryBuffer,
        'numpy.ndarray': np.ndarray,
        'numpy.dtype': _numeric_dtype,
        'builtins.getattr': _history_buffer_getattr,
    }
    for cls in _numeric_dtype_classes():
        allowed[f'{cls.__module__}.{cls.__qualname__}'] = cls
    for func in (multiarray._reconstruct, multiarray.scalar):
        for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
            allowed[f'{module}.{func.__name__}'] = func
    return allowed


def _safe_globals_context():
    """``torch.serialization.safe_globals`` with :func:`allowed_globals`: the
    allow-list holds only while this loader reads a file."""
    entries = []
    for name, obj in allowed_globals().items():
        own = f'{getattr(obj, "__module__", "")}.' \
              f'{getattr(obj, "__qualname__", "")}'
        entries.append(obj if own == name else (obj, name))
    return torch.serialization.safe_globals(entries)


def _check_numeric(value: Any, name: str, path: str = '', depth: int = 0):
    """Refuse a loaded numpy array or scalar whose dtype is not a plain
    numeric one (checked again after loading, whatever built it)."""
    import numpy as np
    if depth > 100:
        return
    if isinstance(value, (np.ndarray, np.generic)):
        dtype = value.dtype
        canonical = np.dtype(dtype.str) if dtype.kind in _NUMERIC_KINDS \
            else None
        if canonical is None or dtype.hasobject or dtype.fields \
                or dtype.flags != canonical.flags:
            raise UnsafeCheckpointError(
                name, f'Unsupported global: a numpy value at {path or "top"} '
                f'has dtype {dtype!r}, which is not a plain numeric dtype')
        return
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = enumerate(value)
    else:
        from mmengine.logging import HistoryBuffer
        if isinstance(value, HistoryBuffer):
            items = vars(value).items()
        else:
            return
    for key, item in items:
        _check_numeric(item, name, f'{path}[{key!r}]', depth + 1)


def _tensor_from_bytes(data: bytes):
    """A tensor storage pickled with plain ``pickle`` (a nested torch file
    inside a score dump), read with this loader."""
    return safe_torch_load(io.BytesIO(data), map_location='cpu')


def _latin1_encode(text: str, encoding: str = 'latin1') -> bytes:
    """``_codecs.encode`` as pickle protocol 2 uses it for ``bytes``
    (latin-1 only)."""
    if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
        raise pickle.UnpicklingError(
            f'Unsupported global: _codecs.encode is allowed only for '
            f'latin-1 text (bytes in pickle protocol 2), got {encoding!r}.')
    return text.encode('latin1')


class _ScoreFileUnpickler(pickle.Unpickler):
    """Builds what :func:`allowed_globals` allows, tensors and plain
    containers; refuses every other global."""

    _DATA = {
        'collections.OrderedDict': OrderedDict,
        'builtins.set': set,
        'builtins.frozenset': frozenset,
        'torch.Size': torch.Size,
        'torch.device': torch.device,
        'torch._utils._rebuild_tensor_v2': torch._utils._rebuild_tensor_v2,
        'torch._tensor._rebuild_from_type_v2':
        torch._tensor._rebuild_from_type_v2,
        'torch.Tensor': torch.Tensor,
        'torch.storage._load_from_bytes': _tensor_from_bytes,
        'copyreg._reconstructor': copyreg._reconstructor,
        '_codecs.encode': _latin1_encode,  # bytes in pickle protocol 2
    }

    def find_class(self, module: str, name: str):
        full = f'{module}.{name}'
        allowed = allowed_globals()
        allowed.pop('builtins.getattr')  # no log buffers in a score file
        allowed.pop('mmengine.logging.history_buffer.HistoryBuffer')
        if full in allowed:
            return allowed[full]
        if full in self._DATA:
            return self._DATA[full]
        if module == 'torch' and isinstance(
                getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(
            f'Unsupported global: GLOBAL {full} is not allowed: only '
            f'tensors, numeric numpy data and plain containers are read from '
            f'a score file.')


def load_score_file(path: str) -> Any:
    """Read a plain-pickle score file (``tools/test.py --dump``) without
    running code from it.

    Raises:
        UnsafeCheckpointError: The file pickles objects other than data.
        CheckpointFileError: The file is empty, truncated or not a pickle.
    """
    size = osp.getsize(path)
    if size == 0:
        raise CheckpointFileError(
            _describe_bad_file(path, 0, EOFError('empty file')))
    try:
        with open(path, 'rb') as f:
            result = _ScoreFileUnpickler(f).load()
    except UnsafeCheckpointError:
        raise
    except pickle.UnpicklingError as e:
        if 'Unsupported global' in str(e):
            raise UnsafeCheckpointError(path, str(e)) from None
        raise CheckpointFileError(_describe_bad_file(path, size, e)) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RuntimeError, UnicodeDecodeError, MemoryError,
            OverflowError) as e:
        raise CheckpointFileError(_describe_bad_file(path, size, e)) from None
    _check_numeric(result, path)
    return result


def _describe_bad_file(name: str, size: Optional[int],
                       error: BaseException) -> str:
    detail = str(error).strip().splitlines()
    detail = detail[0] if detail else type(error).__name__
    if size == 0:
        what = 'is empty (0 bytes)'
    elif isinstance(error, EOFError) or any(
            s in str(error).lower()
            for s in ('failed finding central', 'truncated',
                      'invalid argument', 'unexpected eof')):
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
        check_file_hash(source, name)
    elif isinstance(source, io.BytesIO):
        size = source.getbuffer().nbytes
    if size == 0:
        raise CheckpointFileError(
            _describe_bad_file(name, 0, EOFError('empty file')))
    try:
        if trusted:
            return torch.load(
                source, map_location=map_location, weights_only=False)
        with _safe_globals_context():
            checkpoint = torch.load(
                source, map_location=map_location, weights_only=True)
    except UnsafeCheckpointError:
        raise
    except pickle.UnpicklingError as e:
        if 'Weights only load failed' in str(e) and not _is_bad_data(e):
            raise UnsafeCheckpointError(name, str(e)) from None
        raise CheckpointFileError(_describe_bad_file(name, size, e)) from None
    except RuntimeError as e:
        message = str(e)
        if 'legacy' in message and 'tar' in message:
            raise CheckpointFileError(
                f'{name} is in PyTorch\'s legacy tar format, which cannot be '
                f'read without running the code it may hold. If you trust '
                f'it, opt in for it alone (--trust-pickle, or '
                f'{TRUST_ENV}=<local path>) and re-save it with torch.save.'
            ) from None
        if 'CUDA' in message or 'map_location' in message:
            raise  # a device problem, not a file problem
        raise CheckpointFileError(_describe_bad_file(name, size, e)) from None
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: B902  any other way bytes can be broken
        # (EOFError, BadZipFile, UnicodeDecodeError, KeyError, struct.error,
        # an assertion inside torch's rebuild functions, ...)
        raise CheckpointFileError(_describe_bad_file(name, size, e)) from None
    _check_numeric(checkpoint, name)
    check_config_text(checkpoint, name)
    return checkpoint


# ---------------------------------------------------------------------- #
# the sha256 in a file name, the config text in a checkpoint
# ---------------------------------------------------------------------- #
#: A published file's name ends with the first hex digits of its sha256
#: (``name-1a2b3c4d.pth``), as ``torch.hub`` and OpenMMLab name them.
HASH_IN_NAME = re.compile(r'-([0-9a-f]{8,64})\.(pth|pt|ckpt)$')


def check_file_hash(path: str, name: Optional[str] = None) -> None:
    """Check a file named ``...-<sha256 prefix>.pth`` against its sha256, as
    ``torch.hub`` does with ``check_hash=True``.

    Raises:
        CheckpointFileError: The file's sha256 does not start with the hex
            digits of its name (a corrupted or altered file).
    """
    match = HASH_IN_NAME.search(osp.basename(path))
    if match is None:
        return
    expected = match.group(1)
    actual = sha256_file(path)
    if not actual.startswith(expected):
        raise CheckpointFileError(
            f'{name or path} is corrupted or altered: its name says sha256 '
            f'{expected}..., its content has sha256 {actual[:len(expected)]}'
            f'... Download or copy it again (a cached download lives in '
            f'{osp.dirname(osp.abspath(path))}; delete it there). A file of '
            f'your own whose name merely ends in -<hex>.pth: rename it.')


# What a declarative config may hold: MMEngine's ``Config.pretty_text`` of a
# resolved config is a sequence of ``name = value`` lines whose values are
# literals, names, and dict/list/tuple/set built from them.
_CONFIG_CALLS = ('dict', 'list', 'tuple', 'set')
_CONFIG_NODES = (ast.Constant, ast.Name, ast.Load, ast.Store, ast.List,
                 ast.Tuple, ast.Set, ast.Dict, ast.keyword, ast.UnaryOp,
                 ast.USub, ast.UAdd)


def _declarative_problem(text: str) -> Optional[str]:
    """What makes ``text`` more than declarative config text (``None`` when
    it is declarative)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError) as e:
        return f'it is not valid Python ({e})'
    for statement in tree.body:
        if isinstance(statement, ast.Expr) and isinstance(
                statement.value, ast.Constant) and isinstance(
                    statement.value.value, str):
            continue  # a docstring
        if not isinstance(statement, ast.Assign) or not all(
                isinstance(t, ast.Name) for t in statement.targets):
            return (f'line {statement.lineno} is a '
                    f'{type(statement).__name__}, not "name = value"')
        for node in ast.walk(statement.value):
            if isinstance(node, ast.Call):
                if not (isinstance(node.func, ast.Name)
                        and node.func.id in _CONFIG_CALLS):
                    return (f'line {node.lineno} calls '
                            f'{ast.unparse(node.func)}(...)')
                if any(isinstance(a, ast.Starred)
                       for a in node.args) or any(k.arg is None
                                                  for k in node.keywords):
                    return f'line {node.lineno} unpacks arguments'
            elif not isinstance(node, _CONFIG_NODES):
                return (f'line {node.lineno} holds '
                        f'{type(node).__name__} `{ast.unparse(node)}`')
            if isinstance(node, ast.Name) and node.id.startswith('__'):
                return f'line {node.lineno} names {node.id}'
    return None


def is_declarative_config(text: str) -> bool:
    """Whether ``text`` is declarative config text: ``name = value`` lines of
    literals, names, and ``dict``/``list``/``tuple``/``set`` of them (what
    ``Config.pretty_text`` writes). MMEngine executes such text when it
    rebuilds a model from a checkpoint, so nothing else is accepted."""
    return _declarative_problem(text) is None


def check_config_text(checkpoint: Any, name: str) -> None:
    """Refuse a checkpoint whose stored config text (``meta['cfg']``) is not
    declarative.

    MMEngine's inferencers rebuild a model from that text with
    ``Config.fromstring``, which executes it; text that calls anything but
    ``dict``/``list``/``tuple``/``set`` could run code.

    Raises:
        UnsafeCheckpointError: Naming the file, the offending line and the
            per-file opt-in.
    """
    if not isinstance(checkpoint, dict):
        return
    meta = checkpoint.get('meta')
    if not isinstance(meta, dict) or not isinstance(meta.get('cfg'), str):
        return
    problem = _declarative_problem(meta['cfg'])
    if problem is not None:
        raise UnsafeCheckpointError(
            name, f'Unsupported config text: meta["cfg"] is not a '
            f'declarative config ({problem}); MMEngine executes that text '
            f'when it rebuilds the model from the checkpoint')


def _is_bad_data(error: BaseException) -> bool:
    """A weights-only failure caused by bytes that are not a pickle at all."""
    text = str(error)
    return any(
        s in text
        for s in ('invalid load key', 'Unsupported operand',
                  'pickle data was truncated', 'unpickling stack underflow',
                  'Ran out of input', 'EOF'))


def is_official_layout(checkpoint: Any) -> bool:
    """Whether ``checkpoint`` is a file of the authors' RSA code: a TSN
    wrapper's keys (``module.base_model.*``, ``module.new_fc.*``) next to
    ``epoch`` / ``arch`` / ``best_prec1``."""
    if not isinstance(checkpoint, dict):
        return False
    state = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state, dict):
        return False
    keys = [k for k in state if isinstance(k, str)]
    return any(
        k.startswith(('module.base_model.layer', 'base_model.layer'))
        for k in keys) and any(
            k.startswith(('module.new_fc.', 'new_fc.',
                          'module.base_model.fc1.', 'base_model.fc1.'))
            for k in keys)


def from_official_layout(checkpoint: Any, name: str) -> Any:
    """An mmrsa checkpoint of an authors' checkpoint, converted in memory
    with the converter's settings reading and key map
    (:mod:`mmrsa.converters.official`), and logged; any other checkpoint is
    returned as it is.

    Raises:
        CheckpointFileError: The file has the authors' layout but cannot be
            converted (the message says why).
    """
    if not is_official_layout(checkpoint):
        return checkpoint
    from mmrsa.converters.official import (ConversionError, convert_state_dict,
                                           official_settings,
                                           official_state_dict)
    try:
        state = official_state_dict(checkpoint)
        settings = official_settings(state)
        converted = convert_state_dict(state, settings)
    except ConversionError as err:
        raise CheckpointFileError(
            f'{name} has the layout of the authors\' RSA code but cannot be '
            f'converted: {err}') from None
    blocks = [list(b) for b in settings['rsa_blocks']]
    print_log(
        f'{name} is a checkpoint of the authors\' RSA code (epoch '
        f'{checkpoint.get("epoch")}, best_prec1 '
        f'{checkpoint.get("best_prec1")}): converted in memory to mmrsa '
        f'keys ({len(converted)} tensors; RSA blocks {blocks}, '
        f'{settings["num_classes"]} classes). To keep a converted copy: '
        f'python tools/convert/convert_official_checkpoint.py SRC DST '
        f'--verify',
        logger='current')
    meta = dict(
        official=True,
        source=name,
        epoch=checkpoint.get('epoch'),
        best_prec1=plain_metadata(checkpoint.get('best_prec1')),
        arch=checkpoint.get('arch'))
    return {'meta': meta, 'state_dict': converted}


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
    return from_official_layout(
        safe_torch_load(path, map_location, name=filename, trusted=trusted),
        filename)


def cache_path(url: str, model_dir: Optional[str] = None) -> str:
    """Where a download of ``url`` is kept: the one cache rule.

    ``torch.hub.get_dir()/checkpoints/<file name>`` (what ``torch.hub``
    uses, so a file copied there by hand is used offline) for a file whose
    name carries its hash (``name-1a2b3c4d.pth``: torchvision's, OpenMMLab's
    and published mmrsa files, unique by construction). Any other name gets
    the URL's last folder in between: the authors' releases share one file
    name (``.../RSA_R50_SSV1_16frames/resnet_rgb_model_best.pth.tar`` and
    ``.../RSA_R50_SSV2_16frames/...``), and in one flat folder the second
    would silently be read from the first's file.

    Args:
        url (str): An ``http://`` or ``https://`` URL.
        model_dir (str, optional): The cache root. Defaults to
            ``torch.hub.get_dir()/checkpoints``.
    """
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    parts = [p for p in urlparse(url).path.split('/') if p]
    name = parts[-1] if parts else 'checkpoint'
    if HASH_IN_NAME.search(name) or len(parts) < 2:
        return osp.join(model_dir, name)
    return osp.join(model_dir, parts[-2], name)


def download_checkpoint(url: str,
                        model_dir: Optional[str] = None,
                        progress: Optional[bool] = None) -> str:
    """Download ``url`` into the torch hub cache unless it is there already.

    The file goes where :func:`cache_path` says, so a file copied there by
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
    cached = cache_path(url, model_dir)
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
    name = f'{url} (cached at {path})'
    return from_official_layout(
        safe_torch_load(path, map_location, name=name), name)


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


def torchvision_url(filename: str) -> str:
    """The URL of ``torchvision://NAME`` (or ``modelzoo://NAME``), from
    torchvision's table, or MMEngine's copy of it when torchvision is
    missing.

    Raises:
        ValueError: ``NAME`` is not a torchvision model.
    """
    name = filename.split('://', 1)[1]
    urls = _torchvision_urls()
    if name not in urls:
        raise ValueError(
            f'{filename}: unknown torchvision model {name!r} (known names '
            f'include {sorted(urls)[:8]}); pass a local checkpoint path or '
            f'an http(s) URL instead.')
    return urls[name]


def _load_torchvision(filename: str, map_location: Any = None) -> Any:
    return load_url_checkpoint(torchvision_url(filename), map_location)


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


@contextlib.contextmanager
def torch_load_through_loader() -> Iterator[None]:
    """While the ``with`` block runs, ``torch.load`` reads through
    :func:`safe_torch_load` (weights only, the one allow-list; trusted files
    as the user chose); restored afterwards.

    For third-party scripts that call ``torch.load`` themselves, e.g.
    MMAction2's packaged ``publish_model.py`` run by
    ``tools/mmaction_tool.py``. A stack fix, listed in
    ``docs/compatibility.md``.
    """
    original = torch.load

    def load(f, map_location=None, *args, **kwargs):
        trusted = (
            isinstance(f, (str, os.PathLike))
            and is_trusted_checkpoint(os.fspath(f)))
        source = os.fspath(f) if isinstance(f, os.PathLike) else f
        torch.load = original  # what the safe loader itself calls
        try:
            return safe_torch_load(
                source, map_location=map_location, trusted=trusted)
        finally:
            torch.load = load

    torch.load = load
    try:
        yield
    finally:
        torch.load = original
