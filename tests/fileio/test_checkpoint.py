# Copyright (c) mmrsa contributors. All rights reserved.
"""A checkpoint with a malicious pickle payload runs no code through any
loading path (MMEngine's loader, ``load_from``/``--resume``,
``tools/test.py``, ``demo/demo.py``, ``init_recognizer``, a backbone's
``pretrained``), local or remote (``http://``, ``torchvision://``, a file
planted in the torch hub cache), and the refusal says why and how to opt in
for a trusted file. Bad files get a message naming them."""
import argparse
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from run_helpers import DEMO_CONFIG, REPO_ROOT, run_tool, serve_folder

import mmrsa  # noqa: F401
from mmrsa.fileio import checkpoint as safe_loading
from mmrsa.fileio.checkpoint import (CheckpointDownloadError,
                                     CheckpointFileError,
                                     UnsafeCheckpointError,
                                     load_checkpoint_file, trust_checkpoint)


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
        args + ['--work-dir', tmp_path / 'work_dir', '--cfg-options'] + [
            f'{split}_dataloader.{key}' for split in ('train', 'test')
            for key in ('num_workers=0', 'persistent_workers=False')
        ],
        cwd=synth_dir)
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    _assert_refusal(result.stderr, path)
    assert not marker.exists()


def test_demo_refuses(evil, synth_dir):
    path, marker = evil
    video = synth_dir / 'data' / 'synthmotion' / 'videos' / 'val_00000.mp4'
    result = run_tool(
        [REPO_ROOT / 'demo' / 'demo.py', video, DEMO_CONFIG, path],
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
    loaded = safe_loading.safe_torch_load(str(path))
    assert loaded['message_hub']['log_scalars']['train/loss'].mean() == 2.5
    assert loaded['meta']['seed'] == 0


def test_import_mmrsa_does_not_widen_torch_allow_list(tmp_path):
    """The allow-list holds only inside mmrsa's loader: after ``import
    mmrsa`` a plain torch.load(weights_only=True) is as strict as before."""
    path = tmp_path / 'numpy_meta.pth'
    torch.save(dict(meta=dict(seed=np.int64(3))), path)
    names = {
        f'{getattr(g, "__module__", "")}.{getattr(g, "__name__", "")}'
        for g in torch.serialization.get_safe_globals()
    }
    assert not any(n.startswith(('numpy', 'mmengine')) for n in names)
    with pytest.raises(pickle.UnpicklingError, match='Weights only'):
        torch.load(path, weights_only=True)
    assert safe_loading.safe_torch_load(str(path))['meta']['seed'] == 3


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
    torch.save({
        'state_dict': model.state_dict(),
        'meta': {
            'epoch': 2
        }
    }, tmp_path / 'good.pth')
    other = torch.nn.Linear(3, 2)
    with serve_folder(tmp_path) as base:
        load_checkpoint(other, f'{base}/good.pth', map_location='cpu')
    assert torch.equal(other.weight, model.weight)


def test_planted_hub_cache_file_is_refused(evil, torch_home, monkeypatch):
    """A file already in the download cache is loaded without network, and
    safely: the URL is never fetched, the payload never runs. Its name
    carries a sha256 prefix, so the hash check refuses it first; without
    that check the unpickler still refuses it."""
    path, marker = evil
    url = safe_loading._torchvision_urls()['resnet50']
    cache = torch_home / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    (cache / url.rsplit('/', 1)[1]).write_bytes(path.read_bytes())
    from mmengine.runner.checkpoint import _load_checkpoint
    with pytest.raises(CheckpointFileError, match='corrupted or altered'):
        _load_checkpoint('torchvision://resnet50', map_location='cpu')
    monkeypatch.setattr(safe_loading, 'check_file_hash', lambda *a: None)
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint('torchvision://resnet50', map_location='cpu')
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint(url)
    assert not marker.exists()


def test_torchvision_pretrained_offline_says_what_to_do(
        torch_home, monkeypatch):
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


# ------------------------------------------------------ the allow-list ----


def _runner_like_checkpoint(path) -> None:
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('mmrsa_test_allow_list')
    hub.update_scalar('train/loss', 2.0)
    hub.update_scalar('val/acc', np.float64(0.5))
    hub.update_info('iter', 3)
    torch.save(
        dict(
            meta=dict(epoch=1, seed=np.int64(3), shape=np.array([1, 2])),
            state_dict={'w': torch.ones(2)},
            message_hub=hub.state_dict()), path)


def test_runner_checkpoint_loads_through_the_loader(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    _runner_like_checkpoint(path)
    ckpt = safe_loading.safe_torch_load(str(path))
    assert ckpt['meta']['seed'] == 3
    assert ckpt['meta']['shape'].tolist() == [1, 2]
    buffer = ckpt['message_hub']['log_scalars']['train/loss']
    assert buffer.mean() == 2.0 and buffer.statistics('current') == 2.0


class _GetattrPayload:

    def __init__(self, target, name):
        self.target, self.name = target, name

    def __reduce__(self):
        return (getattr, (self.target, self.name))


@pytest.mark.parametrize('target, name', [
    ('HistoryBuffer', '__init__'),
    ('HistoryBuffer', '_set_default_statistics'),
    ('ndarray', 'tofile'),
])
def test_getattr_is_allowed_only_for_history_buffer_statistics(
        tmp_path, target, name):
    from mmengine.logging import HistoryBuffer
    target = dict(HistoryBuffer=HistoryBuffer, ndarray=np.ndarray)[target]
    path = tmp_path / 'payload.pth'
    torch.save({'x': _GetattrPayload(target, name)}, path)
    with pytest.raises(safe_loading.UnsafeCheckpointError, match='getattr'):
        safe_loading.safe_torch_load(str(path))
    torch.save({'x': _GetattrPayload(HistoryBuffer, 'mean')}, path)
    assert safe_loading.safe_torch_load(str(path))['x'] is HistoryBuffer.mean


@pytest.mark.parametrize('dtype', ['O', 'U3', 'S2', 'V4', 'i4,f4'])
def test_non_numeric_numpy_data_is_refused(tmp_path, dtype):
    """Only numeric numpy data: an object (or string, void, structured)
    dtype is refused in checkpoints and score files alike."""
    path = tmp_path / 'ckpt.pth'
    value = np.zeros(2, dtype=dtype)
    torch.save({'meta': {'x': value}}, path)
    with pytest.raises(safe_loading.UnsafeCheckpointError):
        safe_loading.safe_torch_load(str(path))
    dump = tmp_path / 'scores.pkl'
    dump.write_bytes(pickle.dumps([{'pred_score': value}]))
    with pytest.raises(safe_loading.UnsafeCheckpointError):
        safe_loading.load_score_file(str(dump))


def _object_dtype_attack() -> bytes:
    """A pickle of allowed numpy globals only that builds an object array
    from raw bytes (an ObjectDType whose state clears its object flags):
    touching the element of such an array dereferences attacker bytes."""
    import numpy as np
    try:
        from numpy._core import multiarray
    except ImportError:
        from numpy.core import multiarray

    class Dtype:

        def __reduce__(self):
            # dtype('O8') with a state whose flags are 0 (no object flags)
            return (np.dtype, ('O8', False, True), (3, '|', None, None, None,
                                                    -1, -1, 0))

    class Array:

        def __reduce__(self):
            return (multiarray._reconstruct, (np.ndarray, (0, ), b'b'),
                    (1, (1, ), Dtype(), False, b'\x41' * 8))

    return pickle.dumps({'meta': {'x': Array()}}, protocol=2)


def test_object_dtype_attack_is_refused_without_crashing(tmp_path):
    """Run in a child: a crash would be exit 139, a refusal exit 0."""
    import subprocess
    import sys
    dump = tmp_path / 'attack.pkl'
    dump.write_bytes(_object_dtype_attack())
    ckpt = tmp_path / 'attack.pth'
    payload = _object_dtype_attack()
    # the same object graph inside a torch zip checkpoint
    import io
    import zipfile
    buffer = io.BytesIO()
    torch.save({'meta': {}}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(ckpt, 'w', zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith('/data.pkl'):
                data = payload
            dst.writestr(info, data)
    code = ('import sys, mmrsa\n'
            'from mmrsa.fileio import checkpoint as c\n'
            'for load in (c.load_score_file, c.safe_torch_load):\n'
            '    path = sys.argv[1 if load is c.load_score_file else 2]\n'
            '    try:\n'
            '        out = load(path)\n'
            '    except c.UnsafeCheckpointError as e:\n'
            '        print("refused", path)\n'
            '        continue\n'
            '    x = out["meta"]["x"]\n'
            '    print("loaded", repr(x[0]))\n')
    result = subprocess.run(
        [sys.executable, '-c', code,
         str(dump), str(ckpt)],
        capture_output=True,
        text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count('refused') == 2, result.stdout
