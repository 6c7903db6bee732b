# Copyright (c) mmrsa contributors. All rights reserved.
"""Tests of tools/train.py, tools/test.py and tools/demo_synthmotion.py:
a few iterations of the SynthMotion demo configs on a tiny generated set."""
import importlib.util
import json
import os.path as osp
import pickle

import pytest
import torch

import mmrsa  # noqa: F401  (compat fixes, registration)
from mmrsa.datasets.synthmotion import generate_synthmotion

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
CONFIGS = {
    'rsanet': 'configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py',
    'tsn': 'configs/recognition/rsanet/baselines/tsn_r18_8x1_synthmotion.py',
    'tsm': 'configs/recognition/rsanet/baselines/tsm_r18_8x1_synthmotion.py',
}


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'mmrsa_tool_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_tool = _load_tool('train')
test_tool = _load_tool('test')

#: Batches of 4 and no data-loading processes.
SMALL_LOADERS = ['train_dataloader.batch_size=4'] + [
    f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
    for key in ('num_workers=0', 'persistent_workers=False')
]


@pytest.fixture(scope='module')
def tiny_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('tiny_synthmotion'))
    generate_synthmotion(
        root, formats=('rawframes', 'videos'), num_train=8, num_val=4)
    return root


def _data_options(root):
    """--cfg-options that point a SynthMotion config at ``root`` and make
    its run a few iterations long."""
    opts = ['train_cfg.max_epochs=1', 'default_hooks.logger.interval=1']
    for loader, split in (('train', 'train'), ('val', 'val'),
                          ('test', 'val')):
        opts += [
            f'{loader}_dataloader.dataset.ann_file='
            f'{root}/synthmotion_{split}_list_rawframes.txt',
            f'{loader}_dataloader.dataset.data_prefix.img={root}/rawframes',
            f'{loader}_dataloader.batch_size=4',
            f'{loader}_dataloader.num_workers=0',
            f'{loader}_dataloader.persistent_workers=False',
        ]
    return opts


@pytest.mark.parametrize('model', ['rsanet', 'tsm'])
def test_train_then_test(model, tiny_set, tmp_path):
    config = osp.join(ROOT, CONFIGS[model])
    work_dir = str(tmp_path / 'work')
    train_tool.main(
        [config, '--work-dir', work_dir, '--cfg-options'] +
        _data_options(tiny_set))
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(checkpoint)

    dump = str(tmp_path / 'pred.pkl')
    metrics = test_tool.main([
        config, checkpoint, '--work-dir', work_dir, '--dump', dump,
        '--cfg-options'
    ] + _data_options(tiny_set))
    assert 0 <= metrics['acc/top1'] <= 1
    with open(dump, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 4
    assert predictions[0]['pred_score'].shape == (10, )


def test_train_resume(tiny_set, tmp_path):
    config = osp.join(ROOT, CONFIGS['tsn'])
    work_dir = str(tmp_path / 'work')
    opts = _data_options(tiny_set)
    train_tool.main([config, '--work-dir', work_dir, '--cfg-options'] + opts)
    # one more epoch, resumed from the checkpoint the first run wrote
    opts = [o for o in opts if not o.startswith('train_cfg.max_epochs')]
    train_tool.main([
        config, '--work-dir', work_dir, '--resume', '--no-validate',
        '--cfg-options', 'train_cfg.max_epochs=2'
    ] + opts)
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))


def test_train_args_map_onto_the_config(tmp_path):
    config = osp.join(ROOT, CONFIGS['rsanet'])
    args = train_tool.parse_args([
        config, '--amp', '--no-validate', '--seed', '5', '--deterministic',
        '--auto-scale-lr', '--resume', 'some.pth', '--cfg-options',
        'train_cfg.max_epochs=3'
    ])
    cfg = train_tool.build_config(args)
    assert cfg.work_dir == osp.join('work_dirs',
                                    'rsanet_r18_8x1_synthmotion')
    expected = ('AmpOptimWrapper'
                if torch.cuda.is_available() else 'CPUAutocastOptimWrapper')
    assert cfg.optim_wrapper.type == expected
    assert cfg.val_cfg is None and cfg.val_dataloader is None
    assert 'save_best' not in cfg.default_hooks.checkpoint
    assert cfg.randomness.seed == 5 and cfg.randomness.deterministic
    assert cfg.auto_scale_lr.enable
    assert cfg.resume and cfg.load_from == 'some.pth'
    assert cfg.train_cfg.max_epochs == 3


