# Copyright (c) mmrsa contributors. All rights reserved.
"""demo/synthmotion_demo.py (what ``bash tools/run.sh demo`` runs), run as a
command: shrunk to a few iterations here; the full CPU demo with its
defaults takes minutes, so CI skips it (``pytest -m slow`` runs it)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / 'demo' / 'synthmotion_demo.py'

#: Batches of 4 and no data-loading processes.
SMALL_LOADERS = ['train_dataloader.batch_size=4'] + [
    f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
    for key in ('num_workers=0', 'persistent_workers=False')
]


def run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=timeout)


def test_demo_end_to_end(tmp_path):
    """The one-command job, shrunk: generates the set, trains and tests
    RSANet and TSN, prints the table, exports weights that load with
    weights_only=True; a second run finds the data."""
    data_root = str(tmp_path / 'data')
    work_dir = tmp_path / 'work'
    small = ('--data-root', data_root, '--work-dir', str(work_dir),
             '--num-train', '8', '--num-val', '10', '--max-epochs', '1')
    result = run(*small, '--cfg-options', *SMALL_LOADERS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '| RSANet-R18 |' in result.stdout
    assert '| TSN-R18 |' in result.stdout
    rows = json.loads((work_dir / 'results.json').read_text())['rows']
    assert [r['model'] for r in rows] == ['RSANet-R18', 'TSN-R18']
    for r in rows:
        assert r['num_clips'] == 10
        for key in ('top1', 'top1_pairs', 'direction'):
            assert 0 <= r[key] <= 1
        assert r['params_m'] > 1
    weights = work_dir / 'rsanet_r18_8x1_synthmotion.pth'
    ckpt = torch.load(weights, map_location='cpu', weights_only=True)
    assert 'backbone.conv1.conv.weight' in ckpt['state_dict']

    result = run(*small, '--models', 'tsn', '--cfg-options', *SMALL_LOADERS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'using SynthMotion in' in result.stdout


def test_demo_keeps_other_data(tmp_path):
    data_root = tmp_path / 'data'
    data_root.mkdir()
    (data_root / 'notes.txt').write_text('mine')
    result = run('--data-root', str(data_root), '--work-dir',
                 str(tmp_path / 'work'))
    assert result.returncode == 1
    assert 'pass --force' in result.stderr
    assert (data_root / 'notes.txt').read_text() == 'mine'


@pytest.mark.slow
def test_full_demo_run(tmp_path):
    """RSA learns the motion classes; TSN cannot tell a motion from its time
    reversal."""
    work_dir = tmp_path / 'work'
    result = run(
        '--data-root',
        str(tmp_path / 'synthmotion'),
        '--work-dir',
        str(work_dir),
        timeout=3 * 3600)
    assert result.returncode == 0, result.stderr[-3000:]
    rsanet, tsn = json.loads((work_dir / 'results.json').read_text())['rows']
    assert rsanet['model'] == 'RSANet-R18' and tsn['model'] == 'TSN-R18'
    assert rsanet['top1'] >= 0.95
    assert rsanet['direction'] >= 0.95
    assert abs(tsn['direction'] - 0.5) <= 0.15
