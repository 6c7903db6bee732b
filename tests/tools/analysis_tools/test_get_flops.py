# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/analysis_tools/get_flops.py, run as a command."""
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
TOOL = REPO_ROOT / 'tools' / 'analysis_tools' / 'get_flops.py'
SMALL = 'configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py'


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), *args, '--threads', '1'],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600)


def test_config_counts_one_clip_of_its_test_input():
    result = run(SMALL, '--table', '2')
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'one clip of 8 x 3 x 32 x 32' in out
    assert 'FLOPs       0.25 G per clip' in out
    assert 'params      8.75 M' in out
    assert 'test views  1 clip(s) x 1 crop(s)' in out
    assert 'backbone.layer2' in out and 'cls_head' in out  # --table


def test_json_cache_and_shapes(tmp_path):
    cache = tmp_path / 'flops.json'
    result = run(SMALL, '--json', '--cache', str(cache), '--shape', '112')
    assert result.returncode == 0, result.stderr
    counted = json.loads(result.stdout)
    assert counted['clip_shape'] == [8, 3, 112, 112]
    assert counted['mparams'] == 8.75
    assert len(json.loads(cache.read_text())['results']) == 1
    # the batch dimension is added by the tool
    result = run(SMALL, '--shape', '1', '8', '3', '224', '224')
    assert result.returncode == 2
    assert 'without the batch dimension' in result.stderr
    result = run()
    assert result.returncode == 2
    assert 'give a CONFIG or --paper-tables' in result.stderr
