# Copyright (c) mmrsa contributors. All rights reserved.
"""Tests of mmrsa/datasets/synthmotion.py (its command-line tool:
tests/tools/data/synthmotion/)."""
import hashlib
import json
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config

import mmrsa  # noqa: F401  (compat fixes, registration)
from mmrsa.datasets import (AnnotationError, CheckedRawframeDataset,
                            direction_label_ids)
from mmrsa.datasets.synthmotion import (GENERATE_COMMAND, HFLIP_LABEL_MAP,
                                        REVERSED_PAIRS, SYNTHMOTION_CLASSES,
                                        SynthMotionDataset,
                                        generate_synthmotion, read_label_map,
                                        render_clip, synthmotion_is_complete)
from mmrsa.fileio.atomic import OverwriteRefusedError

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
CONFIG = osp.join(
    ROOT, 'configs/recognition/rsanet/'
    'rsanet_r18_8x1_synthmotion.py')


def _tree_digest(root):
    """{relative path: md5} of every file under ``root``."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path,
                                root)] = hashlib.md5(f.read()).hexdigest()
    return out


@pytest.fixture(scope='module')
def tiny_set(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('synthmotion'))
    generate_synthmotion(
        out,
        formats=('rawframes', 'videos'),
        num_train=12,
        num_val=10,
        seed=3,
        min_frames=10,
        max_frames=14)
    return out


# --------------------------------------------------------------------- #
# classes
# --------------------------------------------------------------------- #
def test_classes_and_pairs():
    assert len(SYNTHMOTION_CLASSES) == 10
    assert len(set(SYNTHMOTION_CLASSES)) == 10
    members = [c for pair in REVERSED_PAIRS for c in pair]
    assert len(members) == len(set(members)) == 8
    # the flip map is an involution among the pair classes
    for a, b in HFLIP_LABEL_MAP.items():
        assert HFLIP_LABEL_MAP[b] == a
        assert (min(a, b), max(a, b)) in REVERSED_PAIRS


def test_label_aware_flip_ids_match_config():
    cfg = Config.fromfile(CONFIG)
    flip = [t for t in cfg.train_pipeline if t['type'] == 'LabelAwareFlip']
    assert len(flip) == 1
    # the classes a flip changes are exactly those the flip skips
    assert sorted(flip[0]['no_flip_labels']) == sorted(HFLIP_LABEL_MAP)


def test_direction_words_select_flip_classes(tmp_path):
    path = tmp_path / 'labels.txt'
    path.write_text('\n'.join(SYNTHMOTION_CLASSES) + '\n')
    assert direction_label_ids(str(path)) == (0, 1)
    ids = direction_label_ids(
        str(path), keywords=('left', 'right', 'clockwise', 'anticlockwise'))
    assert ids == tuple(sorted(HFLIP_LABEL_MAP))


# --------------------------------------------------------------------- #
# rendering
# --------------------------------------------------------------------- #
@pytest.mark.parametrize('label', range(10))
def test_render_clip_shape_and_determinism(label):
    a = render_clip(label, np.random.default_rng(7), size=32, num_frames=9)
    b = render_clip(label, np.random.default_rng(7), size=32, num_frames=9)
    assert a.shape == (9, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    c = render_clip(label, np.random.default_rng(8), size=32, num_frames=9)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize('pair', REVERSED_PAIRS)
def test_reversed_class_is_forward_class_played_backwards(pair):
    forward, backward = pair
    a = render_clip(forward, np.random.default_rng(11), num_frames=12)
    b = render_clip(backward, np.random.default_rng(11), num_frames=12)
    np.testing.assert_array_equal(a[::-1], b)


def test_moving_classes_move_and_still_class_does_not():
    # mean absolute change between first and last frame
    def change(label):
        diffs = []
        for seed in range(4):
            clip = render_clip(
                label, np.random.default_rng(seed), num_frames=16)
            diffs.append(
                np.abs(clip[-1].astype(int) - clip[0].astype(int)).mean())
        return np.mean(diffs)

    still = change(8)
    for label in (0, 2, 4, 6):
        assert change(label) > 2 * still


@pytest.mark.parametrize('kwargs, match',
                         [(dict(label=10), 'label'), (dict(label=-1), 'label'),
                          (dict(label=0, size=8), 'size'),
                          (dict(label=0, num_frames=1), 'num_frames')])
def test_render_clip_invalid(kwargs, match):
    label = kwargs.pop('label')
    with pytest.raises(ValueError, match=match):
        render_clip(label, np.random.default_rng(0), **kwargs)


# --------------------------------------------------------------------- #
# writing
# --------------------------------------------------------------------- #
def test_layout(tiny_set):
    root = tiny_set
    assert read_label_map(osp.join(
        root, 'label_map.txt')) == list(SYNTHMOTION_CLASSES)
    with open(osp.join(root, 'meta.json')) as f:
        meta = json.load(f)
    assert meta['seed'] == 3 and meta['num_train'] == 12
    assert meta['reversed_pairs'] == [list(p) for p in REVERSED_PAIRS]

    for split, count in (('train', 12), ('val', 10)):
        raw = osp.join(root, f'synthmotion_{split}_list_rawframes.txt')
        with open(raw) as f:
            lines = [line.split() for line in f]
        assert len(lines) == count
        for i, (clip, num_frames, label) in enumerate(lines):
            assert clip == f'{split}_{i:05}'
            assert int(label) == i % 10
            assert 10 <= int(num_frames) <= 14
            frames = sorted(os.listdir(osp.join(root, 'rawframes', clip)))
            assert frames == [
                f'{j:05}.jpg' for j in range(1,
                                             int(num_frames) + 1)
            ]
        vid = osp.join(root, f'synthmotion_{split}_list_videos.txt')
        with open(vid) as f:
            lines = [line.split() for line in f]
        assert [v for v, _ in lines
                ] == [f'{split}_{i:05}.mp4' for i in range(count)]
        for v, _ in lines:
            assert osp.isfile(osp.join(root, 'videos', v))


def test_generation_is_deterministic(tiny_set, tmp_path):
    again = str(tmp_path / 'again')
    generate_synthmotion(
        again,
        formats=('rawframes', 'videos'),
        num_train=12,
        num_val=10,
        seed=3,
        min_frames=10,
        max_frames=14)
    assert _tree_digest(again) == _tree_digest(tiny_set)


def test_clip_does_not_depend_on_set_size(tiny_set, tmp_path):
    small = str(tmp_path / 'small')
    generate_synthmotion(
        small, num_train=3, num_val=0, seed=3, min_frames=10, max_frames=14)
    big, little = _tree_digest(tiny_set), _tree_digest(small)
    for path, digest in little.items():
        if path.startswith('rawframes'):
            assert big[path] == digest


def test_seed_changes_the_set(tmp_path):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    generate_synthmotion(a, num_train=2, num_val=0, seed=0)
    generate_synthmotion(b, num_train=2, num_val=0, seed=1)
    da, db = _tree_digest(a), _tree_digest(b)
    frame = osp.join('rawframes', 'train_00000', '00001.jpg')
    assert da[frame] != db[frame]


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = str(tmp_path / 'set')
    generate_synthmotion(out, num_train=2, num_val=1)
    with pytest.raises(FileExistsError, match='overwrite'):
        generate_synthmotion(out, num_train=2, num_val=1)
    generate_synthmotion(
        out, formats=('videos', ), num_train=3, num_val=1, overwrite=True)
    assert not osp.exists(osp.join(out, 'rawframes'))
    assert not osp.exists(
        osp.join(out, 'synthmotion_train_list_rawframes.txt'))
    assert len(os.listdir(osp.join(out, 'videos'))) == 4


def test_is_complete(tmp_path):
    out = str(tmp_path / 'set')
    assert not synthmotion_is_complete(out)
    generate_synthmotion(out, num_train=2, num_val=1, seed=5)
    assert synthmotion_is_complete(out)
    assert synthmotion_is_complete(out, seed=5, num_train=2)
    assert not synthmotion_is_complete(out, seed=6)
    assert synthmotion_is_complete(out, formats=('rawframes', ))
    assert not synthmotion_is_complete(out, formats=('rawframes', 'videos'))
    # sets made before the "complete" flag wrote meta.json last
    meta_path = osp.join(out, 'meta.json')
    with open(meta_path) as f:
        meta = json.load(f)
    assert meta.pop('complete') is True
    with open(meta_path, 'w') as f:
        json.dump(meta, f)
    assert synthmotion_is_complete(out, seed=5)


class _Stop(Exception):
    pass


def _stop_after(clips):

    def progress(done, total):
        if done == clips:
            raise _Stop

    return progress


def test_interrupted_run_is_replaced_only_when_asked(tmp_path):
    """meta.json is written first: a run that stops half-way leaves a set
    that is not complete and that overwrite=True replaces."""
    out, fresh = str(tmp_path / 'set'), str(tmp_path / 'fresh')
    settings = dict(formats=('rawframes', 'videos'), num_train=4, num_val=2)
    with pytest.raises(_Stop):
        generate_synthmotion(out, progress=_stop_after(3), **settings)
    with open(osp.join(out, 'meta.json')) as f:
        assert json.load(f)['complete'] is False
    assert not synthmotion_is_complete(out)
    before = _tree_digest(out)
    with pytest.raises(OverwriteRefusedError, match='--force'):
        generate_synthmotion(out, **settings)
    assert _tree_digest(out) == before

    generate_synthmotion(out, overwrite=True, **settings)
    generate_synthmotion(fresh, **settings)
    assert synthmotion_is_complete(out)
    assert _tree_digest(out) == _tree_digest(fresh)


def test_a_meta_json_it_did_not_write_is_never_replaced(tmp_path):
    out = tmp_path / 'set'
    out.mkdir()
    (out / 'meta.json').write_text('{"my": "experiment"}')
    with pytest.raises(
            OverwriteRefusedError,
            match='not written by the SynthMotion generator'):
        generate_synthmotion(str(out), num_train=1, num_val=0, overwrite=True)
    assert (out / 'meta.json').read_text() == '{"my": "experiment"}'
    assert [p.name for p in out.iterdir()] == ['meta.json']


def test_overwrite_keeps_a_file_added_to_a_folder_it_wrote(tmp_path):
    out = tmp_path / 'set'
    generate_synthmotion(str(out), num_train=2, num_val=0)
    notes = out / 'rawframes' / 'train_00001' / 'notes.txt'
    notes.write_text('mine')
    generate_synthmotion(
        str(out), formats=('videos', ), num_train=1, num_val=0, overwrite=True)
    assert notes.read_text() == 'mine'
    assert [p.name for p in notes.parent.iterdir()] == ['notes.txt']
    assert [p.name for p in (out / 'rawframes').iterdir()] == ['train_00001']
    assert sorted(p.name for p in out.iterdir()) == [
        'label_map.txt', 'meta.json', 'rawframes',
        'synthmotion_train_list_videos.txt', 'synthmotion_val_list_videos.txt',
        'videos'
    ]


@pytest.mark.parametrize('kwargs, match',
                         [(dict(formats=('frames', )), 'formats'),
                          (dict(formats=()), 'formats'),
                          (dict(num_train=-1), 'num_train'),
                          (dict(min_frames=8, max_frames=4), 'min_frames'),
                          (dict(min_frames=1), 'min_frames'),
                          (dict(size=8), 'size')])
def test_generate_invalid(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_synthmotion(str(tmp_path / 'x'), **kwargs)


# --------------------------------------------------------------------- #
# loading through MMAction2's datasets and the SS pipelines
# --------------------------------------------------------------------- #
def _build(dataset_cfg):
    from mmaction.registry import DATASETS
    from mmaction.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    return DATASETS.build(dataset_cfg)


def test_dataset_is_registered_with_the_generator_classes(tiny_set):
    from mmaction.datasets import RawframeDataset
    from mmaction.registry import DATASETS
    assert DATASETS.get('SynthMotionDataset') is SynthMotionDataset
    dataset = _build(
        dict(
            type='SynthMotionDataset',
            ann_file=osp.join(tiny_set,
                              'synthmotion_train_list_rawframes.txt'),
            pipeline=[]))
    assert isinstance(dataset, RawframeDataset)
    assert isinstance(dataset, CheckedRawframeDataset)
    assert tuple(dataset.metainfo['classes']) == SYNTHMOTION_CLASSES
    assert tuple(dataset.metainfo['classes']) == tuple(
        read_label_map(osp.join(tiny_set, 'label_map.txt')))
    assert dataset.num_classes == len(SYNTHMOTION_CLASSES)
    # frames in rawframes/ next to the list, named {:05}.jpg
    assert len(dataset) == 12
    info = dataset.get_data_info(3)
    assert info['frame_dir'] == osp.join(tiny_set, 'rawframes', 'train_00003')
    assert info['filename_tmpl'] == '{:05}.jpg' and info['label'] == 3


def test_dataset_names_the_command_when_the_list_is_missing(tmp_path):
    missing = tmp_path / 'nowhere' / 'synthmotion_train_list_rawframes.txt'
    with pytest.raises(FileNotFoundError) as info:
        _build(
            dict(
                type='SynthMotionDataset', ann_file=str(missing), pipeline=[]))
    assert str(missing) in str(info.value)
    assert (f'{GENERATE_COMMAND} --out {tmp_path / "nowhere"}'
            in str(info.value))
    assert GENERATE_COMMAND == ('python tools/data/synthmotion/'
                                'generate_synthmotion.py')


def test_dataset_refuses_a_label_beyond_the_classes(tiny_set, tmp_path):
    ann = tmp_path / 'list.txt'
    ann.write_text('train_00000 2 10\n')
    with pytest.raises(AnnotationError, match='label 10'):
        _build(
            dict(
                type='SynthMotionDataset',
                ann_file=str(ann),
                data_prefix=dict(img=osp.join(tiny_set, 'rawframes')),
                pipeline=[]))


@pytest.mark.parametrize('split', ['train', 'val'])
@pytest.mark.parametrize('dataset_type', [None, 'SynthMotionDataset'])
def test_rawframes_load_with_config_pipelines(tiny_set, split, dataset_type):
    """The config's dataset, and SynthMotionDataset given the same
    arguments."""
    cfg = Config.fromfile(CONFIG)
    loader = cfg[f'{split}_dataloader']
    dataset_cfg = dict(loader['dataset'])
    dataset_cfg.update(
        ann_file=osp.join(tiny_set, f'synthmotion_{split}_list_rawframes.txt'),
        data_prefix=dict(img=osp.join(tiny_set, 'rawframes')))
    if dataset_type is not None:
        dataset_cfg['type'] = dataset_type
    dataset = _build(dataset_cfg)
    # the lines of a bad sample are named (CheckedRawframeDataset or a
    # subclass of it)
    assert isinstance(dataset, CheckedRawframeDataset)
    assert len(dataset) == (12 if split == 'train' else 10)
    crop = [t for t in cfg.val_pipeline
            if t['type'] == 'CenterCrop'][0]['crop_size']
    for i in range(3):
        item = dataset[i]
        assert tuple(item['inputs'].shape) == (8, 3, crop, crop)
        assert int(item['data_samples'].gt_label) == i % 10


def test_videos_load_with_ss_video_pipeline(tiny_set):
    pipeline = [
        dict(type='DecordInit'),
        dict(
            type='SampleFrames',
            clip_len=1,
            frame_interval=1,
            num_clips=8,
            test_mode=True),
        dict(type='DecordDecode'),
        dict(type='Resize', scale=(-1, 64)),
        dict(type='CenterCrop', crop_size=56),
        dict(type='FormatShape', input_format='NCHW'),
        dict(type='PackActionInputs')
    ]
    dataset = _build(
        dict(
            type='VideoDataset',
            ann_file=osp.join(tiny_set, 'synthmotion_val_list_videos.txt'),
            data_prefix=dict(video=osp.join(tiny_set, 'videos')),
            pipeline=pipeline,
            test_mode=True))
    assert len(dataset) == 10
    item = dataset[4]
    assert tuple(item['inputs'].shape) == (8, 3, 56, 56)
    assert int(item['data_samples'].gt_label) == 4


def test_video_frames_match_rawframes(tiny_set):
    import cv2
    import decord
    with open(osp.join(tiny_set, 'synthmotion_val_list_rawframes.txt')) as f:
        clip, num_frames, _ = f.readline().split()
    reader = decord.VideoReader(osp.join(tiny_set, 'videos', f'{clip}.mp4'))
    assert len(reader) == int(num_frames)
    video = reader.get_batch(list(range(len(reader)))).asnumpy()
    frames = np.stack([
        cv2.imread(osp.join(tiny_set, 'rawframes', clip,
                            f'{i:05}.jpg'))[..., ::-1]
        for i in range(1,
                       int(num_frames) + 1)
    ])
    assert video.shape == frames.shape == (int(num_frames), 64, 64, 3)
    # both are lossy encodings of the same frames
    assert np.abs(video.astype(int) - frames.astype(int)).mean() < 8
