# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/analysis_tools/ensemble_scores.py, run as a command."""
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[3]
TOOL = REPO_ROOT / 'tools' / 'analysis_tools' / 'ensemble_scores.py'


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)


def dump(path: Path, scores, labels) -> str:
    with open(path, 'wb') as f:
        pickle.dump([
            dict(pred_score=torch.tensor(s), gt_label=torch.tensor([label]))
            for s, label in zip(scores, labels)
        ], f)
    return str(path)


def test_fuses_prints_and_writes(tmp_path):
    labels = [0, 1]
    a = dump(tmp_path / 'a.pkl', [[.7, .3], [.6, .4]], labels)
    b = dump(tmp_path / 'b.pkl', [[.6, .4], [.1, .9]], labels)
    out = tmp_path / 'en.pkl'
    result = run(a, b, '--weights', '1', '3', '--out', str(out))
    assert result.returncode == 0, result.stderr
    rows = {
        line.split()[0]: line.split()[-3]
        for line in result.stdout.splitlines()[1:4]
    }
    assert rows == {a: '50.00', b: '100.00', 'ensemble': '100.00'}
    assert f'fused scores written to {out}' in result.stdout
    with open(out, 'rb') as f:
        fused = pickle.load(f)
    np.testing.assert_allclose(
        np.stack([f['pred_score'].numpy() for f in fused]),
        [[.625, .375], [.225, .775]],
        rtol=1e-6)

    result = run(a, '--softmax', 'never')
    assert result.returncode == 1
    assert 'error: give two or more dump files' in result.stderr


def test_out_never_overwrites_an_input_or_an_existing_file(tmp_path):
    a = dump(tmp_path / 'a.pkl', [[.7, .3], [.6, .4]], [0, 1])
    b = dump(tmp_path / 'b.pkl', [[.6, .4], [.1, .9]], [0, 1])
    inputs = {p: Path(p).read_bytes() for p in (a, b)}
    # an input, even spelled otherwise and with --force
    result = run(a, b, '--out', f'{tmp_path}/./b.pkl', '--force')
    assert result.returncode == 1
    assert 'is one of the input dumps' in result.stderr
    assert 'not even with --force' in result.stderr
    assert 'Traceback' not in result.stderr
    # a file that is not an input: kept without --force
    mine = tmp_path / 'mine.pkl'
    mine.write_bytes(b'my results')
    result = run(a, b, '--out', str(mine))
    assert result.returncode == 1
    assert f'--out {mine} already exists; pass --force' in result.stderr
    assert mine.read_bytes() == b'my results'
    assert {p: Path(p).read_bytes() for p in inputs} == inputs
    # and replaced with --force
    result = run(a, b, '--out', str(mine), '--force')
    assert result.returncode == 0, result.stderr
    with open(mine, 'rb') as f:
        assert len(pickle.load(f)) == 2
    assert {p: Path(p).read_bytes() for p in inputs} == inputs


@pytest.mark.parametrize('weights, message',
                         [(['nan', '1'], 'weights must be finite numbers'),
                          (['1', 'inf'], 'weights must be finite numbers')])
def test_refuses_weights_that_are_not_finite(tmp_path, weights, message):
    a = dump(tmp_path / 'a.pkl', [[.7, .3]], [0])
    b = dump(tmp_path / 'b.pkl', [[.6, .4]], [0])
    out = tmp_path / 'en.pkl'
    result = run(a, b, '--weights', *weights, '--out', str(out))
    assert result.returncode == 1
    assert f'error: {message}' in result.stderr
    assert 'Traceback' not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize('weights, message',
                         [([float('nan'), 1.], 'must be finite'),
                          ([1., float('-inf')], 'must be finite'),
                          ([-1., 2.], 'must not be negative, got -1 2'),
                          ([0., 0.], 'the weights are all zero (0 0)'),
                          ([1.], '1 weights (1) for 2 files'),
                          ([1., 1., 1.], '3 weights (1 1 1) for 2 files')])
def test_weight_checks(weights, message):
    from mmrsa.evaluation import EnsembleError, check_weights
    with pytest.raises(EnsembleError) as info:
        check_weights(weights, 2)
    assert message in str(info.value)
    assert 'one non-negative weight per file (2), not all zero' in str(
        info.value)
    assert check_weights([0, 2.5], 2) == [0., 2.5]
