# Copyright (c) mmrsa contributors. All rights reserved.
"""The checks of ``ClipCheckHook`` and ``CheckpointFitHook`` at their
boundaries: the first labels outside ``[0, num_classes)`` (``num_classes``
and -1) and the last ones inside, fewer frames than ``num_segments``, a
head whose ``num_segments`` differs, checkpoints without BN step counters
and resumed checkpoints without ``meta.iter`` or ``meta.epoch``."""
import copy
import functools
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope
from run_helpers import DEMO_CONFIG

import mmrsa  # noqa: F401
from mmaction.registry import DATASETS
from mmrsa.datasets import AnnotationError
from mmrsa.engine import (CheckpointFitHook, CheckpointMismatchError,
                          ClipSamplingError, check_checkpoint_fits,
                          check_clip_sampling, check_num_classes)

NUM_CLASSES = 10


def _part(**attrs) -> nn.Module:
    part = nn.Module()
    for name, value in attrs.items():
        setattr(part, name, value)
    return part


def _model(num_classes: int = NUM_CLASSES,
           backbone_segments: int = 8,
           head_segments=None) -> nn.Module:
    """A stand-in recognizer: what the checks read of one."""
    model = nn.Module()
    model.backbone = _part(num_segments=backbone_segments)
    head = dict(num_classes=num_classes)
    if head_segments is not None:
        head['num_segments'] = head_segments
    model.cls_head = _part(**head)
    return model


def _dataset(synth_dir, tmp_path, label_of_line_3: int):
    """The SynthMotion val set (built, lines recorded, no num_classes), its
    line 3 given ``label_of_line_3``."""
    src = synth_dir / 'data' / 'synthmotion'
    ann = tmp_path / 'val_list.txt'
    lines = (src /
             'synthmotion_val_list_rawframes.txt').read_text().split('\n')
    frame_dir, frames, _ = lines[2].split()
    lines[2] = f'{frame_dir} {frames} {label_of_line_3}'
    ann.write_text('\n'.join(lines))
    init_default_scope('mmaction')
    dataset = DATASETS.build(
        dict(
            type='CheckedRawframeDataset',
            ann_file=str(ann),
            data_prefix=dict(img=str(src / 'rawframes')),
            filename_tmpl='{:05}.jpg',
            pipeline=[],
            test_mode=True))
    return dataset, ann


@pytest.mark.parametrize('label', [NUM_CLASSES, -1])
def test_label_just_outside_the_head_names_file_and_line(
        synth_dir, tmp_path, label):
    dataset, ann = _dataset(synth_dir, tmp_path, label)
    with pytest.raises(AnnotationError) as info:
        check_num_classes(_model(), [('val', dict(dataset=dataset))])
    assert str(info.value).startswith(
        f'{ann}, line 3: label {label} is outside [0, 10) of '
        f'model.cls_head.num_classes=10.')


@pytest.mark.parametrize('label', [0, NUM_CLASSES - 1])
def test_labels_at_both_ends_of_the_head_are_fine(synth_dir, tmp_path, label):
    dataset, _ = _dataset(synth_dir, tmp_path, label)
    check_num_classes(_model(), [('val', dict(dataset=dataset))])
    # the same label with one class fewer is outside
    if label == NUM_CLASSES - 1:
        with pytest.raises(AnnotationError, match='label 9 is outside'):
            check_num_classes(
                _model(NUM_CLASSES - 1), [('val', dict(dataset=dataset))])


@functools.lru_cache(maxsize=None)
def _demo_cfg() -> Config:
    return Config.fromfile(DEMO_CONFIG)


def _loader(num_clips: int, **sampling) -> dict:
    loader = copy.deepcopy(_demo_cfg().train_dataloader)
    for step in loader.dataset.pipeline:
        if step['type'] == 'SampleFrames':
            step.update(num_clips=num_clips, **sampling)
    return loader


@pytest.mark.parametrize('num_clips', [4, 7, 9, 16])
def test_train_frames_must_equal_num_segments(num_clips):
    """Fewer frames than num_segments fail as more do; exactly 8 passes."""
    model = _model()
    with pytest.raises(
            ClipSamplingError,
            match=f'samples {num_clips} frames per video .*SampleFrames: '
            f'clip_len=1 x num_clips={num_clips}'):
        check_clip_sampling(model, [('train', _loader(num_clips))])
    check_clip_sampling(model, [('train', _loader(8))])


def test_head_and_backbone_segments_must_agree():
    with pytest.raises(
            ClipSamplingError,
            match=r'^model.backbone.num_segments=8 but '
            r'model.cls_head.num_segments=4: both must be'):
        check_clip_sampling(_model(head_segments=4), [])
    check_clip_sampling(_model(head_segments=8), [('train', _loader(8))])


# --------------------------------------------------------------------- #
# CheckpointFitHook
# --------------------------------------------------------------------- #
def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_checkpoint_without_bn_step_counters_fits():
    """``num_batches_tracked`` may be missing (older files, torchvision's),
    as MMEngine allows; nothing else may."""
    model = _net()
    state = model.state_dict()
    without = {
        k: v
        for k, v in state.items() if not k.endswith('num_batches_tracked')
    }
    assert len(without) == len(state) - 1
    check_checkpoint_fits(model, dict(state_dict=without))
    check_checkpoint_fits(model, without)  # a bare state dict
    for key in without:  # any other tensor missing is refused
        partial = {k: v for k, v in without.items() if k != key}
        with pytest.raises(CheckpointMismatchError) as info:
            check_checkpoint_fits(model, dict(state_dict=partial), 'x.pth')
        assert info.value.missing == [key]
        assert '1 model keys missing from the checkpoint: ' + key in str(
            info.value)
    # a counter the model does not have is unexpected, as any key
    extra = dict(without, **{'2.num_batches_tracked': torch.tensor(1)})
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_fits(model, extra)
    assert info.value.unexpected == ['2.num_batches_tracked']


def _runner(resume: bool) -> SimpleNamespace:
    return SimpleNamespace(
        model=_net(), _resume=resume, _load_from='run/epoch_1.pth')


@pytest.mark.parametrize(
    'meta',
    [None, {},
     dict(epoch=1),
     dict(iter=4), [('epoch', 1), ('iter', 4)]])
def test_resume_needs_meta_epoch_and_iter(meta):
    runner = _runner(resume=True)
    checkpoint = dict(state_dict=runner.model.state_dict())
    if meta is not None:
        checkpoint['meta'] = meta
    with pytest.raises(CheckpointMismatchError) as info:
        CheckpointFitHook().after_load_checkpoint(runner, checkpoint)
    assert str(info.value).startswith(
        'run/epoch_1.pth holds weights but no training state (meta.epoch / '
        'meta.iter), so a run cannot resume from it.')
    # the same file is fine for load_from
    CheckpointFitHook().after_load_checkpoint(
        _runner(resume=False), checkpoint)


def test_resume_with_meta_epoch_and_iter_passes():
    runner = _runner(resume=True)
    checkpoint = dict(
        state_dict=runner.model.state_dict(), meta=dict(epoch=0, iter=0))
    CheckpointFitHook().after_load_checkpoint(runner, checkpoint)
    # the weights are checked first, named after the hook's filename
    del checkpoint['state_dict']['0.weight']
    with pytest.raises(CheckpointMismatchError, match='^mine.pth does not'):
        CheckpointFitHook('mine.pth').after_load_checkpoint(runner, checkpoint)
