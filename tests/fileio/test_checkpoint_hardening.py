# Copyright (c) mmrsa contributors. All rights reserved.
"""The loader keeps its promise for what a checkpoint carries besides
pickles: its stored config text, the hash in its name, and every way a file
can be broken ends in one clear error naming the file."""
import hashlib
import io
import os
import random
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from run_helpers import DEMO_CONFIG, serve_folder

import mmrsa  # noqa: F401
from mmrsa.fileio import checkpoint as loader
from mmrsa.fileio.checkpoint import (CheckpointFileError,
                                     UnsafeCheckpointError,
                                     is_declarative_config)


@pytest.fixture(autouse=True)
def no_trusted_files(monkeypatch):
    monkeypatch.delenv(loader.TRUST_ENV, raising=False)
    monkeypatch.setattr(loader, '_trusted', set())


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    return home


# ----------------------------------------------------- config text ----
def _payload_text(marker: Path) -> str:
    from mmengine.config import Config
    text = Config.fromfile(DEMO_CONFIG).pretty_text
    return text + (f'\nx = __import__("pathlib").Path({str(marker)!r})'
                   f'.write_text("ran")\n')


def _checkpoint_with_cfg(path: Path, text: str, model=None) -> None:
    state = model.state_dict() if model is not None else {'w': torch.ones(1)}
    torch.save(dict(meta=dict(cfg=text), state_dict=state), path)


@pytest.mark.parametrize('text, ok', [
    ("model = dict(type='X', depth=50, lr=-0.1, steps=[1, 2], t=(1, ))", True),
    ("a = dict(b=None, c=True, d={'e': 1.5})\nb = a", True),
    ("a = __import__('os').system('true')", False),
    ('import os', False),
    ('a = [x for x in range(3)]', False),
    ('a = (lambda: 1)()', False),
    ('a = dict(**{"b": 1})', False),
    ("a = 'x'.join(['a'])", False),
    ('a.b = 1', False),
    ('a = __builtins__', False),
])
def test_declarative_config_text(text, ok):
    assert is_declarative_config(text) is ok


def test_own_configs_are_declarative():
    from mmengine.config import Config
    assert is_declarative_config(Config.fromfile(DEMO_CONFIG).pretty_text)


def test_inferencer_runs_no_code_from_config_text(tmp_path, torch_home):
    """MMEngine's BaseInferencer rebuilds a model from meta['cfg'] with
    Config.fromstring, which executes it: the loader refuses the file
    first, from a local path and from http://."""
    from mmaction.apis.inferencers import ActionRecogInferencer
    marker = tmp_path / 'ran.txt'
    path = tmp_path / 'evil.pth'
    _checkpoint_with_cfg(path, _payload_text(marker))
    with pytest.raises(UnsafeCheckpointError) as info:
        ActionRecogInferencer(model=None, weights=str(path), device='cpu')
    message = str(info.value)
    assert str(path) in message and '--trust-pickle' in message
    assert 'config' in message and '__import__' in message
    assert not marker.exists()
    with serve_folder(tmp_path) as url:
        with pytest.raises(UnsafeCheckpointError):
            ActionRecogInferencer(
                model=None, weights=f'{url}/evil.pth', device='cpu')
    assert not marker.exists()


def test_declarative_config_text_still_builds_the_model(tmp_path):
    """A checkpoint with plain config text (what Runner and publish write)
    loads and the inferencer builds the model from it."""
    from mmengine.config import Config

    from mmaction.apis.inferencers import ActionRecogInferencer
    from mmrsa.apis import build_model
    model = build_model(DEMO_CONFIG)
    path = tmp_path / 'good.pth'
    _checkpoint_with_cfg(path, Config.fromfile(DEMO_CONFIG).pretty_text, model)
    inferencer = ActionRecogInferencer(
        model=None, weights=str(path), device='cpu')
    loaded = inferencer.model.state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded[key], value)


def test_publish_drops_config_text_that_is_not_declarative(tmp_path):
    from mmrsa.utils.publish import publish_checkpoint
    src = tmp_path / 'trusted.pth'
    _checkpoint_with_cfg(src, _payload_text(tmp_path / 'ran.txt'))
    loader.trust_checkpoint(str(src))
    out, _, dropped = publish_checkpoint(str(src), str(tmp_path / 'rel'))
    assert 'meta.cfg (not declarative config text)' in dropped
    assert 'cfg' not in loader.safe_torch_load(out)['meta']


