# Copyright (c) mmrsa contributors. All rights reserved.
"""Tests for ``mmrsa.datasets.transforms.flip``."""
import json

import numpy as np
import pytest

import mmrsa  # noqa: F401  (registers the transform)
from mmaction.registry import TRANSFORMS
from mmrsa.datasets import (LabelAwareFlip, direction_label_ids,
                            read_label_names)

SSV2_LEFT_RIGHT = (86, 87, 93, 94, 166, 167)


def clip(label, width=6):
    """A 2-frame clip whose pixels encode their column."""
    img = np.tile(np.arange(width, dtype=np.uint8)[None, :, None], (4, 1, 3))
    return dict(
        imgs=[img.copy(), img.copy()],
        label=label,
        img_shape=(4, width),
        modality='RGB')


def is_flipped(results):
    return results['imgs'][0][0, 0, 0] != 0


def test_protected_labels_are_never_flipped():
    flip = TRANSFORMS.build(
        dict(
            type='LabelAwareFlip',
            flip_ratio=1.0,
            no_flip_labels=SSV2_LEFT_RIGHT))
    assert isinstance(flip, LabelAwareFlip)
    np.random.seed(0)
    for label in SSV2_LEFT_RIGHT:
        for _ in range(20):
            results = flip(clip(label))
            assert not is_flipped(results)
            assert results['flip'] is False and results['label'] == label
    assert flip.flip_ratio == 1.0  # restored after a protected clip


def test_other_labels_flip_with_flip_ratio():
    np.random.seed(0)
    always = LabelAwareFlip(flip_ratio=1.0, no_flip_labels=SSV2_LEFT_RIGHT)
    results = always(clip(np.int64(5)))
    assert is_flipped(results) and results['flip'] and results['label'] == 5
    half = LabelAwareFlip(flip_ratio=0.5, no_flip_labels=SSV2_LEFT_RIGHT)
    flips = [is_flipped(half(clip(3))) for _ in range(400)]
    assert 0.4 < np.mean(flips) < 0.6


def test_multi_label_clip_with_a_protected_label():
    flip = LabelAwareFlip(flip_ratio=1.0, no_flip_labels=(86, ))
    assert not is_flipped(flip(clip(np.array([3, 86]))))
    assert is_flipped(flip(clip(np.array([3, 4]))))


def test_lazy_mode_records_no_flip():
    flip = LabelAwareFlip(flip_ratio=1.0, no_flip_labels=(86, ), lazy=True)
    results = clip(86)
    results['lazy'] = dict(flip=False, flip_direction=None)
    assert flip(results)['lazy']['flip'] is False


def test_ids_from_ssv2_labels_json(tmp_path):
    names = {
        'Approaching something with your camera': '0',
        'Pulling something from left to right': '86',
        'Pulling something from right to left': '87',
        'Putting something upright on the table': '100',
        'Turning the camera left while filming something': '166',
        'Turning the camera right while filming something': '167',
    }
    path = tmp_path / 'something-something-v2-labels.json'
    path.write_text(json.dumps(names))
    assert read_label_names(
        str(path))[86] == ('Pulling something from left to right')
    # "upright" is not the word "right"
    assert direction_label_ids(str(path)) == (86, 87, 166, 167)
    flip = LabelAwareFlip(label_file=str(path), no_flip_labels=(93, 94))
    assert flip.no_flip_labels == {86, 87, 93, 94, 166, 167}


def test_ids_from_a_csv_of_names_in_line_order(tmp_path):
    # the first lines of Something-Something V1's label file; MMAction2's
    # sthv1 lists number the classes by line
    path = tmp_path / 'something-something-v1-labels.csv'
    path.write_text('Holding something\n'
                    'Turning something upside down\n'
                    'Turning the camera left while filming something\n'
                    'Stacking number of something\n'
                    'Turning the camera right while filming something\n\n')
    assert direction_label_ids(str(path)) == (2, 4)
    assert direction_label_ids(str(path), keywords=('upside', )) == (1, )


def test_ids_from_a_json_list(tmp_path):
    path = tmp_path / 'names.json'
    path.write_text(json.dumps(['a', 'Moving left', 'b']))
    assert direction_label_ids(str(path)) == (1, )


def test_needs_labels_or_a_label_file():
    with pytest.raises(ValueError, match='no_flip_labels, label_file'):
        LabelAwareFlip()


def test_no_flip_labels_must_be_ids():
    with pytest.raises(ValueError, match='sequence of int'):
        LabelAwareFlip(no_flip_labels='86')


def test_flip_label_map_is_refused():
    with pytest.raises(ValueError, match='flip_label_map'):
        LabelAwareFlip(no_flip_labels=(86, ), flip_label_map={86: 87})


def test_missing_label_file():
    with pytest.raises(ValueError, match='does not exist'):
        LabelAwareFlip(label_file='no/such/labels.csv')


def test_keywords_must_be_words():
    with pytest.raises(ValueError, match='keywords'):
        direction_label_ids('unused.csv', keywords='left')
