# Copyright (c) mmrsa contributors. All rights reserved.
"""A checkpoint with a malicious pickle payload runs no code through any
loading path (MMEngine's loader, ``load_from``/``--resume``,
``tools/test.py``, ``demo/demo.py``, ``init_recognizer``, a backbone's
``pretrained``), local or remote (``http://``, ``torchvision://``, a file
planted in the torch hub cache), and the refusal says why and how to opt in
for a trusted file. Bad files get a message naming them."""
import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import mmrsa  # noqa: F401
from mmrsa.utils import checkpoint as safe_loading
from mmrsa.utils.checkpoint import (CheckpointDownloadError,
                                    CheckpointFileError, UnsafeCheckpointError,
                                    load_checkpoint_file, trust_checkpoint)
from run_helpers import DEMO_CONFIG, REPO_ROOT, run_tool, serve_folder


class _Payload:
    """Pickles as a call of ``os.system`` that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


@pytest.fixture
def evil(tmp_path):
    """(checkpoint with the payload next to real-looking weights, marker)."""
    marker = tmp_path / 'PAYLOAD_RAN'
    path = tmp_path / 'evil.pth'
    torch.save(
        dict(
            meta=dict(epoch=1, note=_Payload(marker)),
            state_dict=dict(w=torch.zeros(2))), path)
    assert not marker.exists()
    return path, marker


@pytest.fixture(autouse=True)
def no_trusted_files(monkeypatch):
    monkeypatch.setattr(safe_loading, '_trusted', set())
    # set (so that it is restored afterwards) to "nothing trusted"
    monkeypatch.setenv(safe_loading.TRUST_ENV, '')


def _assert_refusal(message: str, path: Path) -> None:
    assert 'refused to unpickle `posix.system`' in message or \
        'refused to unpickle `nt.system`' in message
    assert str(path) in message
    assert 'could run arbitrary code' in message
    assert '--trust-pickle' in message
    assert 'MMRSA_TRUSTED_CHECKPOINTS' in message


def test_mmengine_loader_refuses_and_explains(evil):
    from mmengine.runner.checkpoint import _load_checkpoint
    path, marker = evil
    with pytest.raises(UnsafeCheckpointError) as info:
        _load_checkpoint(str(path), map_location='cpu')
    _assert_refusal(str(info.value), path)
    assert not marker.exists()


def test_init_recognizer_refuses(evil):
    from mmaction.apis import init_recognizer
    path, marker = evil
    with pytest.raises(UnsafeCheckpointError):
        init_recognizer(DEMO_CONFIG, str(path), device='cpu')
    assert not marker.exists()


def test_backbone_pretrained_refuses(evil):
    from mmaction.registry import MODELS
    path, marker = evil
    backbone = MODELS.build(
        dict(
            type='RSANet',
            depth=18,
            rsa_blocks=((), (), (), ()),
            pretrained=str(path)))
    with pytest.raises(UnsafeCheckpointError):
        backbone.init_weights()
    assert not marker.exists()


@pytest.mark.parametrize('tool', ['test', 'train'])
def test_tools_refuse(evil, tool, synth_dir, tmp_path):
    path, marker = evil
    tools = REPO_ROOT / 'tools'
    if tool == 'test':  # tools/test.py CONFIG CHECKPOINT
        args = [tools / 'test.py', DEMO_CONFIG, path]
    else:  # tools/train.py CONFIG --resume CHECKPOINT
        args = [tools / 'train.py', DEMO_CONFIG, '--resume', path]
    result = run_tool(
        args + ['--work-dir', tmp_path / 'work_dir', '--cfg-options'] +
        [f'{split}_dataloader.{key}' for split in ('train', 'test')
         for key in ('num_workers=0', 'persistent_workers=False')],
        cwd=synth_dir)
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    _assert_refusal(result.stderr, path)
    assert not marker.exists()


def test_demo_refuses(evil, synth_dir):
    path, marker = evil
    video = synth_dir / 'data' / 'synthmotion' / 'videos' / 'val_00000.mp4'
    result = run_tool([REPO_ROOT / 'demo' / 'demo.py', video, DEMO_CONFIG, path],
                      cwd=synth_dir)
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    _assert_refusal(result.stderr, path)
    assert not marker.exists()


def _benign_untrusted(path: Path) -> None:
    """A file with an object the allowlist does not know, but harmless."""
    torch.save(dict(state_dict={}, meta=argparse.Namespace(epoch=3)), path)


def test_trusted_file_loads_and_only_that_file(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint
    trusted, other = tmp_path / 'trusted.pth', tmp_path / 'other.pth'
    _benign_untrusted(trusted)
    _benign_untrusted(other)
    with pytest.raises(UnsafeCheckpointError, match='argparse.Namespace'):
        _load_checkpoint(str(trusted))

    trust_checkpoint(str(trusted))
    assert _load_checkpoint(str(trusted))['meta'].epoch == 3
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint(str(other))
    # inherited by child processes (torchrun workers)
    assert str(trusted.resolve()) in os.environ[safe_loading.TRUST_ENV]


def test_trust_from_the_environment(tmp_path, monkeypatch):
    from mmengine.runner.checkpoint import _load_checkpoint
    path = tmp_path / 'trusted.pth'
    _benign_untrusted(path)
    monkeypatch.setenv(safe_loading.TRUST_ENV, str(path))
    assert _load_checkpoint(str(path))['meta'].epoch == 3


def test_only_local_files_can_be_trusted():
    with pytest.raises(ValueError, match='only local files'):
        trust_checkpoint('https://example.com/model.pth')


def test_a_run_own_checkpoint_loads_weights_only(tmp_path):
    """What MMEngine's Runner writes loads with weights_only=True (the
    resume tests load real ones)."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('mmrsa_test_safe_loading')
    hub.update_scalar('train/loss', 2.5)
    hub.update_scalar('val/acc', np.float64(0.5))
    path = tmp_path / 'own.pth'
    torch.save(
        dict(
            meta=dict(epoch=1, seed=np.int64(0)),
            state_dict={'w': torch.ones(1)},
            message_hub=hub.state_dict()), path)
    loaded = torch.load(path, weights_only=True)
    assert loaded['message_hub']['log_scalars']['train/loss'].mean() == 2.5


