# Copyright (c) mmrsa contributors. All rights reserved.
"""``CheckedRawframeDataset`` / ``CheckedVideoDataset``: annotation lines
that point at missing frames or videos, an empty file, labels beyond
``num_classes`` and corrupt samples fail with the file and line named."""
import shutil

import pytest
from mmengine.registry import init_default_scope

import mmrsa  # noqa: F401
from mmaction.registry import DATASETS
from mmrsa.datasets import AnnotationError, SampleLoadError


def _pipeline(video: bool = False):
    steps = [
        dict(type='SampleFrames', clip_len=1, num_clips=8, test_mode=True),
        dict(type='DecordDecode' if video else 'RawFrameDecode'),
        dict(type='FormatShape', input_format='NCHW'),
        dict(type='PackActionInputs')
    ]
    return ([dict(type='DecordInit')] if video else []) + steps


def _rawframes(root, **kwargs):
    init_default_scope('mmaction')
    return DATASETS.build(
        dict(
            type='CheckedRawframeDataset',
            ann_file=str(root / 'synthmotion_val_list_rawframes.txt'),
            data_prefix=dict(img=str(root / 'rawframes')),
            filename_tmpl='{:05}.jpg',
            pipeline=_pipeline(),
            test_mode=True,
            **kwargs))


@pytest.fixture
def data_copy(synth_dir, tmp_path):
    root = tmp_path / 'synthmotion'
    shutil.copytree(synth_dir / 'data' / 'synthmotion', root)
    return root


def test_missing_frame_folder_is_found_when_the_dataset_is_built(data_copy):
    shutil.rmtree(data_copy / 'rawframes' / 'val_00002')
    with pytest.raises(AnnotationError) as info:
        _rawframes(data_copy)
    message = str(info.value)
    assert message.startswith(
        f'{data_copy}/synthmotion_val_list_rawframes.txt: 1 of 4 samples '
        f'point at missing data')
    assert (f'line 3: frame folder {data_copy}/rawframes/val_00002 does not '
            f'exist') in message


def test_wrong_frame_count_is_found_when_the_dataset_is_built(data_copy):
    (data_copy / 'rawframes' / 'val_00001' / '00016.jpg').unlink()
    with pytest.raises(AnnotationError) as info:
        _rawframes(data_copy)
    assert (
        f'line 2: frame {data_copy}/rawframes/val_00001/00016.jpg does '
        f"not exist (total_frames=16, filename_tmpl='{{:05}}.jpg')") in str(
            info.value)


def test_frame_missing_at_load_time_names_file_and_line(data_copy):
    dataset = _rawframes(data_copy)
    for i in range(2, 16):  # keep the first and last frame only
        (data_copy / 'rawframes' / 'val_00003' / f'{i:05}.jpg').unlink()
    with pytest.raises(SampleLoadError) as info:
        dataset[3]
    assert str(info.value).startswith(
        f'{data_copy}/synthmotion_val_list_rawframes.txt, line 4: cannot '
        f'load the frames in {data_copy}/rawframes/val_00003: '
        f'FileNotFoundError:')
    assert "No such file or directory: '" in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_missing_video_is_found_when_the_dataset_is_built(data_copy):
    (data_copy / 'videos' / 'val_00000.mp4').unlink()
    init_default_scope('mmaction')
    with pytest.raises(AnnotationError) as info:
        DATASETS.build(
            dict(
                type='CheckedVideoDataset',
                ann_file=str(data_copy / 'synthmotion_val_list_videos.txt'),
                data_prefix=dict(video=str(data_copy / 'videos')),
                pipeline=_pipeline(video=True),
                test_mode=True))
    assert (f'line 1: video {data_copy}/videos/val_00000.mp4 does not exist'
            in str(info.value))


def test_corrupt_video_names_file_and_line(data_copy):
    video = data_copy / 'videos' / 'val_00001.mp4'
    video.write_bytes(video.read_bytes()[:2000])  # truncated
    init_default_scope('mmaction')
    dataset = DATASETS.build(
        dict(
            type='CheckedVideoDataset',
            ann_file=str(data_copy / 'synthmotion_val_list_videos.txt'),
            data_prefix=dict(video=str(data_copy / 'videos')),
            pipeline=_pipeline(video=True),
            test_mode=True))
    assert dataset[0]['inputs'].shape[0] == 8
    with pytest.raises(SampleLoadError) as info:
        dataset[1]
    assert str(info.value).startswith(
        f'{data_copy}/synthmotion_val_list_videos.txt, line 2: cannot load '
        f'the video {video}:')


