# Copyright (c) mmrsa contributors. All rights reserved.
"""Turn a training checkpoint into a publishable one.

Keeps the model's ``state_dict`` (tensors only) and the plain part of
``meta`` (str / int / float / bool / None and lists and dicts of those;
numpy scalars become Python numbers, tuples become lists), drops the
optimizer, the schedulers, the message hub and everything else, and writes
``<OUT_PREFIX>-<first 8 hex digits of its sha256>.pth``, as MMAction2's model
zoo names its files. The result loads with ``torch.load(weights_only=True)``.
The same input always gives the same bytes, hence the same name.

Usage::

    python tools/publish_model.py work_dirs/rsanet/epoch_50.pth \\
        checkpoints/rsanet_r50_8x1_ssv1
    # -> checkpoints/rsanet_r50_8x1_ssv1-1a2b3c4d.pth, sha256 printed

Reading the input runs no code from it: MMEngine checkpoints hold objects
(``HistoryBuffer``, numpy arrays, ...) that ``weights_only=True`` refuses, so
they are read with :func:`restricted_load`, which builds tensors, containers
and numpy data and replaces every other pickled object by an inert
placeholder instead of importing and calling it.
"""
import argparse
import hashlib
import io
import os
import os.path as osp
import pickle
import sys
import types
from collections import OrderedDict
from typing import Any, List, Tuple

import torch

__all__ = ['restricted_load', 'Inert', 'plain_metadata', 'publish']

# (module, name) pairs a checkpoint may build: data, never behaviour.
_ALLOWED = {
    ('collections', 'OrderedDict'),
    ('builtins', 'set'),
    ('builtins', 'frozenset'),
    ('builtins', 'slice'),
    ('builtins', 'complex'),
    ('builtins', 'object'),
    ('copyreg', '_reconstructor'),
    ('_codecs', 'encode'),  # bytes in pickle protocol 2
    ('torch', 'Size'),
    ('torch', 'Tensor'),
    ('torch', 'device'),
    ('torch.nn.parameter', 'Parameter'),
    ('torch._utils', '_rebuild_tensor_v2'),
    ('torch._utils', '_rebuild_parameter'),
    ('torch._utils', '_rebuild_parameter_with_state'),
    ('torch._tensor', '_rebuild_from_type_v2'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', 'scalar'),
}


class Inert:
    """Stands in for a pickled object that was not built.

    Whatever the pickle asks of it (construction arguments, state) is
    ignored; ``Inert.missing`` holds its ``module.name``.
    """

    missing = ''

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass

    def __repr__(self) -> str:
        return f'<not loaded: {self.missing}>'


def _load_from_bytes(data: bytes):
    """Storages pickled with plain ``pickle`` carry a nested torch file."""
    return torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)