# ------------------------------------------------------ hash in name ----
def _published(tmp_path: Path, size: int) -> Path:
    """A checkpoint of more than ``size`` bytes named by its sha256."""
    buffer = io.BytesIO()
    torch.save(
        {
            'state_dict': {
                'w': torch.arange(size // 4 + 1, dtype=torch.float32)
            }
        }, buffer)
    data = buffer.getvalue()
    path = tmp_path / f'model-{hashlib.sha256(data).hexdigest()[:8]}.pth'
    path.write_bytes(data)
    return path


def test_hash_named_file_loads_when_intact(tmp_path):
    path = _published(tmp_path, 3 << 20)  # > 1 MiB: more than one chunk
    assert path.stat().st_size > (2 << 20)
    assert loader.safe_torch_load(str(path))['state_dict']['w'].numel() > 1


def test_hash_named_file_is_refused_when_a_late_byte_changes(tmp_path):
    """A flip past the first MiB (a hash of the first chunk only would miss
    it) is caught, in a tensor's bytes where unpickling alone would not."""
    path = _published(tmp_path, 3 << 20)
    data = bytearray(path.read_bytes())
    data[(2 << 20) + 7] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointFileError, match='corrupted or altered') \
            as info:
        loader.safe_torch_load(str(path))
    assert str(path) in str(info.value)


def test_hash_named_url_download_is_checked(tmp_path, torch_home):
    served = tmp_path / 'served'
    served.mkdir()
    path = _published(served, 1 << 10)
    data = bytearray(path.read_bytes())
    data[-30] ^= 0x01
    path.write_bytes(bytes(data))
    with serve_folder(served) as url:
        with pytest.raises(CheckpointFileError, match='corrupted'):
            loader.load_checkpoint_file(f'{url}/{path.name}')


def test_bit_flips_never_load_silently(tmp_path):
    """Of many single-bit flips of a published file, none loads as weights
    different from the original: each is refused with a clear error."""
    path = _published(tmp_path, 1 << 12)
    original = path.read_bytes()
    rng = random.Random(7)
    for _ in range(40):
        data = bytearray(original)
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointFileError):
            loader.safe_torch_load(str(path))


# ------------------------------------------------- broken files ----
def _legacy_tar(path: Path) -> None:
    with tarfile.open(path, 'w') as tar:
        for name in ('storages', 'tensors', 'pickle'):
            info = tarfile.TarInfo(name)
            payload = b'\x80\x02K\x00.'
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def _zip_slip(path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({'w': torch.ones(1)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(path, 'w') as dst:
        for info in src.infolist():
            dst.writestr('../' + info.filename, src.read(info.filename))


@pytest.mark.parametrize('make', ['legacy_tar', 'zip_slip', 'text', 'cut'])
def test_broken_files_give_one_clear_error(tmp_path, make):
    path = tmp_path / 'broken.pth'
    if make == 'legacy_tar':
        _legacy_tar(path)
    elif make == 'zip_slip':
        _zip_slip(path)
    elif make == 'text':
        path.write_text('epoch 5 was here\n' * 50)
    else:
        buffer = io.BytesIO()
        torch.save({'w': torch.randn(4096)}, buffer)
        path.write_bytes(buffer.getvalue()[:5000])
    with pytest.raises(CheckpointFileError) as info:
        loader.safe_torch_load(str(path))
    message = str(info.value)
    assert str(path) in message
    assert 'weights_only=False' not in message


def test_byte_fuzzed_files_give_one_clear_error(tmp_path):
    buffer = io.BytesIO()
    torch.save({
        'meta': {
            'epoch': 3
        },
        'state_dict': {
            'w': torch.ones(8)
        }
    }, buffer)
    original = buffer.getvalue()
    rng = random.Random(11)
    path = tmp_path / 'fuzzed.pth'
    outcomes = set()
    for _ in range(60):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            loader.safe_torch_load(str(path))
            outcomes.add('loaded')
        except (CheckpointFileError, UnsafeCheckpointError) as e:
            assert str(path) in str(e)
            outcomes.add(type(e).__name__)
    assert 'CheckpointFileError' in outcomes


def test_files_are_written_with_the_umask(tmp_path):
    from mmrsa.fileio.atomic import write_bytes_atomic
    old = os.umask(0o022)
    try:
        write_bytes_atomic(str(tmp_path / 'a.pth'), b'x')
        os.umask(0o077)
        write_bytes_atomic(str(tmp_path / 'b.pth'), b'x')
    finally:
        os.umask(old)
    assert (tmp_path / 'a.pth').stat().st_mode & 0o777 == 0o644
    assert (tmp_path / 'b.pth').stat().st_mode & 0o777 == 0o600
