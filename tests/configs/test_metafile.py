# Copyright (c) mmrsa contributors. All rights reserved.
"""configs/recognition/rsanet/metafile.yml: layout, paths and numbers.

``FLOPs`` and ``Parameters`` must be what ``tools/analysis_tools/get_flops.py``
counts (:mod:`mmrsa.analysis`, to the printed 2 decimals); the non-slow tests
count two models, ``-m slow`` counts every one. ``Paper FLOPs`` / ``Paper
Parameters`` must agree with the paper tables that ``get_flops.py
--paper-tables`` prints. ``MMAction2 FLOPs`` must be what MMAction2's own
``tools/analysis_tools/get_flops.py`` prints (batch norm counted, backbone
only). The two converted official checkpoints carry ``Converted From`` and
the authors' results; every other row with results says it is the paper's.
"""
import os.path as osp
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mmaction
from mmrsa import analysis as get_flops

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / 'configs' / 'recognition' / 'rsanet'
METAFILE = CONFIG_DIR / 'metafile.yml'
INDEX = yaml.safe_load(METAFILE.read_text())
MODELS = {m['Name']: m for m in INDEX['Models']}
FAST = ('rsanet_r18_8x1_synthmotion', 'rsanet_r50_8x1_ssv1')


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


# -- where the results come from: converted official checkpoints vs paper --
OFFICIAL_RAW = 'https://github.com/KimManjin/RSA/raw/master'
#: name -> (official run, top-1, top-5 of the authors' README)
CONVERTED = {
    'rsanet_r50_16x1_ssv1': ('RSA_R50_SSV1_16frames', 54.0, 81.1),
    'rsanet_r50_16x1_ssv2': ('RSA_R50_SSV2_16frames', 66.0, 89.9),
}


def test_converted_official_checkpoints():
    assert {n for n, m in MODELS.items() if 'Converted From' in m} == \
        set(CONVERTED)
    for name, (run, top1, top5) in CONVERTED.items():
        model = MODELS[name]
        assert model['Converted From'] == {
            'Weights':
            f'{OFFICIAL_RAW}/net_runs/{run}/resnet_rgb_model_best.pth.tar',
            'Code': 'https://github.com/KimManjin/RSA',
        }
        assert model['Training Log'] == f'{OFFICIAL_RAW}/logs/{run}.log'
        assert model['Metadata']['Results From'].startswith(
            'official checkpoint')
        assert model['Metadata']['Frames'] == 16
        (result, ) = model['Results']
        assert result['Metrics'] == {
            'Top 1 Accuracy': top1,
            'Top 5 Accuracy': top5
        }
        # the authors' file itself: mmrsa's loader converts it in memory,
        # and `mim download` needs a model-level Weights
        assert model['Weights'] == model['Converted From']['Weights']


def test_paper_only_rows_say_so():
    for name, model in MODELS.items():
        if name in CONVERTED or 'Results' not in model:
            continue
        source = model['Metadata'].get('Results From', '')
        assert re.fullmatch(r'paper, (main|supp\.) Table \w+; no checkpoint',
                            source), (name, source)
        assert 'Weights' not in model


# -- the same models counted by MMAction2's own get_flops.py (BN counted,
# -- backbone only); a subprocess, as a user runs it
MMACTION2_FLOPS = [
    n for n in MODELS if 'MMAction2 FLOPs' in MODELS[n]['Metadata']
]


def _mmaction2_flops(name: str) -> str:
    """``Flops:`` of MMAction2's get_flops.py for one clip, as 'X.XXG'."""
    script = osp.join(
        osp.dirname(mmaction.__file__), '.mim', 'tools', 'analysis_tools',
        'get_flops.py')
    model = MODELS[name]
    width, height = (
        int(v) for v in model['Metadata']['Resolution'].split('x'))
    out = subprocess.run([
        sys.executable, script, model['Config'], '--shape',
        str(model['Metadata']['Frames']), '3',
        str(height),
        str(width)
    ],
                         cwd=REPO_ROOT,
                         capture_output=True,
                         text=True,
                         check=True,
                         timeout=900).stdout
    flops = float(re.search(r'^Flops: ([\d.]+)G$', out, re.M).group(1))
    return f'{flops:.2f}G'


def test_mmaction2_flops_are_listed_for_the_main_recipes():
    assert 'rsanet_r50_8x1_ssv1' in MMACTION2_FLOPS
    assert 'rsanet_r50_16x1_ssv1' in MMACTION2_FLOPS
    for name in MMACTION2_FLOPS:
        meta = MODELS[name]['Metadata']
        assert re.fullmatch(r'\d+\.\d\dG', meta['MMAction2 FLOPs'])
        # batch norm adds FLOPs, the classifier (not traced) is tiny
        assert float(meta['MMAction2 FLOPs'][:-1]) > \
            float(meta['FLOPs'][:-1])


def test_mmaction2_flops_of_the_demo_model():
    name = 'rsanet_r18_8x1_synthmotion'
    expected = MODELS[name]['Metadata']['MMAction2 FLOPs']
    assert _mmaction2_flops(name) == expected


@pytest.mark.slow
@pytest.mark.parametrize(
    'name', [n for n in MMACTION2_FLOPS if n != 'rsanet_r18_8x1_synthmotion'])
def test_mmaction2_flops_of_every_main_recipe(name):
    expected = MODELS[name]['Metadata']['MMAction2 FLOPs']
    assert _mmaction2_flops(name) == expected
