# Copyright (c) mmrsa contributors. All rights reserved.
"""mmrsa.utils.publish on MMEngine-like checkpoints made in tmp_path."""
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from mmrsa.fileio.checkpoint import CheckpointFileError, UnsafeCheckpointError
from mmrsa.utils.publish import publish_checkpoint


class _Payload:
    """Unpickling this runs ``os.makedirs(marker)``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker, ))


def training_checkpoint(path: Path, **runtime_info) -> Path:
    """What MMEngine's runner saves (``runtime_info`` goes into the message
    hub)."""
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
            'runtime_info': runtime_info,
        },
    }
    torch.save(checkpoint, path)
    return path


def test_keeps_tensors_and_plain_metadata(tmp_path):
    src = training_checkpoint(tmp_path / 'epoch_50.pth')
    prefix = tmp_path / 'zoo' / 'rsanet_r50_8x1_ssv1'
    out_path, sha256, dropped = publish_checkpoint(str(src), str(prefix))

    files = list((tmp_path / 'zoo').iterdir())
    assert [str(f) for f in files] == [out_path]
    match = re.fullmatch(r'rsanet_r50_8x1_ssv1-([0-9a-f]{8})\.pth',
                         files[0].name)
    assert match, files[0].name
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == sha256
    assert sha256.startswith(match.group(1))
    assert {
        'optimizer', 'message_hub', 'param_schedulers',
        'meta.hook_state (HistoryBuffer)'
    } == set(dropped)

    published = torch.load(out_path, weights_only=True)
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
    src = training_checkpoint(tmp_path / 'epoch_50.pth')
    first, sha_a, _ = publish_checkpoint(str(src), str(tmp_path / 'a' / 'm'))
    second, sha_b, _ = publish_checkpoint(
        str(src), str(tmp_path / 'b' / 'm.pth'))
    assert sha_a == sha_b
    assert Path(first).name == Path(second).name == f'm-{sha_a[:8]}.pth'
    assert Path(first).read_bytes() == Path(second).read_bytes()


def test_bare_state_dict_and_wrapped_keys(tmp_path):
    src = tmp_path / 'bare.pth'
    torch.save({'module.fc.weight': torch.ones(2, 2)}, src)
    path, _, dropped = publish_checkpoint(str(src), str(tmp_path / 'bare'))
    published = torch.load(path, weights_only=True)
    assert list(published['state_dict']) == ['fc.weight']
    assert published['meta'] == {} and dropped == []


@pytest.mark.parametrize('content', [
    {
        'state_dict': {
            'fc.weight': 'not a tensor'
        }
    },
    {
        'epoch': 3
    },
    [1, 2, 3],
])
def test_refuses_checkpoints_without_tensors(tmp_path, content):
    src = tmp_path / 'bad.pth'
    torch.save(content, src)
    with pytest.raises(CheckpointFileError, match='state_dict'):
        publish_checkpoint(str(src), str(tmp_path / 'out'))
    assert not list(tmp_path.glob('out*'))


def test_refuses_pickled_code_without_running_it(tmp_path):
    marker = tmp_path / 'payload_ran'
    src = training_checkpoint(
        tmp_path / 'epoch_50.pth', payload=_Payload(str(marker)))
    with pytest.raises(UnsafeCheckpointError, match='os.makedirs'):
        publish_checkpoint(str(src), str(tmp_path / 'out'))
    assert not marker.exists()
    assert not list(tmp_path.glob('out*'))


def test_refuses_to_overwrite_without_force(tmp_path):
    src = training_checkpoint(tmp_path / 'epoch_50.pth')
    first, _, _ = publish_checkpoint(str(src), str(tmp_path / 'm'))
    Path(first).write_bytes(b'keep me')
    with pytest.raises(FileExistsError, match='already exists; pass --force'):
        publish_checkpoint(str(src), str(tmp_path / 'm'))
    assert Path(first).read_bytes() == b'keep me'
    publish_checkpoint(str(src), str(tmp_path / 'm'), force=True)
    torch.load(first, map_location='cpu', weights_only=True)


def test_the_same_release_again_is_kept_not_rewritten(tmp_path):
    src = training_checkpoint(tmp_path / 'epoch_50.pth')
    first, sha256, _ = publish_checkpoint(str(src), str(tmp_path / 'm'))
    mtime = Path(first).stat().st_mtime_ns
    again, sha256_again, _ = publish_checkpoint(str(src), str(tmp_path / 'm'))
    assert (again, sha256_again) == (first, sha256)
    assert Path(first).stat().st_mtime_ns == mtime


def test_metafile_entry_is_mmaction2_model_index_yaml():
    import yaml

    from mmrsa.utils.publish import metafile_entry
    text = metafile_entry(
        'rsanet_r18_8x1_synthmotion',
        'configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py',
        '<URL or local path of m-1a2b3c4d.pth>',
        metadata={
            'Epochs': 8,
            'Results From': 'a run: 8 clips, seed 0',
            'Pretrained': 'None',
            'Note': 'yes'
        },
        results=[
            dict(
                Dataset='SynthMotion',
                Task='Action Recognition',
                Metrics={'Top 1 Accuracy': 97.25})
        ])
    assert text.startswith('  - Name: rsanet_r18_8x1_synthmotion\n')
    (model, ) = yaml.safe_load('Models:\n' + text)['Models']
    assert model == {
        'Name':
        'rsanet_r18_8x1_synthmotion',
        'Config':
        'configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py',
        'In Collection':
        'RSANet',
        'Metadata': {
            'Epochs': 8,
            'Results From': 'a run: 8 clips, seed 0',
            'Pretrained': 'None',
            'Note': 'yes'
        },
        'Results': [{
            'Dataset': 'SynthMotion',
            'Task': 'Action Recognition',
            'Metrics': {
                'Top 1 Accuracy': 97.25
            }
        }],
        'Weights':
        '<URL or local path of m-1a2b3c4d.pth>'
    }
