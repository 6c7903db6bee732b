# Copyright (c) mmrsa contributors. All rights reserved.
"""``ClipCheckHook``: pipelines that disagree with the backbone's
``num_segments`` and labels beyond the head's classes fail before the first
iteration, also under MMAction2's own ``tools/train.py``."""
import copy
import os.path as osp
import shutil

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from run_helpers import DEMO_CONFIG, run_tool

import mmaction
import mmrsa  # noqa: F401
from mmaction.registry import MODELS
from mmrsa.engine import (ClipCheckHook, ClipSamplingError,
                          check_clip_sampling, check_num_classes)
from mmrsa.engine.hooks.clip_check_hook import frames_per_video

MMACTION_TRAIN = osp.join(
    osp.dirname(mmaction.__file__), '.mim', 'tools', 'train.py')


def _sampler(dataloader) -> dict:
    """The ``SampleFrames`` step of a dataloader config's pipeline."""
    steps = [
        s for s in dataloader.dataset.pipeline if s['type'] == 'SampleFrames'
    ]
    assert len(steps) == 1
    return steps[0]


def _cfg() -> Config:
    cfg = Config.fromfile(DEMO_CONFIG)
    init_default_scope('mmaction')
    return cfg


def _runner(cfg: Config, tmp_path):
    from mmengine.runner import Runner
    cfg.work_dir = str(tmp_path / 'work_dir')
    cfg.log_level = 'WARNING'
    return Runner.from_cfg(cfg)


def _before_run(cfg: Config, tmp_path) -> None:
    """Build a Runner (no data read) and run the hook's check."""
    runner = _runner(cfg, tmp_path)
    hooks = [h for h in runner.hooks if isinstance(h, ClipCheckHook)]
    assert len(hooks) == 1  # the shipped config opts in
    hooks[0].before_run(runner)


def test_train_num_clips_disagrees(tmp_path):
    cfg = _cfg()
    _sampler(cfg.train_dataloader)['num_clips'] = 16
    with pytest.raises(ClipSamplingError) as info:
        _before_run(cfg, tmp_path)
    assert str(info.value).startswith(
        'model.backbone.num_segments=8, but the train pipeline '
        '(train_dataloader) samples 16 frames per video (SampleFrames: '
        'clip_len=1 x num_clips=16)')


def test_test_num_clips_not_a_multiple(tmp_path):
    cfg = _cfg()
    cfg.test_dataloader = copy.deepcopy(cfg.test_dataloader)
    _sampler(cfg.test_dataloader)['num_clips'] = 12
    with pytest.raises(
            ClipSamplingError,
            match='the test pipeline .* samples 12 frames per '
            'video .* not a whole number of clips of 8'):
        _before_run(cfg, tmp_path)


def test_num_segments_changed_but_not_the_pipelines():
    cfg = _cfg()
    cfg.model.backbone.num_segments = 16
    model = MODELS.build(cfg.model)
    with pytest.raises(
            ClipSamplingError,
            match='num_segments=16, but the train pipeline'):
        check_clip_sampling(model, [('train', cfg.train_dataloader)])


def test_twice_sample_and_multi_view_testing_are_fine():
    """twice_sample (test mode) counts twice; 3 views of 8 frames are 24
    frames; both are whole numbers of clips of 8, and a view more or less
    than a clip is not."""
    cfg = _cfg()
    model = MODELS.build(cfg.model)
    test = copy.deepcopy(cfg.test_dataloader)
    _sampler(test).update(twice_sample=True)
    views = copy.deepcopy(cfg.test_dataloader)
    _sampler(views).update(num_clips=24)
    assert frames_per_video(test.dataset.pipeline) == (
        16, 'SampleFrames: clip_len=1 x num_clips=8 x 2 (twice_sample)')
    once = 'SampleFrames: clip_len=1 x num_clips='
    assert frames_per_video(views.dataset.pipeline) == (24, once + '24')
    # twice_sample outside test mode samples once
    train = copy.deepcopy(cfg.train_dataloader)
    _sampler(train).update(twice_sample=True)
    assert frames_per_video(train.dataset.pipeline) == (8, once + '8')
    check_clip_sampling(model, [('train', train), ('test', test),
                                ('val', views)])
    # num_clips=12: 24 frames with twice_sample (3 clips of 8), 12 without
    # (not a whole number of clips)
    _sampler(test).update(num_clips=12)
    check_clip_sampling(model, [('test', test)])
    _sampler(views).update(num_clips=12)
    with pytest.raises(
            ClipSamplingError, match='the val pipeline .* samples 12 frames'):
        check_clip_sampling(model, [('val', views)])


def test_test_clip_len_times_num_clips_is_not_two_views(tmp_path):
    """clip_len=2 x num_clips=8 gives 16 frames: two clips of 8 frames that
    are not two 8-frame views of the video (issue: accepted silently)."""
    cfg = _cfg()
    cfg.test_dataloader = copy.deepcopy(cfg.test_dataloader)
    _sampler(cfg.test_dataloader).update(clip_len=2, num_clips=8)
    with pytest.raises(ClipSamplingError, match='clip_len=2'):
        _before_run(cfg, tmp_path)


def test_head_and_dataset_classes_disagree():
    cfg = _cfg()
    model = MODELS.build(cfg.model)
    loader = copy.deepcopy(cfg.train_dataloader)
    loader.dataset.num_classes = 12
    with pytest.raises(
            ClipSamplingError, match='num_classes=10, but the train dataset'):
        check_num_classes(model, [('train', loader)])


def test_label_beyond_the_head_names_file_and_line(synth_dir, tmp_path):
    root = tmp_path / 'synthmotion'
    shutil.copytree(synth_dir / 'data' / 'synthmotion', root)
    ann = root / 'synthmotion_train_list_rawframes.txt'
    lines = ann.read_text().splitlines()
    frame_dir, frames, _ = lines[4].split()
    lines[4] = f'{frame_dir} {frames} 99'
    ann.write_text('\n'.join(lines) + '\n')
    result = run_tool(
        [
            MMACTION_TRAIN,
            DEMO_CONFIG,
            '--work-dir',
            tmp_path / 'work_dir',
            '--cfg-options',
            f'data_root={root}',
            f'train_dataloader.dataset.ann_file={ann}',
            f'train_dataloader.dataset.data_prefix.img={root}/rawframes',
            # a checked dataset that records lines but knows no class count:
            # the hook, not SynthMotionDataset's own check, names the line here
            'train_dataloader.dataset.type=CheckedRawframeDataset',
            'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False',
            'val_dataloader.num_workers=0',
            'val_dataloader.persistent_workers=False'
        ],
        cwd=synth_dir)
    assert result.returncode != 0
    assert (f'{ann}, line 5: label 99 is outside [0, 10) of '
            'model.cls_head.num_classes=10') in result.stderr
    assert 'Epoch(train)' not in result.stdout + result.stderr


def test_fires_under_mmaction2_own_train_tool(synth_dir, tmp_path):
    """MMAction2's packaged tools/train.py (not ours) on an RSANet config."""
    result = run_tool([
        MMACTION_TRAIN, DEMO_CONFIG, '--work-dir', tmp_path / 'work_dir',
        '--cfg-options', 'model.backbone.num_segments=4',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False'
    ],
                      cwd=synth_dir)
    assert result.returncode != 0
    assert ('ClipSamplingError: model.backbone.num_segments=4, but the train '
            'pipeline (train_dataloader) samples 8 frames') in result.stderr
    assert 'Epoch(train)' not in result.stdout + result.stderr
