# Copyright (c) mmrsa contributors. All rights reserved.
"""Tests of demo/demo.py (run as a script) and of the inference code it
calls (:mod:`mmrsa.apis.inference`) on generated SynthMotion clips."""
import os.path as osp

import pytest
import torch

import mmrsa  # noqa: F401  (compat fixes, registration)
from mmrsa.apis import predict
from mmrsa.datasets.synthmotion import (SYNTHMOTION_CLASSES,
                                        generate_synthmotion)
from run_helpers import run_tool

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
CONFIG = osp.join(ROOT, 'configs/recognition/rsanet/'
                  'rsanet_r18_8x1_synthmotion.py')
TSN_CONFIG = osp.join(
    ROOT, 'configs/recognition/rsanet/baselines/tsn_r18_8x1_synthmotion.py')


def _demo(*args):
    """Run demo/demo.py; return (exit code, [(name, score)], stdout,
    stderr)."""
    result = run_tool([osp.join(ROOT, 'demo', 'demo.py'), *args], cwd=ROOT)
    results = []
    for line in result.stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            try:
                results.append((parts[1], float(parts[0])))
            except ValueError:
                pass
    return result.returncode, results, result.stdout, result.stderr


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


def test_video_top5_with_label_names(clips, checkpoint):
    video = osp.join(clips, 'videos', 'val_00001.mp4')
    code, results, out, err = _demo(video, CONFIG, checkpoint, '--label-file',
                                    osp.join(clips, 'label_map.txt'))
    assert code == 0, err[-3000:]
    assert f'top-5 labels for {video}:' in out
    assert len(results) == 5
    assert all(name in SYNTHMOTION_CLASSES for name, _ in results)
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= s <= 1 for s in scores)
    for name, _ in results:
        assert name in out


def test_rawframe_folder_and_video_agree(clips, checkpoint):
    """The same clip, as frames and as video, gets nearly the same class
    logits (both encodings are lossy); another clip does not.

    The model is untrained: its logits are ~0.1 and its probabilities all
    near 1/10, so logits (``average_clips='score'``) are compared. Measured:
    2.7e-3 between the two encodings of one clip, 4.7e-2 to another clip.
    """
    logits = dict(model=dict(cls_head=dict(average_clips='score')))

    def scores(path, cfg_options=logits):
        return predict(osp.join(clips, path), CONFIG, checkpoint,
                       cfg_options=cfg_options)

    frames = scores(osp.join('rawframes', 'val_00000'))
    video = scores(osp.join('videos', 'val_00000.mp4'))
    other = scores(osp.join('videos', 'val_00001.mp4'))
    assert frames.shape == video.shape == other.shape == (10, )
    assert (frames - video).abs().max() < 1e-2
    assert (frames - other).abs().max() > 2e-2
    probs = scores(osp.join('rawframes', 'val_00000'), cfg_options=None)
    torch.testing.assert_close(probs, frames.softmax(0), rtol=0, atol=1e-6)


def test_tsn_config_without_label_file_prints_ids(clips, tmp_path):
    path = str(tmp_path / 'tsn.pth')
    _runner_style_checkpoint(TSN_CONFIG, path)
    code, results, _, err = _demo(
        osp.join(clips, 'videos', 'val_00000.mp4'), TSN_CONFIG, path,
        '--topk', '3')
    assert code == 0, err[-3000:]
    assert len(results) == 3
    assert all(name.isdigit() and 0 <= int(name) < 10 for name, _ in results)


def test_bad_inputs_are_named(checkpoint, tmp_path):
    bad = tmp_path / 'broken.mp4'
    bad.write_bytes(b'this is not a video')
    empty = tmp_path / 'empty'
    empty.mkdir()
    for video, message in [(tmp_path / 'nope.mp4', 'video not found'),
                           (bad, 'cannot read video'),
                           (empty, 'has no frames named as')]:
        code, _, _, err = _demo(video, CONFIG, checkpoint)
        assert code == 1 and 'Traceback' not in err, err[-3000:]
        assert 'error: ' in err and message in err
