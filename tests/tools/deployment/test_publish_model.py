# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/deployment/publish_model.py, run as a command."""
import hashlib
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[3]
TOOL = REPO_ROOT / 'tools' / 'deployment' / 'publish_model.py'


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)


def test_publishes_and_prints_name_and_sha256(tmp_path):
    src = tmp_path / 'epoch_3.pth'
    torch.save(
        {
            'meta': {
                'epoch': 3
            },
            'optimizer': {
                'state': {}
            },
            'state_dict': {
                'fc.weight': torch.ones(2, 2)
            }
        }, src)
    result = run(str(src), str(tmp_path / 'zoo' / 'model'))
    assert result.returncode == 0, result.stderr
    (published, ) = (tmp_path / 'zoo').iterdir()
    sha256 = hashlib.sha256(published.read_bytes()).hexdigest()
    assert published.name == f'model-{sha256[:8]}.pth'
    assert f'{published}\nsha256 {sha256}' in result.stdout
    assert 'dropped: optimizer' in result.stdout
    # an existing output is kept unless --force
    published.write_bytes(b'keep me')
    result = run(str(src), str(tmp_path / 'zoo' / 'model'))
    assert result.returncode == 1
    assert 'already exists; pass --force' in result.stderr
    assert published.read_bytes() == b'keep me'


def test_other_objects_need_trust_pickle(tmp_path):
    """A benign object a safe load does not know is refused, and admitted
    with --trust-pickle (and dropped from the published metadata)."""
    src = tmp_path / 'epoch_3.pth'
    torch.save(
        {
            'meta': {
                'ratio': Fraction(1, 3),
                'epoch': 3
            },
            'state_dict': {
                'fc.weight': torch.ones(2, 2)
            }
        }, src)
    result = run(str(src), str(tmp_path / 'out'))
    assert result.returncode == 1
    assert 'fractions.Fraction' in result.stderr
    assert '--trust-pickle' in result.stderr
    result = run(str(src), str(tmp_path / 'out'), '--trust-pickle')
    assert result.returncode == 0, result.stderr
    assert 'meta.ratio (Fraction)' in result.stdout
    (published, ) = tmp_path.glob('out-*.pth')
    assert torch.load(published, weights_only=True)['meta'] == {'epoch': 3}


def test_bad_input_files_are_named_without_a_traceback(tmp_path):
    """Empty, truncated and not-a-checkpoint inputs: one ``error:`` line
    that names the file and says what is wrong, exit 1, nothing written."""
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'fc.weight': torch.ones(64, 64)}}, good)
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:1000])
    no_weights = tmp_path / 'list.pth'
    torch.save([1, 2, 3], no_weights)
    for path, what in ((empty, 'is empty (0 bytes)'),
                       (truncated, 'is truncated or not a checkpoint'),
                       (no_weights, 'has no state_dict of tensors')):
        result = run(str(path), str(tmp_path / 'zoo' / 'model'))
        assert result.returncode == 1, (path, result.stdout)
        assert 'Traceback' not in result.stderr, result.stderr
        (line, ) = [
            x for x in result.stderr.splitlines() if x.startswith('error:')
        ]
        assert str(path) in line and what in line, line
        assert line.count(str(path)) == 1, line
    assert not (tmp_path / 'zoo').exists()
