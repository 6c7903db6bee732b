# Copyright (c) mmrsa contributors. All rights reserved.
"""mmrsa.analysis.compare and tools/analysis_tools/compare_transforms.py:
the Table 2 comparison on SynthMotion. By default a tiny run (2 models,
1 epoch, 8 + 4 clips); ``-m slow`` runs the full comparison."""
import json
import os.path as osp

import pytest
from mmengine.config import Config
from run_helpers import import_tool

from mmrsa.analysis import compare
from mmrsa.apis.model import load_config
from mmrsa.datasets.synthmotion import generate_synthmotion

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'compare_transforms.py')

#: batches of 4 and no data-loading processes
SMALL_LOADERS = [
    f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
    for key in ('batch_size=4', 'num_workers=0', 'persistent_workers=False')
]


def _tool():
    return import_tool('tools/analysis_tools/compare_transforms.py')


@pytest.mark.parametrize('model', list(compare.COMPARE_MODELS))
def test_every_model_has_its_config(model):
    cfg = load_config(compare.COMPARE_MODELS[model].config)
    shape = compare.clip_shape_of(cfg)
    if model == 'timesformer':
        assert shape == (1, 3, 8, 32, 32)
    else:
        assert shape == (8, 3, 32, 32)
        assert cfg.model.backbone.get('num_segments', 8) == 8


def test_transform_configs_put_one_layer_in_res2():
    for model in ('conv3d', 'conv2plus1d', 'sa', 'sa-content', 'sa-position',
                  'involution', 'rsa'):
        backbone = load_config(
            compare.COMPARE_MODELS[model].config).model['backbone']
        assert backbone.rsa_blocks == ((1, ), (), (), ())
        assert backbone.get('transform', 'rsa') == model
        assert tuple(backbone.rsa_cfg.kernel_size) == (5, 3, 3)


def test_set_max_epochs_and_data_root():
    cfg = load_config(compare.COMPARE_MODELS['tsn'].config)
    compare.set_max_epochs(cfg, 2)
    assert cfg.train_cfg.max_epochs == 2
    warmup, cosine = cfg.param_scheduler
    assert (warmup.begin, warmup.end) == (0, 1)
    assert (cosine.begin, cosine.end, cosine.T_max) == (1, 2, 1)
    compare.use_data_root(cfg, '/data/sm')
    assert cfg.test_dataloader.dataset.ann_file == \
        '/data/sm/synthmotion_val_list_rawframes.txt'
    assert cfg.train_dataloader.dataset.data_prefix.img == '/data/sm/rawframes'
    with pytest.raises(ValueError, match='max_epochs must be a positive'):
        compare.set_max_epochs(Config(dict(train_cfg=dict())), 0)


def test_report_only_refuses_other_settings(tmp_path):
    compare._save_results(
        str(tmp_path / 'results.json'),
        dict(settings=dict(data_root='/elsewhere', max_epochs=8), runs={}))
    with pytest.raises(ValueError, match='made with other settings'):
        compare.run_comparison(['tsn'],
                               work_dir=str(tmp_path),
                               data_root='/here',
                               train=False)


def test_unknown_model_and_no_seed(tmp_path):
    with pytest.raises(ValueError, match='unknown models'):
        compare.run_comparison(['i3d'], work_dir=str(tmp_path))
    with pytest.raises(ValueError, match='seeds must be one or more ints'):
        compare.run_comparison(['tsn'], [], work_dir=str(tmp_path))


def test_summary_mean_spread_and_failures():
    rows = [
        dict(
            model='a',
            label='A',
            seed=s,
            top1=t,
            direction=d,
            top1_pairs=t,
            params=10,
            flops=20,
            train_s=60,
            train_cpu_s=30,
            epochs=1) for s, t, d in ((0, .5, .6), (1, .7, .8))
    ] + [dict(model='b', label='B', seed=0, error='RuntimeError: x')]
    summary = compare.summarise(rows)
    a, b = summary
    assert a['seeds'] == [0, 1] and a['top1'] == pytest.approx(.6)
    assert a['top1_std'] == pytest.approx(0.1414, abs=1e-4)
    assert (a['direction_min'], a['direction_max']) == (.6, .8)
    assert b['errors'] == ['RuntimeError: x'] and 'top1' not in b
    text = compare.format_summary(summary)
    assert '| A | 60.0 ± 14.1 | 70.0 ± 14.1 |' in text
    assert '| B | failed: RuntimeError: x' in text


def test_tiny_comparison(tmp_path, capsys):
    """The command end to end: 2 models, 1 epoch, a tiny set; a second call
    reuses the finished runs."""
    data = str(tmp_path / 'data')
    generate_synthmotion(data, num_train=8, num_val=4)
    work = str(tmp_path / 'work')
    out = str(tmp_path / 'bars.png')
    argv = [
        '--models', 'tsn', 'involution', '--max-epochs', '1', '--data-root',
        data, '--work-dir', work, '--out', out, '--cfg-options'
    ] + SMALL_LOADERS
    assert _tool().main(argv) == 0
    printed = capsys.readouterr().out
    assert '| 2D conv (TSN-R18) |' in printed
    assert '| qP (involution) |' in printed
    with open(osp.join(work, 'results.json')) as f:
        results = json.load(f)
    runs = results['runs']
    assert sorted(runs) == ['involution/seed0', 'tsn/seed0']
    for row in runs.values():
        assert row['num_clips'] == 4 and row['epochs'] == 1
        assert 0 <= row['direction'] <= 1 and row['params'] > 1e6
        assert row['flops'] > 0 and row['train_s'] > 0
    assert runs['involution/seed0']['flops'] > runs['tsn/seed0']['flops'] / 2
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # finished runs are not trained again
    assert _tool().main(argv) == 0
    assert 'tsn/seed0: done before' in capsys.readouterr().out
    # --report-only trains nothing and leaves out what did not run
    report = [
        '--models', 'tsn', 'sa', '--max-epochs', '1', '--data-root', data,
        '--work-dir', work, '--out', out, '--report-only', '--cfg-options'
    ] + SMALL_LOADERS
    assert _tool().main(report) == 0
    printed = capsys.readouterr().out
    assert 'sa/seed0: not run yet, left out' in printed
    assert '| 2D conv (TSN-R18) |' in printed and 'σ(qK+qP)' not in printed
    with pytest.raises(SystemExit, match='no finished run'):
        _tool().main(report[:1] + ['sa'] + report[3:])


@pytest.mark.slow
def test_full_comparison(tmp_path):
    """Every model, the configs' 8 epochs, on a 2000 + 300 clip set (hours
    on a 2-core CPU)."""
    data = str(tmp_path / 'data')
    work = str(tmp_path / 'work')
    assert _tool().main(['--data-root', data, '--work-dir', work]) == 0
    with open(osp.join(work, 'results.json')) as f:
        runs = json.load(f)['runs']
    assert len(runs) == len(compare.COMPARE_MODELS)
    assert all('error' not in row for row in runs.values())
