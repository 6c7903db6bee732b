# Copyright (c) mmrsa contributors. All rights reserved.
"""Tests of tools/train.py and tools/test.py (run as scripts) and of the
configs they build (:mod:`mmrsa.apis`): a few iterations of the SynthMotion
demo configs on a tiny generated set."""
import os.path as osp
import pickle

import pytest
from run_helpers import run_tool

import mmrsa  # noqa: F401  (compat fixes, registration)
from mmrsa.apis import ToolConfigError, build_test_config, build_train_config
from mmrsa.datasets.synthmotion import generate_synthmotion
from mmrsa.fileio.atomic import OverwriteRefusedError

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
    for loader, split in (('train', 'train'), ('val', 'val'), ('test', 'val')):
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
    assert cfg.work_dir == osp.join('work_dirs', 'rsanet_r18_8x1_synthmotion')
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
    result = _run(
        [
            TRAIN, config, '--work-dir', work_dir, '--amp', '--no-validate',
            '--cfg-options'
        ] + _data_options(tiny_set),
        env={'CUDA_VISIBLE_DEVICES': ''})
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
    with pytest.raises(
            OverwriteRefusedError, match='already exists; pass --force'):
        build_test_config(config, str(ckpt), dump=str(existing))
    cfg = build_test_config(config, str(ckpt), dump=str(existing), force=True)
    assert cfg.test_evaluator[-1]['out_file_path'] == str(existing)
    assert existing.read_bytes() == b'mine'  # nothing written yet
    assert {'type': 'CheckpointFitHook'} in cfg.custom_hooks


@pytest.fixture
def parsed_once(monkeypatch):
    """build_*_config parse each config file once in the test (the
    options are applied to a copy each time)."""
    import copy

    from mmengine.config import Config

    import mmrsa.apis.run_config as run_config
    parsed = {}

    def load_config(config, cfg_options=None):
        if config not in parsed:
            parsed[config] = Config.fromfile(config)
        cfg = copy.deepcopy(parsed[config])
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        return cfg

    monkeypatch.setattr(run_config, 'load_config', load_config)


def test_train_config_options(tmp_path, parsed_once):
    """Every option of build_train_config, observed in the config it
    builds, each alone (and none: the config as written)."""
    config = osp.join(ROOT, CONFIGS['rsanet'])
    plain = build_train_config(config, cuda=False)
    assert plain.randomness == dict(seed=0, deterministic=False)
    assert not plain.resume and plain.load_from is None
    assert plain.launcher == 'none'
    assert plain.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'
    assert plain.val_cfg is not None and plain.val_dataloader is not None
    assert plain.auto_scale_lr.enable is False

    def build(**options):
        return build_train_config(config, cuda=False, **options)

    assert build(work_dir=str(tmp_path)).work_dir == str(tmp_path)
    assert build(launcher='pytorch').launcher == 'pytorch'
    assert build(launcher='slurm').launcher == 'slurm'
    # --resume: the newest checkpoint (auto), a file, a URL
    auto = build(resume='auto')
    assert auto.resume is True and auto.load_from is None
    ckpt = tmp_path / 'epoch_1.pth'
    ckpt.write_bytes(b'x')
    named = build(resume=str(ckpt))
    assert named.resume is True and named.load_from == str(ckpt)
    url = 'https://example.com/epoch_1.pth'
    assert build(resume=url).load_from == url  # not checked locally
    # --seed, --diff-rank-seed, --deterministic: each alone, the others
    # as the config has them
    assert build(seed=3).randomness == dict(seed=3, deterministic=False)
    assert build(seed=0).randomness.seed == 0
    assert build(diff_rank_seed=True).randomness == dict(
        seed=0, deterministic=False, diff_rank_seed=True)
    assert build(deterministic=True).randomness == dict(
        seed=0, deterministic=True)
    assert 'diff_rank_seed' not in plain.randomness
    # --auto-scale-lr
    assert build(auto_scale_lr=True).auto_scale_lr == dict(
        enable=True, base_batch_size=16)
    no_scale = tmp_path / 'no_scale.py'  # a config without auto_scale_lr
    no_scale.write_text('train_dataloader = dict(batch_size=2)\n')
    with pytest.raises(ToolConfigError, match='needs `auto_scale_lr'):
        build_train_config(str(no_scale), auto_scale_lr=True, cuda=False)
    # --no-validate drops what picks the best checkpoint too
    best = {
        'default_hooks.checkpoint.save_best': 'auto',
        'default_hooks.checkpoint.rule': 'greater'
    }
    kept = build(cfg_options=best)
    assert kept.default_hooks.checkpoint.save_best == 'auto'
    dropped = build(no_validate=True, cfg_options=best)
    assert dropped.val_cfg is None and dropped.val_dataloader is None
    assert dropped.val_evaluator is None
    assert 'save_best' not in dropped.default_hooks.checkpoint
    assert 'rule' not in dropped.default_hooks.checkpoint
    assert dropped.default_hooks.checkpoint.interval == 1
    # --amp: bfloat16 CPU autocast without a GPU, float16 with a dynamic
    # loss scale (unless the config sets one) with a GPU
    assert build(amp=True).optim_wrapper.type == 'CPUAutocastOptimWrapper'
    assert 'loss_scale' not in build(amp=True).optim_wrapper
    on_gpu = build_train_config(config, amp=True, cuda=True)
    assert on_gpu.optim_wrapper.type == 'AmpOptimWrapper'
    assert on_gpu.optim_wrapper.loss_scale == 'dynamic'
    assert on_gpu.optim_wrapper.clip_grad == plain.optim_wrapper.clip_grad
    static = build_train_config(
        config,
        amp=True,
        cuda=True,
        cfg_options={'optim_wrapper.loss_scale': 512.})
    assert static.optim_wrapper.loss_scale == 512.
    with pytest.raises(
            ToolConfigError, match="custom optimizer wrapper "
            "'MyWrapper'"):
        build(amp=True, cfg_options={'optim_wrapper.type': 'MyWrapper'})
    # --cfg-options
    assert build(cfg_options={
        'train_cfg.max_epochs': 7
    }).train_cfg.max_epochs == 7