def test_unparsable_annotation_line(data_copy):
    ann = data_copy / 'synthmotion_val_list_rawframes.txt'
    lines = ann.read_text().splitlines()
    lines[2] = 'val_00002 sixteen 2'
    ann.write_text('\n'.join(lines) + '\n')
    with pytest.raises(AnnotationError) as info:
        _rawframes(data_copy)
    assert str(info.value) == (
        f"{ann}, line 3: cannot parse 'val_00002 sixteen 2': expected "
        f'"<frame_dir> <total_frames> <label>" with integer numbers')


def test_empty_annotation_file(data_copy):
    ann = data_copy / 'synthmotion_val_list_rawframes.txt'
    ann.write_text('')
    with pytest.raises(AnnotationError) as info:
        _rawframes(data_copy)
    assert str(
        info.value).startswith(f'{ann} is empty: it has no annotation lines.')


def test_label_outside_num_classes_names_the_line(data_copy):
    ann = data_copy / 'synthmotion_val_list_rawframes.txt'
    lines = ann.read_text().splitlines()
    frame_dir, frames, _ = lines[1].split()
    lines[1] = f'{frame_dir} {frames} 99'
    ann.write_text('\n'.join(lines) + '\n')
    with pytest.raises(AnnotationError) as info:
        _rawframes(data_copy, num_classes=10)
    assert str(info.value).startswith(
        f'{ann}: 1 of 4 samples have a label outside [0, 10) '
        f'(num_classes=10):\n  line 2: label 99')
    _rawframes(data_copy, num_classes=100)  # in range: fine


def _set_label(ann, line: int, label: int) -> None:
    """Give line ``line`` (0-based) of ``ann`` the label ``label``."""
    lines = ann.read_text().splitlines()
    frame_dir, frames, _ = lines[line].split()
    lines[line] = f'{frame_dir} {frames} {label}'
    ann.write_text('\n'.join(lines) + '\n')


@pytest.mark.parametrize('label', [10, -1])
def test_label_just_outside_num_classes_names_the_line(data_copy, label):
    """The first labels outside [0, 10): 10 (== num_classes) and -1."""
    ann = data_copy / 'synthmotion_val_list_rawframes.txt'
    _set_label(ann, 2, label)
    with pytest.raises(AnnotationError) as info:
        _rawframes(data_copy, num_classes=10)
    assert str(info.value).startswith(
        f'{ann}: 1 of 4 samples have a label outside [0, 10) '
        f'(num_classes=10):\n  line 3: label {label}\n')


def test_labels_at_both_ends_of_the_range_are_fine(data_copy):
    ann = data_copy / 'synthmotion_val_list_rawframes.txt'
    _set_label(ann, 0, 0)
    _set_label(ann, 3, 9)
    dataset = _rawframes(data_copy, num_classes=10)
    assert [dataset.get_data_info(i)['label'] for i in (0, 3)] == [0, 9]
    # one class fewer: 9 is outside [0, 9)
    with pytest.raises(AnnotationError, match=r'(?m)^  line 4: label 9$'):
        _rawframes(data_copy, num_classes=9)


def test_same_samples_as_mmaction2_datasets(data_copy):
    """The checked datasets are MMAction2's, with line numbers added."""
    checked = _rawframes(data_copy)
    plain = DATASETS.build(
        dict(
            type='RawframeDataset',
            ann_file=str(data_copy / 'synthmotion_val_list_rawframes.txt'),
            data_prefix=dict(img=str(data_copy / 'rawframes')),
            filename_tmpl='{:05}.jpg',
            pipeline=_pipeline(),
            test_mode=True))
    assert len(checked) == len(plain) == 4
    for i in range(4):
        a, b = checked.get_data_info(i), plain.get_data_info(i)
        assert a.pop('ann_line') == i + 1
        assert a == b
