# Copyright (c) mmrsa contributors. All rights reserved.
"""The end of demo/synthmotion_demo.py (``bash tools/run.sh demo``): the
trained RSANet is released as a model-zoo file, and what is printed about it
(file, sha256, metafile entry, command) is right and works. Shrunk to one
epoch on 8 clips."""
import hashlib
import json
import re
import shlex
from pathlib import Path

import torch
import yaml
from run_helpers import REPO_ROOT, run_tool

SCRIPT = REPO_ROOT / 'demo' / 'synthmotion_demo.py'
CONFIG = 'configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py'
SMALL_LOADERS = ['train_dataloader.batch_size=4'] + [
    f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
    for key in ('num_workers=0', 'persistent_workers=False')
]


def test_demo_ends_with_a_release_that_loads(tmp_path):
    work_dir = tmp_path / 'work'
    data_root = tmp_path / 'data'
    result = run_tool([
        SCRIPT, '--models', 'rsanet', '--data-root', data_root, '--work-dir',
        work_dir, '--num-train', '8', '--num-val', '4', '--max-epochs', '1',
        '--cfg-options', *SMALL_LOADERS
    ],
                      cwd=REPO_ROOT,
                      timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout[result.stdout.index('=== release of RSANet-R18'):]

    released = Path(re.search(r'^released file: (.+)$', out, re.M)[1])
    sha256 = re.search(r'^sha256: ([0-9a-f]{64})$', out, re.M)[1]
    assert released.parent == work_dir / 'release'
    assert hashlib.sha256(released.read_bytes()).hexdigest() == sha256
    assert released.name == f'rsanet_r18_8x1_synthmotion-{sha256[:8]}.pth'
    # the trained weights, nothing but weights and plain metadata
    ckpt = torch.load(released, map_location='cpu', weights_only=True)
    assert set(ckpt) == {'meta', 'state_dict'}
    trained = torch.load(
        work_dir / 'rsanet_r18_8x1_synthmotion.pth',
        map_location='cpu',
        weights_only=True)['state_dict']
    assert ckpt['state_dict'].keys() == trained.keys()
    assert all(
        torch.equal(ckpt['state_dict'][k], v) for k, v in trained.items())

    # the metafile entry: MMAction2's format, Weights left to the user
    start = out.index('  - Name: ')
    end = out.index('load it (from the repository root):')
    (model, ) = yaml.safe_load('Models:\n' + out[start:end])['Models']
    assert model['Name'] == 'rsanet_r18_8x1_synthmotion'
    assert model['Config'] == CONFIG
    assert model['In Collection'] == 'RSANet'
    assert model['Weights'] == f'<URL or local path of {released.name}>'
    assert model['Metadata']['Epochs'] == 1
    (row, ) = json.loads((work_dir / 'results.json').read_text())['rows']
    (metrics, ) = [r['Metrics'] for r in model['Results']]
    assert metrics['Top 1 Accuracy'] == round(100 * row['top1'], 2)

    # the printed demo command classifies a clip with the released file
    commands = [line.strip() for line in out[end:].splitlines()[1:]]
    demo = shlex.split(
        next(c for c in commands if c.startswith('python demo/demo.py')))
    assert str(released) in demo
    reloaded = run_tool(demo[1:], cwd=REPO_ROOT)
    assert reloaded.returncode == 0, reloaded.stderr[-3000:]
    assert 'top-5 labels for' in reloaded.stdout
    assert any(
        c.startswith(f'python tools/test.py {CONFIG} {released}')
        for c in commands)
