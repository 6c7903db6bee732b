# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/publish_model.py on MMEngine-like checkpoints made in tmp_path."""
import hashlib
import importlib.util
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_tool():
    path = REPO_ROOT / 'tools' / 'publish_model.py'
    spec = importlib.util.spec_from_file_location('publish_model_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


class _Payload:
    """Unpickling this runs ``os.makedirs(marker)``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker, ))


def training_checkpoint(tmp_path: Path, marker: Path) -> Path:
    """What MMEngine's runner saves, plus an object that must not load."""
    history = HistoryBuffer()
    history.update(0.5)
    checkpoint = {
        'meta': {
            'epoch': 50,
            'iter': 12345,
            'seed': np.int64(7),
            'best_acc': np.float64(0.519),
            'cfg': "model = dict(type='Recognizer2D')",
            'dataset_meta': {
                'classes': ('push', 'pull')
            },
            'hook_state': history,
            'mmengine_version': '0.10.7',
        },
        'state_dict': {
            'backbone.conv1.conv.weight': torch.randn(4, 3, 3, 3),
            'backbone.conv1.bn.num_batches_tracked': torch.tensor(9),
            'cls_head.fc_cls.bias': torch.zeros(2),
        },
        'optimizer': {
            'state': {
                0: {
                    'momentum_buffer': torch.ones(4, 3, 3, 3)
                }
            },
            'param_groups': [{
                'lr': 0.02
            }]
        },
        'param_schedulers': [{
            'last_epoch': 50
        }],
        'message_hub': {
            'log_scalars': {
                'train/loss': history
            },
            'runtime_info': {
                'payload': _Payload(str(marker))
            },
        },
    }
    path = tmp_path / 'epoch_50.pth'
    torch.save(checkpoint, path)
    return path


def test_publish_keeps_tensors_and_plain_metadata(tmp_path, capsys):
    marker = tmp_path / 'payload_ran'
    src = training_checkpoint(tmp_path, marker)
    # an MMEngine checkpoint is refused by a safe load ...
    with pytest.raises(pickle.UnpicklingError):
        torch.load(src, weights_only=True)
    prefix = tmp_path / 'zoo' / 'rsanet_r50_8x1_ssv1'
    assert tool.main([str(src), str(prefix)]) == 0
    assert not marker.exists()  # ... and reading it ran nothing

    out = capsys.readouterr().out
    files = list((tmp_path / 'zoo').iterdir())
    assert len(files) == 1
    name = files[0].name
    match = re.fullmatch(r'rsanet_r50_8x1_ssv1-([0-9a-f]{8})\.pth', name)
    assert match, name
    sha256 = hashlib.sha256(files[0].read_bytes()).hexdigest()
    assert sha256.startswith(match.group(1))
    assert f'sha256 {sha256}' in out
    assert 'optimizer' in out and 'message_hub' in out  # reported dropped

    published = torch.load(files[0], weights_only=True)
    assert set(published) == {'meta', 'state_dict'}
    meta = published['meta']
    assert meta == {
        'epoch': 50,
        'iter': 12345,
        'seed': 7,
        'best_acc': pytest.approx(0.519),
        'cfg': "model = dict(type='Recognizer2D')",
        'dataset_meta': {
            'classes': ['push', 'pull']
        },
        'mmengine_version': '0.10.7',
    }
    assert type(meta['seed']) is int and type(meta['best_acc']) is float
    original = torch.load(src, weights_only=False)['state_dict']
    assert list(published['state_dict']) == list(original)
    for key, value in original.items():
        torch.testing.assert_close(published['state_dict'][key], value)


def test_same_input_gives_the_same_file_and_name(tmp_path):
    src = training_checkpoint(tmp_path, tmp_path / 'marker')
    first, sha_a, _ = tool.publish(str(src), str(tmp_path / 'a' / 'm'))
    second, sha_b, _ = tool.publish(str(src), str(tmp_path / 'b' / 'm.pth'))
    assert sha_a == sha_b
    assert Path(first).name == Path(second).name == f'm-{sha_a[:8]}.pth'


def test_bare_state_dict_and_wrapped_keys(tmp_path):
    src = tmp_path / 'bare.pth'
    torch.save({'module.fc.weight': torch.ones(2, 2)}, src)
    path, _, dropped = tool.publish(str(src), str(tmp_path / 'bare'))
    published = torch.load(path, weights_only=True)
    assert list(published['state_dict']) == ['fc.weight']
    assert published['meta'] == {} and dropped == []


@pytest.mark.parametrize('content', [
    {'state_dict': {'fc.weight': 'not a tensor'}},
    {'epoch': 3},
    [1, 2, 3],
])
def test_refuses_checkpoints_without_tensors(tmp_path, capsys, content):
    src = tmp_path / 'bad.pth'
    torch.save(content, src)
    assert tool.main([str(src), str(tmp_path / 'out')]) == 1
    assert 'error' in capsys.readouterr().err
    assert not list(tmp_path.glob('out*'))


def test_restricted_load_strict_refuses_what_it_would_not_build(tmp_path):
    path = tmp_path / 'payload.pkl'
    marker = tmp_path / 'marker'
    with open(path, 'wb') as f:
        pickle.dump([{'x': _Payload(str(marker))}], f)
    with pytest.raises(pickle.UnpicklingError, match='os.makedirs'):
        tool.restricted_load(str(path), strict=True)
    loaded = tool.restricted_load(str(path))
    assert isinstance(loaded[0]['x'], tool.Inert)
    assert not marker.exists()


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    src = training_checkpoint(tmp_path, tmp_path / 'marker')
    first, _, _ = tool.publish(str(src), str(tmp_path / 'm'))
    Path(first).write_bytes(b'keep me')
    assert tool.main([str(src), str(tmp_path / 'm')]) == 1
    assert 'already exists; pass --force' in capsys.readouterr().err
    assert Path(first).read_bytes() == b'keep me'
    assert tool.main([str(src), str(tmp_path / 'm'), '--force']) == 0
    torch.load(first, map_location='cpu', weights_only=True)