def _find_allowed(module: str, name: str, strict: bool):
    if (module, name) == ('torch.storage', '_load_from_bytes'):
        return _load_from_bytes
    if (module, name) in _ALLOWED:
        return getattr(__import__(module, fromlist=[name]), name)
    if module == 'torch' and isinstance(getattr(torch, name, None),
                                        torch.dtype):
        return getattr(torch, name)
    if module == 'numpy.dtypes' and name.endswith('DType'):
        import numpy.dtypes
        obj = getattr(numpy.dtypes, name, None)
        if isinstance(obj, type):
            return obj
    if strict:
        raise pickle.UnpicklingError(
            f'refusing to load {module}.{name}: only tensors, numpy data and '
            f'plain containers are read from this file.')
    return type(name, (Inert, ), {'missing': f'{module}.{name}'})


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that imports only data constructors.

    Anything else becomes an :class:`Inert` placeholder (or, with
    ``strict=True``, an ``UnpicklingError``), so no function named in the
    file is ever called.
    """

    strict = False

    def find_class(self, module: str, name: str):
        return _find_allowed(module, name, self.strict)


class StrictUnpickler(RestrictedUnpickler):
    """:class:`RestrictedUnpickler` that refuses instead of replacing."""

    strict = True


def _pickle_module(unpickler: type) -> types.ModuleType:
    module = types.ModuleType(f'mmrsa_{unpickler.__name__.lower()}')
    module.Unpickler = unpickler
    module.load = lambda f, **kw: unpickler(f, **kw).load()
    module.loads = lambda b, **kw: unpickler(io.BytesIO(b), **kw).load()
    return module


def restricted_load(path: str, strict: bool = False) -> Any:
    """Read a ``torch.save`` or ``pickle`` file without running its code.

    Args:
        path (str): The file.
        strict (bool): Refuse (``pickle.UnpicklingError``) rather than
            replace objects that are not data. Defaults to False.

    Returns:
        The unpickled object, with :class:`Inert` placeholders where the
        file names anything but tensors, numpy data and containers.
    """
    unpickler = StrictUnpickler if strict else RestrictedUnpickler
    with open(path, 'rb') as f:
        head = f.read(4)
        if not head.startswith(b'PK'):  # not torch's zip format
            f.seek(0)
            obj = unpickler(f).load()
            # torch's legacy format starts with a pickled magic number
            if obj != torch.serialization.MAGIC_NUMBER:
                return obj
    return torch.load(
        path,
        map_location='cpu',
        weights_only=False,
        pickle_module=_pickle_module(unpickler))


def plain_metadata(value: Any, path: str = 'meta',
                   dropped: List[str] = None) -> Any:
    """Keep the plain part of ``value``; list what was dropped in
    ``dropped``.

    str / int / float / bool / None are kept, numpy and one-element tensor
    scalars become Python numbers, tuples become lists, dicts keep their
    string keys; anything else is dropped.
    """
    dropped = [] if dropped is None else dropped
    if value is None or type(value) in (str, int, float, bool):
        return value
    try:
        import numpy as np
        if isinstance(value, np.generic) and value.shape == ():
            item = value.item()
            if type(item) in (str, int, float, bool):
                return item
    except ImportError:  # pragma: no cover
        pass
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


def _state_dict(checkpoint: Any) -> 'OrderedDict[str, torch.Tensor]':
    if isinstance(checkpoint, dict) and 'state_dict' in checkpoint:
        state_dict = checkpoint['state_dict']
    else:
        state_dict = checkpoint
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError('the checkpoint has no state_dict of tensors.')
    bad = [k for k, v in state_dict.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f'the state_dict holds entries that are not tensors: '
                         f'{bad[:5]}')
    keys = list(state_dict)
    if all(k.startswith('module.') for k in keys):  # a wrapped model
        keys = [k[len('module.'):] for k in keys]
    return OrderedDict(
        (k, v.detach().cpu().contiguous().clone())
        for k, v in zip(keys, state_dict.values()))


def publish(in_path: str,
            out_prefix: str,
            force: bool = False) -> Tuple[str, str, List[str]]:
    """Write the publishable form of ``in_path``.

    Args:
        in_path (str): A training checkpoint (MMEngine's, or any
            ``torch.save`` of a state dict or of ``{'state_dict': ...}``).
        out_prefix (str): Output path without the hash; a trailing ``.pth``
            is dropped.
        force (bool): Overwrite an existing output file. Defaults to False.

    Returns:
        tuple[str, str, list[str]]: The file written, its full sha256 and
        the top-level keys and metadata entries that were dropped.
    """
    checkpoint = restricted_load(in_path)
    state_dict = _state_dict(checkpoint)
    dropped: List[str] = []
    meta = {}
    if isinstance(checkpoint, dict) and 'state_dict' in checkpoint:
        dropped += [k for k in checkpoint if k not in ('meta', 'state_dict')]
        if 'meta' in checkpoint:
            meta = plain_metadata(checkpoint['meta'], 'meta', dropped)
            if not isinstance(meta, dict):
                meta = {}
    buffer = io.BytesIO()  # not a file: its name would enter the archive
    torch.save({'meta': meta, 'state_dict': state_dict}, buffer)
    data = buffer.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    if out_prefix.endswith('.pth'):
        out_prefix = out_prefix[:-len('.pth')]
    out_path = f'{out_prefix}-{sha256[:8]}.pth'
    if osp.exists(out_path) and not force:
        raise FileExistsError(
            f'{out_path} already exists; pass --force to overwrite it')
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    with open(out_path, 'wb') as f:
        f.write(data)
    torch.load(out_path, map_location='cpu', weights_only=True)  # self-check
    return out_path, sha256, dropped


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Strip optimizer and runtime state from a checkpoint and '
        'name it by its sha256.')
    parser.add_argument('in_file', help='input checkpoint')
    parser.add_argument(
        'out_prefix',
        help='output path without the hash, e.g. checkpoints/rsanet_r50_8x1')
    parser.add_argument(
        '--force', action='store_true',
        help='overwrite the output file if it exists')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        out_path, sha256, dropped = publish(args.in_file, args.out_prefix,
                                            args.force)
    except (OSError, ValueError, pickle.UnpicklingError, RuntimeError) as err:
        print(f'error: {args.in_file}: {err}', file=sys.stderr)
        return 1
    if dropped:
        print('dropped: ' + ', '.join(dropped))
    print(f'{out_path}\nsha256 {sha256}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
