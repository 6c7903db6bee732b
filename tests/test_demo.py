# Copyright (c) mmrsa contributors. All rights reserved.
"""Tests of demo/demo.py on generated SynthMotion clips."""
import importlib.util
import os.path as osp

import pytest
import torch

import mmrsa  # noqa: F401  (compat fixes, registration)
from mmrsa.datasets.synthmotion import (SYNTHMOTION_CLASSES,
                                        generate_synthmotion)

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..'))
CONFIG = osp.join(ROOT, 'configs/recognition/rsanet/'
                  'rsanet_r18_8x1_synthmotion.py')
TSN_CONFIG = osp.join(
    ROOT, 'configs/recognition/rsanet/baselines/tsn_r18_8x1_synthmotion.py')


def _load_demo():
    spec = importlib.util.spec_from_file_location(
        'mmrsa_demo', osp.join(ROOT, 'demo', 'demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


def _runner_style_checkpoint(config: str, path: str) -> None:
    """A freshly initialised model saved as MMEngine's Runner saves one:
    weights plus meta and the message hub's log buffers."""
    from mmengine.config import Config
    from mmengine.logging import MessageHub

    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(config)
    model = MODELS.build(cfg.model)
    model.init_weights()
    hub = MessageHub.get_instance('mmrsa_test_demo')
    hub.update_scalar('train/loss', 2.3)
    hub.update_info('iter', 3)
    torch.save(
        dict(
            meta=dict(epoch=1, iter=3, cfg=cfg.pretty_text),
            state_dict=model.state_dict(),
            message_hub=hub.state_dict()), path)


@pytest.fixture(scope='module')
def clips(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo_set'))
    generate_synthmotion(
        root, formats=('rawframes', 'videos'), num_train=0, num_val=2)
    return root


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('demo_ckpt') / 'epoch_1.pth')
    _runner_style_checkpoint(CONFIG, path)
    return path


def test_runner_checkpoint_loads_weights_only(checkpoint):
    """``import mmrsa`` allowlists what MMEngine checkpoints hold, so the
    demo reads them with ``weights_only=True``."""
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=True)
    assert 'state_dict' in ckpt and 'message_hub' in ckpt


def test_video_top5_with_label_names(clips, checkpoint, capsys):
    video = osp.join(clips, 'videos', 'val_00001.mp4')
    results = demo.main([
        video, CONFIG, checkpoint, '--label-file',
        osp.join(clips, 'label_map.txt')
    ])
    out = capsys.readouterr().out
    assert len(results) == 5
    assert all(name in SYNTHMOTION_CLASSES for name, _ in results)
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= s <= 1 for s in scores)
    for name, _ in results:
        assert name in out


def test_rawframe_folder_and_video_agree(clips, checkpoint):
    """The same clip, as frames and as video, gets nearly the same scores
    (both encodings are lossy)."""
    frames = demo.predict(
        osp.join(clips, 'rawframes', 'val_00000'), CONFIG, checkpoint)
    video = demo.predict(
        osp.join(clips, 'videos', 'val_00000.mp4'), CONFIG, checkpoint)
    assert frames.shape == video.shape == (10, )
    assert torch.allclose(frames.sum(), torch.tensor(1.), atol=1e-4)
    assert (frames - video).abs().max() < 0.1


def test_tsn_config_without_label_file_prints_ids(clips, tmp_path):
    path = str(tmp_path / 'tsn.pth')
    _runner_style_checkpoint(TSN_CONFIG, path)
    results = demo.main([
        osp.join(clips, 'videos', 'val_00000.mp4'), TSN_CONFIG, path,
        '--topk', '3'
    ])
    assert len(results) == 3
    assert all(name.isdigit() and 0 <= int(name) < 10 for name, _ in results)


def test_missing_video(checkpoint, tmp_path):
    with pytest.raises(SystemExit, match='video not found'):
        demo.main([str(tmp_path / 'nope.mp4'), CONFIG, checkpoint])


def test_unreadable_video(checkpoint, tmp_path):
    bad = tmp_path / 'broken.mp4'
    bad.write_bytes(b'this is not a video')
    with pytest.raises(SystemExit, match='cannot read video'):
        demo.main([str(bad), CONFIG, checkpoint])


def test_empty_frame_folder(checkpoint, tmp_path):
    with pytest.raises(SystemExit, match='without frames'):
        demo.main([str(tmp_path), CONFIG, checkpoint])


def test_missing_checkpoint_and_label_file(clips, checkpoint, tmp_path):
    video = osp.join(clips, 'videos', 'val_00000.mp4')
    with pytest.raises(SystemExit, match='checkpoint not found'):
        demo.main([video, CONFIG, str(tmp_path / 'none.pth')])
    with pytest.raises(SystemExit, match='label file not found'):
        demo.main([
            video, CONFIG, checkpoint, '--label-file',
            str(tmp_path / 'none.txt')
        ])


def test_label_file_of_wrong_length(clips, checkpoint, tmp_path):
    labels = tmp_path / 'three.txt'
    labels.write_text('a\nb\nc\n')
    with pytest.raises(SystemExit, match='3 names'):
        demo.main([
            osp.join(clips, 'videos', 'val_00000.mp4'), CONFIG, checkpoint,
            '--label-file',
            str(labels)
        ])


def test_video_pipeline_swaps_the_decoder():
    pipeline = [
        dict(type='SampleFrames', clip_len=1, num_clips=8, test_mode=True),
        dict(type='RawFrameDecode'),
        dict(type='CenterCrop', crop_size=56),
    ]
    out = demo.video_pipeline(pipeline)
    assert [s['type'] for s in out] == [
        'DecordInit', 'SampleFrames', 'DecordDecode', 'CenterCrop'
    ]
    assert pipeline[1]['type'] == 'RawFrameDecode'  # input untouched
    with pytest.raises(ValueError, match='exactly one'):
        demo.video_pipeline(pipeline[:1])
