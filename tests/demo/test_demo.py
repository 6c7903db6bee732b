# Copyright (c) mmrsa contributors. All rights reserved.
"""Tests of demo/demo.py (run as a script) and of the inference code it
calls (:mod:`mmrsa.apis.inference`) on generated SynthMotion clips."""
import os.path as osp

import decord
import numpy as np
import pytest
import torch
from run_helpers import import_tool, run_tool

import mmrsa  # noqa: F401  (compat fixes, registration)
from mmrsa.apis import predict
from mmrsa.datasets.synthmotion import (SYNTHMOTION_CLASSES,
                                        generate_synthmotion)
from mmrsa.fileio.checkpoint import load_checkpoint_file

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
CONFIG = osp.join(
    ROOT, 'configs/recognition/rsanet/'
    'rsanet_r18_8x1_synthmotion.py')
TSN_CONFIG = osp.join(
    ROOT, 'configs/recognition/rsanet/baselines/tsn_r18_8x1_synthmotion.py')

DEMO = import_tool('demo/demo.py')


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
    """mmrsa's loader reads what MMEngine checkpoints hold with
    ``weights_only=True`` (its allow-list applies inside the loader only),
    so the demo needs no ``--trust-pickle`` for them."""
    ckpt = load_checkpoint_file(checkpoint, map_location='cpu')
    assert 'state_dict' in ckpt and 'message_hub' in ckpt


def test_video_top5_with_label_names(clips, checkpoint):
    """MMAction2's order: CONFIG CHECKPOINT VIDEO LABEL."""
    video = osp.join(clips, 'videos', 'val_00001.mp4')
    code, results, out, err = _demo(CONFIG, checkpoint, video,
                                    osp.join(clips, 'label_map.txt'))
    assert code == 0, err[-3000:]
    assert 'DeprecationWarning' not in err
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
        return predict(
            osp.join(clips, path), CONFIG, checkpoint, cfg_options=cfg_options)

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
    code, results, _, err = _demo(TSN_CONFIG, path,
                                  osp.join(clips, 'videos', 'val_00000.mp4'),
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
        code, _, _, err = _demo(CONFIG, checkpoint, video)
        assert code == 1 and 'Traceback' not in err, err[-3000:]
        assert 'error: ' in err and message in err


def test_former_order_still_works_with_a_deprecation_warning(
        clips, checkpoint):
    """VIDEO CONFIG CHECKPOINT --label-file LABEL (the order before
    MMAction2's) gives the same labels and says it is deprecated."""
    video = osp.join(clips, 'rawframes', 'val_00000')
    labels = osp.join(clips, 'label_map.txt')
    code, old, out, err = _demo(video, CONFIG, checkpoint, '--label-file',
                                labels)
    assert code == 0, err[-3000:]
    assert 'DeprecationWarning' in err and 'CONFIG CHECKPOINT VIDEO' in err
    assert f'top-5 labels for {video}:' in out
    code, new, _, err = _demo(CONFIG, checkpoint, video, labels)
    assert code == 0, err[-3000:]
    assert [n for n, _ in old] == [n for n, _ in new]
    assert all(name in SYNTHMOTION_CLASSES for name, _ in new)


@pytest.mark.parametrize('argv,order', [
    (['c.py', 'w.pth', 'v.mp4'], ('c.py', 'w.pth', 'v.mp4', None)),
    (['c.py', 'w.pth', 'frames/', 'l.txt'],
     ('c.py', 'w.pth', 'frames/', 'l.txt')),
    (['v.mp4', 'c.py', 'w.pth'], ('c.py', 'w.pth', 'v.mp4', None)),
    (['frames', 'c.py', 'w.pth', '--label-file', 'l.txt'],
     ('c.py', 'w.pth', 'frames', 'l.txt')),
    (['c.py', 'w.pth', 'v.mp4', '--label-file', 'l.txt'],
     ('c.py', 'w.pth', 'v.mp4', 'l.txt')),
])
def test_argument_order(argv, order):
    legacy = argv[1] == 'c.py'
    with pytest.warns(DeprecationWarning) if legacy else _no_deprecation():
        args = DEMO.parse_args(argv)
    assert (args.config, args.checkpoint, args.video, args.label) == order


class _no_deprecation:

    def __enter__(self):
        import warnings
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter('error', DeprecationWarning)

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)


