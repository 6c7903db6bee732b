# Copyright (c) mmrsa contributors. All rights reserved.
"""The full CPU demo (tools/demo_synthmotion.py with its defaults): minutes
long, so CI skips it; run it with ``pytest -m slow``."""
import importlib.util
import os.path as osp

import pytest

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))


@pytest.mark.slow
def test_full_demo_run(tmp_path):
    spec = importlib.util.spec_from_file_location(
        'mmrsa_demo_synthmotion',
        osp.join(ROOT, 'tools', 'demo_synthmotion.py'))
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    rows = driver.main([
        '--data-root',
        str(tmp_path / 'synthmotion'), '--work-dir',
        str(tmp_path / 'work')
    ])
    rsanet, tsn = rows
    assert rsanet['model'] == 'RSANet-R18' and tsn['model'] == 'TSN-R18'
    # RSA learns the motion classes, TSN cannot tell a motion from its
    # time reversal
    assert rsanet['top1'] >= 0.95
    assert rsanet['direction'] >= 0.95
    assert abs(tsn['direction'] - 0.5) <= 0.15
