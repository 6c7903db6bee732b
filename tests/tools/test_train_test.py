# Copyright (c) mmrsa contributors. All rights reserved.
"""Tests of tools/train.py and tools/test.py (run as scripts) and of the
configs they build (:mod:`mmrsa.apis`): a few iterations of the SynthMotion
demo configs on a tiny generated set."""
import os.path as osp
import pickle

import pytest
import torch

import mmrsa  # noqa: F401  (compat fixes, registration)
from mmrsa.apis import ToolConfigError, build_test_config, build_train_config
from mmrsa.fileio.atomic import OverwriteRefusedError
from mmrsa.datasets.synthmotion import generate_synthmotion
from run_helpers import run_tool

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TRAIN = osp.join(ROOT, 'tools', 'train.py')
TEST = osp.join(ROOT, 'tools', 'test.py')


def _run(args, env=None):
    result = run_tool(args, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result
CONFIGS = {
    'rsanet': 'configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py',
    'tsn': 'configs/recognition/rsanet/baselines/tsn_r18_8x1_synthmotion.py',
    'tsm': 'configs/recognition/rsanet/baselines/tsm_r18_8x1_synthmotion.py',
}


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
    _run([TRAIN, config, '--work-dir', work_dir, '--cfg-options'] +
         _data_options(tiny_set))
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(checkpoint)

    dump = str(tmp_path / 'pred.pkl')
    result = _run([
        TEST, config, checkpoint, '--work-dir', work_dir, '--dump', dump,
        '--cfg-options'
    ] + _data_options(tiny_set))
    assert 'Epoch(test) [1/1]' in result.stdout + result.stderr
    # the dump exists now: a second test run refuses to overwrite it
    again = run_tool([TEST, config, checkpoint, '--dump', dump], cwd=ROOT)
    assert again.returncode == 1
    assert f'error: {dump} already exists; pass --force' in again.stderr
    with open(dump, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 4
    assert predictions[0]['pred_score'].shape == (10, )


def test_train_resume(tiny_set, tmp_path):
    config = osp.join(ROOT, CONFIGS['tsn'])
    work_dir = str(tmp_path / 'work')
    opts = _data_options(tiny_set)
    _run([TRAIN, config, '--work-dir', work_dir, '--cfg-options'] + opts)
    # one more epoch, resumed from the checkpoint the first run wrote
    opts = [o for o in opts if not o.startswith('train_cfg.max_epochs')]
    _run([
        TRAIN, config, '--work-dir', work_dir, '--resume', '--no-validate',
        '--cfg-options', 'train_cfg.max_epochs=2'
    ] + opts)
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))


@pytest.mark.parametrize('cuda, wrapper', [(False, 'CPUAutocastOptimWrapper'),
                                           (True, 'AmpOptimWrapper')])
def test_train_args_map_onto_the_config(tmp_path, cuda, wrapper):
    config = osp.join(ROOT, CONFIGS['rsanet'])
    resume = tmp_path / 'some.pth'
    resume.write_bytes(b'x')
    cfg = build_train_config(
        config,
        amp=True,
        no_validate=True,
        seed=5,
        deterministic=True,
        auto_scale_lr=True,
        resume=str(resume),
        cfg_options={'train_cfg.max_epochs': 3},
        cuda=cuda)
    assert cfg.work_dir == osp.join('work_dirs',
                                    'rsanet_r18_8x1_synthmotion')
    assert cfg.optim_wrapper.type == wrapper
    assert cfg.val_cfg is None and cfg.val_dataloader is None
    assert 'save_best' not in cfg.default_hooks.checkpoint
    assert cfg.randomness.seed == 5 and cfg.randomness.deterministic
    assert cfg.auto_scale_lr.enable
    assert cfg.resume and cfg.load_from == str(resume)
    assert cfg.train_cfg.max_epochs == 3
    with pytest.raises(ToolConfigError, match='no such file'):
        build_train_config(config, resume=str(tmp_path / 'missing.pth'))


def test_cpu_amp_trains(tiny_set, tmp_path):
    """The CPU autocast path, forced (no GPU visible) on any machine."""
    config = osp.join(ROOT, CONFIGS['rsanet'])
    work_dir = str(tmp_path / 'amp')
    result = _run([
        TRAIN, config, '--work-dir', work_dir, '--amp', '--no-validate',
        '--cfg-options'
    ] + _data_options(tiny_set), env={'CUDA_VISIBLE_DEVICES': ''})
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    assert 'CPUAutocastOptimWrapper' in result.stdout + result.stderr


def test_test_config_errors(tmp_path):
    config = osp.join(ROOT, CONFIGS['rsanet'])
    with pytest.raises(ToolConfigError, match='does not exist'):
        build_test_config(config, str(tmp_path / 'missing.pth'))
    ckpt = tmp_path / 'x.pth'
    ckpt.write_bytes(b'')
    with pytest.raises(ToolConfigError, match='.pkl'):
        build_test_config(config, str(ckpt), dump='out.json')
    existing = tmp_path / 'scores.pkl'
    existing.write_bytes(b'mine')
    with pytest.raises(OverwriteRefusedError,
                       match='already exists; pass --force'):
        build_test_config(config, str(ckpt), dump=str(existing))
    cfg = build_test_config(config, str(ckpt), dump=str(existing), force=True)
    assert cfg.test_evaluator[-1]['out_file_path'] == str(existing)
    assert existing.read_bytes() == b'mine'  # nothing written yet
    assert {'type': 'CheckpointFitHook'} in cfg.custom_hooks