def test_test_config_options(tmp_path, parsed_once):
    """Every option of build_test_config, observed in the config it
    builds."""
    config = osp.join(ROOT, CONFIGS['rsanet'])
    ckpt = tmp_path / 'epoch_1.pth'
    ckpt.write_bytes(b'x')
    plain = build_test_config(config, str(ckpt))
    assert plain.load_from == str(ckpt) and plain.resume is False
    assert plain.launcher == 'none'
    assert plain.work_dir == osp.join('work_dirs',
                                      'rsanet_r18_8x1_synthmotion')
    assert plain.test_evaluator == dict(type='AccMetric')
    # the hook is added once, and never twice
    assert [h['type']
            for h in plain.custom_hooks].count('CheckpointFitHook') == 1
    assert plain.get(
        'default_hooks',
        {}).get('visualization') in (None,
                                     plain.default_hooks.get('visualization'))
    # a config that says resume=True is tested from the given checkpoint
    resumed = build_test_config(
        config, str(ckpt), cfg_options={'resume': True})
    assert resumed.resume is False and resumed.load_from == str(ckpt)
    no_fit = tmp_path / 'no_fit.py'
    no_fit.write_text(f'_base_ = {config!r}\ncustom_hooks = []\n')
    assert build_test_config(str(no_fit), str(ckpt)).custom_hooks == [
        dict(type='CheckpointFitHook')
    ]
    # checkpoint URLs are not checked locally
    url = 'https://example.com/epoch_1.pth'
    assert build_test_config(config, url).load_from == url

    other = build_test_config(
        config,
        str(ckpt),
        work_dir=str(tmp_path / 'w'),
        launcher='pytorch',
        cfg_options={'test_dataloader.batch_size': 3})
    assert other.work_dir == str(tmp_path / 'w')
    assert other.launcher == 'pytorch'
    assert other.test_dataloader.batch_size == 3
    # --show, --show-dir, --interval, --wait-time
    shown = build_test_config(
        config, str(ckpt), show=True, interval=5, wait_time=0.5)
    vis = shown.default_hooks.visualization
    assert vis.type == 'VisualizationHook'
    assert (vis.enable, vis.show, vis.out_dir, vis.interval,
            vis.wait_time) == (True, True, None, 5, 0.5)
    to_dir = build_test_config(config, str(ckpt), show_dir='vis')
    vis = to_dir.default_hooks.visualization
    assert (vis.enable, vis.show, vis.out_dir, vis.interval,
            vis.wait_time) == (True, False, 'vis', 1, 2)
    # --dump: appended to the evaluator, a list of evaluators kept
    dump = str(tmp_path / 'scores.pkl')
    dumped = build_test_config(config, str(ckpt), dump=dump)
    assert dumped.test_evaluator == [
        dict(type='AccMetric'),
        dict(type='DumpResults', out_file_path=dump)
    ]
    two = build_test_config(
        config,
        str(ckpt),
        dump=dump,
        cfg_options={
            'test_evaluator':
            [dict(type='AccMetric'),
             dict(type='ConfusionMatrix')]
        })
    assert [e['type'] for e in two.test_evaluator
            ] == ['AccMetric', 'ConfusionMatrix', 'DumpResults']
    assert build_test_config(
        config, str(ckpt), dump=str(
            tmp_path /
            'scores.pickle')).test_evaluator[-1]['type'] == ('DumpResults')
