# Copyright (c) mmrsa contributors. All rights reserved.
"""Tools never overwrite what is already there unless told ``--force``."""
import importlib.util
import json

import pytest

from reliability_utils import REPO_ROOT


def _generator():
    spec = importlib.util.spec_from_file_location(
        'mmrsa_generate_synthmotion',
        REPO_ROOT / 'tools' / 'data' / 'generate_synthmotion.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_refuses_to_overwrite_without_force(tmp_path):
    generate = _generator().main
    out = tmp_path / 'synthmotion'
    small = ['--out', str(out), '--num-train', '2', '--num-val', '1',
             '--quiet']
    generate(small)
    frame = out / 'rawframes' / 'train_00000' / '00001.jpg'
    before = {p: p.read_bytes() for p in (frame, out / 'meta.json')}

    with pytest.raises(SystemExit) as info:
        generate(small + ['--seed', '1'])
    assert 'already holds a SynthMotion set' in str(info.value.code)
    assert {p: p.read_bytes() for p in before} == before

    generate(small + ['--seed', '1', '--force'])
    assert json.loads((out / 'meta.json').read_text())['seed'] == 1
    assert frame.read_bytes() != before[frame]