def test_mmaction2_options_are_parsed():
    args = DEMO.parse_args([
        'c.py', 'w.pth', 'v.mp4', 'l.txt', '--out-filename', 'o.mp4', '--fps',
        '12', '--device', 'cpu', '--font-scale', '0.8', '--font-color', 'red',
        '--target-resolution', '320', '-1', '--cfg-options',
        'model.cls_head.average_clips=score'
    ])
    assert (args.out_filename, args.fps, args.device) == ('o.mp4', 12, 'cpu')
    assert (args.font_scale, args.font_color) == (0.8, 'red')
    assert args.target_resolution == [320, -1]
    assert args.cfg_options == {'model.cls_head.average_clips': 'score'}


@pytest.mark.parametrize('argv', [
    ['c.py', 'w.pth', 'v.mp4', 'l.txt', '--label-file', 'l.txt'],
    ['c.py', 'w.pth', 'v.mp4', '--target-resolution', '-1', '-1'],
    ['c.py', 'w.pth', 'v.mp4', '--target-resolution', '0', '240'],
])
def test_bad_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        DEMO.parse_args(argv)
    assert exc.value.code == 2


@pytest.mark.parametrize('name,size', [('out.mp4', (96, 72)),
                                       ('out.gif', (64, 48))])
def test_out_filename_writes_the_labelled_video(clips, checkpoint, tmp_path,
                                                name, size):
    """--out-filename: every frame of the input, resized as asked, with the
    top-1 label drawn in the top-left corner."""
    video = osp.join(clips, 'videos', 'val_00000.mp4')
    out_file = tmp_path / name
    width = size[0]
    code, results, out, err = _demo(CONFIG, checkpoint, video,
                                    osp.join(clips, 'label_map.txt'),
                                    '--out-filename', out_file, '--fps', '8',
                                    '--target-resolution', width, '-1',
                                    '--font-color', 'red')
    assert code == 0, err[-3000:]
    assert f'wrote {out_file}' in out
    source = decord.VideoReader(video)
    if name.endswith('.gif'):
        from PIL import Image, ImageSequence
        with Image.open(out_file) as gif:
            frames = [
                np.asarray(f.convert('RGB'))
                for f in ImageSequence.Iterator(gif)
            ]
    else:
        written = decord.VideoReader(str(out_file))
        assert round(written.get_avg_fps()) == 8
        frames = list(written.get_batch(range(len(written))).asnumpy())
    assert len(frames) == len(source)
    src_h, src_w = source[0].shape[:2]
    assert frames[0].shape == (round(width * src_h / src_w), width, 3)
    # red text (RGB) in the corner: far more red than green there
    corner = frames[0][:frames[0].shape[0] // 3].astype(int)
    assert ((corner[..., 0] - corner[..., 1]) > 100).sum() > 20


def test_label_drawing_keeps_the_rest_of_the_frame():
    frame = np.full((120, 160, 3), 40, np.uint8)
    (drawn, ) = DEMO.draw_label([frame], 'push', font_color='#00ff00')
    changed = np.argwhere((drawn != frame).any(-1))
    assert len(changed) > 0 and changed[:, 0].max() < 60
    assert (drawn[..., 1][drawn[..., 1] > 40] > drawn[..., 2].max()).all()
    (resized, ) = DEMO.draw_label([frame], 'x', target_resolution=(-1, 60))
    assert resized.shape == (60, 80, 3)


def test_read_frames_of_a_video_and_its_frame_folder(clips):
    """--out-filename draws on every frame: of the video, or of the frame
    folder (named as the config's filename_tmpl), in order."""
    video = DEMO.read_frames(
        osp.join(clips, 'videos', 'val_00000.mp4'), CONFIG)
    folder = DEMO.read_frames(
        osp.join(clips, 'rawframes', 'val_00000'), CONFIG)
    assert len(video) == len(folder) == len(
        decord.VideoReader(osp.join(clips, 'videos', 'val_00000.mp4')))
    assert video[0].shape == folder[0].shape and video[0].ndim == 3
    # the same clip, both lossy: the frames agree far better in order
    same = np.abs(video[3].astype(int) - folder[3]).mean()
    other = np.abs(video[3].astype(int) - folder[-1]).mean()
    assert same < other