# ----------------------------------------------------- remote schemes ----


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    return home


def test_url_checkpoint_is_refused_and_runs_nothing(evil, torch_home):
    from mmengine.runner.checkpoint import _load_checkpoint
    path, marker = evil
    with serve_folder(path.parent) as base:
        url = f'{base}/{path.name}'
        with pytest.raises(UnsafeCheckpointError) as info:
            _load_checkpoint(url, map_location='cpu')
    message = str(info.value)
    assert url in message and 'A URL is never trusted' in message
    assert not marker.exists()
    # it was downloaded into the hub cache, and is refused from there too
    cached = torch_home / 'hub' / 'checkpoints' / path.name
    assert cached.is_file()
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint(url, map_location='cpu')
    assert not marker.exists()


def test_url_checkpoint_loads_weights(tmp_path, torch_home):
    from mmengine.runner import load_checkpoint
    model = torch.nn.Linear(3, 2)
    torch.save({'state_dict': model.state_dict(), 'meta': {'epoch': 2}},
               tmp_path / 'good.pth')
    other = torch.nn.Linear(3, 2)
    with serve_folder(tmp_path) as base:
        load_checkpoint(other, f'{base}/good.pth', map_location='cpu')
    assert torch.equal(other.weight, model.weight)


def test_planted_hub_cache_file_is_refused(evil, torch_home):
    """A file already in the download cache is loaded without network, and
    safely: the URL is never fetched, the payload never runs."""
    path, marker = evil
    url = safe_loading._torchvision_urls()['resnet50']
    cache = torch_home / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    (cache / url.rsplit('/', 1)[1]).write_bytes(path.read_bytes())
    from mmengine.runner.checkpoint import _load_checkpoint
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint('torchvision://resnet50', map_location='cpu')
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint(url)
    assert not marker.exists()


def test_torchvision_pretrained_offline_says_what_to_do(torch_home,
                                                        monkeypatch):
    """Without network, ``torchvision://resnet50`` names the URL and the
    cache file to put in place (no bare URLError)."""
    from urllib.error import URLError

    def offline(url, dst, *args, **kwargs):
        raise URLError('[Errno -3] Temporary failure in name resolution')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    from mmaction.registry import MODELS
    backbone = MODELS.build(
        dict(type='RSANet', depth=50, pretrained='torchvision://resnet50'))
    with pytest.raises(CheckpointDownloadError) as info:
        backbone.init_weights()
    message = str(info.value)
    url = safe_loading._torchvision_urls()['resnet50']
    assert url in message
    assert str(torch_home / 'hub' / 'checkpoints' /
               url.rsplit('/', 1)[1]) in message
    assert 'local path' in message


@pytest.mark.parametrize('content, expected', [
    (b'', 'is empty (0 bytes)'),
    (b'not a checkpoint at all\n', 'is not a PyTorch checkpoint'),
])
def test_bad_file_is_named(tmp_path, content, expected):
    path = tmp_path / 'bad.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointFileError) as info:
        load_checkpoint_file(str(path))
    assert str(path) in str(info.value) and expected in str(info.value)


def test_truncated_file_is_named(tmp_path):
    path = tmp_path / 'cut.pth'
    torch.save({'state_dict': {'w': torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(CheckpointFileError, match='truncated'):
        load_checkpoint_file(str(path))
