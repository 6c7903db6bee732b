# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/deployment/export_onnx.py and benchmark_onnx.py, run as a user
runs them."""
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[3]
EXPORT = REPO_ROOT / 'tools' / 'deployment' / 'export_onnx.py'
BENCHMARK = REPO_ROOT / 'tools' / 'deployment' / 'benchmark_onnx.py'
RSANET = REPO_ROOT / 'configs' / 'recognition' / 'rsanet'
DEMO_CONFIG = RSANET / 'rsanet_r18_8x1_synthmotion.py'
TSN_CONFIG = RSANET / 'baselines' / 'tsn_r18_8x1_synthmotion.py'
#: one RSA layer (stage 3, the CPU bmm path) on 4-frame clips
SMALL = [
    '--cfg-options', 'model.backbone.rsa_blocks=[[],[],[1],[]]',
    'model.backbone.num_segments=4'
]


def _run(*args, timeout=900):
    return subprocess.run([sys.executable, *map(str, args)],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=timeout)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """Weights of the small model saved as MMEngine saves them."""
    import mmrsa  # noqa: F401
    from mmrsa.deployment import build_clip_classifier
    torch.manual_seed(0)
    module, _ = build_clip_classifier(
        str(DEMO_CONFIG),
        cfg_options={
            'model.backbone.rsa_blocks': [[], [], [1], []],
            'model.backbone.num_segments': 4
        })
    path = tmp_path_factory.mktemp('weights') / 'small.pth'
    torch.save(dict(state_dict=module.recognizer.state_dict()), path)
    return path


def test_legacy_export_reports_the_difference(checkpoint, tmp_path):
    out = tmp_path / 'onnx' / 'small.onnx'
    result = _run(EXPORT, DEMO_CONFIG, checkpoint, '--out', out, '--legacy',
                  '--shape', 2, 4, 3, 32, 32, *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'legacy exporter, input 2x4x3x32x32, batch dynamic, 10 ' \
        'classes' in result.stdout
    diffs = [
        float(d) for d in re.findall(r'max abs diff (\S+)', result.stdout)
    ]
    assert len(diffs) == 2 and max(diffs) < 1e-4, result.stdout
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ['clip']
    assert [o.name for o in model.graph.output] == ['scores']


def test_wrong_checkpoint_is_refused(tmp_path):
    out = tmp_path / 'x.onnx'
    result = _run(EXPORT, DEMO_CONFIG, tmp_path / 'none.pth', '--out', out)
    assert result.returncode == 1
    assert 'checkpoint not found' in result.stderr
    # weights of another architecture (TSN-R18 has no RSA layer)
    import mmrsa  # noqa: F401
    from mmrsa.deployment import build_clip_classifier
    module, _ = build_clip_classifier(str(TSN_CONFIG))
    other = tmp_path / 'tsn.pth'
    torch.save(dict(state_dict=module.recognizer.state_dict()), other)
    result = _run(EXPORT, DEMO_CONFIG, other, '--out', out, '--legacy')
    assert result.returncode == 1, result.stdout[-2000:]
    assert 'error:' in result.stderr
    assert not out.exists()


def test_bad_arguments():
    result = _run(EXPORT, DEMO_CONFIG, 'w.pth', '--out', 'x.onnx', '--shape',
                  1, 2, 3)
    assert result.returncode == 2
    assert '--shape takes N T C H W' in result.stderr
    result = _run(EXPORT, DEMO_CONFIG, 'w.pth', '--out', 'x.onnx', '--legacy',
                  '--dynamo')
    assert result.returncode == 2
    assert 'not allowed with' in result.stderr


def test_benchmark_side_by_side(tmp_path):
    result = _run(BENCHMARK, DEMO_CONFIG, TSN_CONFIG, '--shape', 1, 8, 3, 32,
                  32, '--threads', 1, '--rounds', 2, '--warmup', 0,
                  '--work-dir', tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith('onnxruntime CPU, legacy exporter, 1 threads')
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {
        'rsanet_r18_8x1_synthmotion', 'tsn_r18_8x1_synthmotion'
    }
    assert rows['rsanet_r18_8x1_synthmotion'][1] == '1x8x3x32x32'
    assert rows['rsanet_r18_8x1_synthmotion'][4] == '1.00'  # the reference
    for row in rows.values():
        assert float(row[2]) > 0 and float(row[-1]) < 1e-4
    assert sorted(p.name for p in tmp_path.glob('*.onnx')) == [
        'rsanet_r18_8x1_synthmotion_legacy.onnx',
        'tsn_r18_8x1_synthmotion_legacy.onnx'
    ]


def test_benchmark_eager_ratio_and_malloc(tmp_path):
    result = _run(BENCHMARK, DEMO_CONFIG, TSN_CONFIG, '--shape', 1, 8, 3, 32,
                  32, '--threads', 1, '--rounds', 1, '--warmup', 0, '--eager',
                  '--malloc', 'keep')
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].endswith('malloc: keep freed memory')
    # eager with the native RSA products (built by the install) and without
    assert lines[1].startswith('native RSA products (eager): built')
    assert lines[2].split()[-7:] == [
        'eager', 'ratio', 'eager,', 'no', 'native', 'ratio', 'max|diff|'
    ]
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    # onnxruntime and eager times, each with its ratio to the first config
    rsa, tsn = rows['rsanet_r18_8x1_synthmotion'], rows[
        'tsn_r18_8x1_synthmotion']
    assert rsa[4] == rsa[7] == rsa[10] == '1.00'
    for median, ratio in ((5, 7), (8, 10)):
        assert float(tsn[ratio]) == pytest.approx(
            float(tsn[median]) / float(rsa[median]), abs=0.01)