def test_cpu_amp_trains(tiny_set, tmp_path):
    if torch.cuda.is_available():
        pytest.skip('the CPU autocast path is for machines without a GPU')
    config = osp.join(ROOT, CONFIGS['rsanet'])
    work_dir = str(tmp_path / 'amp')
    train_tool.main(
        [config, '--work-dir', work_dir, '--amp', '--no-validate',
         '--cfg-options'] + _data_options(tiny_set))
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))


def test_test_tool_errors(tmp_path):
    config = osp.join(ROOT, CONFIGS['rsanet'])
    with pytest.raises(SystemExit, match='does not exist'):
        test_tool.main([config, str(tmp_path / 'missing.pth')])
    ckpt = tmp_path / 'x.pth'
    ckpt.write_bytes(b'')
    with pytest.raises(SystemExit, match='.pkl'):
        test_tool.main([config, str(ckpt), '--dump', 'out.json'])


def test_demo_driver_end_to_end(tmp_path, capsys):
    """The one-command job, shrunk to a few iterations: generates the set,
    trains and tests RSANet and TSN, prints the table, exports weights that
    load with weights_only=True."""
    driver = _load_tool('demo_synthmotion')
    data_root = str(tmp_path / 'data')
    work_dir = str(tmp_path / 'work')
    rows = driver.main([
        '--data-root', data_root, '--work-dir', work_dir, '--num-train',
        '8', '--num-val', '10', '--max-epochs', '1', '--cfg-options'
    ] + SMALL_LOADERS)
    out = capsys.readouterr().out
    assert [r['model'] for r in rows] == ['RSANet-R18', 'TSN-R18']
    for r in rows:
        assert r['num_clips'] == 10
        for key in ('top1', 'top1_pairs', 'direction'):
            assert 0 <= r[key] <= 1
        assert r['params_m'] > 1
    assert '| RSANet-R18 |' in out and '| TSN-R18 |' in out
    with open(osp.join(work_dir, 'results.json')) as f:
        assert len(json.load(f)['rows']) == 2
    weights = osp.join(work_dir, 'rsanet_r18_8x1_synthmotion.pth')
    ckpt = torch.load(weights, map_location='cpu', weights_only=True)
    assert 'backbone.conv1.conv.weight' in ckpt['state_dict']
    # a second run finds the data and does not regenerate it
    driver.main([
        '--data-root', data_root, '--work-dir', work_dir, '--num-train',
        '8', '--num-val', '10', '--models', 'tsn', '--max-epochs', '1',
        '--cfg-options'
    ] + SMALL_LOADERS)
    assert 'using SynthMotion in' in capsys.readouterr().out


def test_pair_metrics():
    driver = _load_tool('demo_synthmotion')
    import numpy as np

    def result(label, scores):
        return dict(pred_score=np.array(scores), gt_label=np.array([label]))

    eye = np.eye(10)
    # a perfect model
    perfect = [result(i, eye[i]) for i in range(10)]
    m = driver.pair_metrics(perfect)
    assert m == dict(top1=1.0, top1_pairs=1.0, direction=1.0, num_clips=10)
    # an order-blind model: both classes of a pair get the same score, and
    # the first wins the argmax
    blind = []
    for i in range(10):
        s = eye[i].copy()
        partner = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4, 6: 7, 7: 6}.get(i)
        if partner is not None:
            s[partner] = 1.0
        blind.append(result(i, s))
    m = driver.pair_metrics(blind)
    assert m['top1_pairs'] == 0.5 and m['direction'] == 0.5  # ties: half
    assert m['top1'] == 0.6


def test_demo_driver_keeps_other_data(tmp_path):
    driver = _load_tool('demo_synthmotion')
    data_root = tmp_path / 'data'
    data_root.mkdir()
    (data_root / 'notes.txt').write_text('mine')
    with pytest.raises(SystemExit, match='pass --force'):
        driver.main([
            '--data-root',
            str(data_root), '--work-dir',
            str(tmp_path / 'work')
        ])
    assert (data_root / 'notes.txt').read_text() == 'mine'
