# Copyright (c) mmrsa contributors. All rights reserved.
"""mmrsa.analysis.complexity: counting configs, shapes and views, the cache.

Counting a ResNet-50 takes seconds on a CPU, so these count the small
SynthMotion RSANet-R18 and one ResNet-50 row.
"""
import json

import pytest
import torch

from mmrsa.analysis import (ComplexityCounter, FrameConv3d,
                            clip_shape_from_args, config_complexity,
                            config_frame_size, config_frames, flops_table,
                            load_config, views_per_video)
from mmrsa.models.utils import count_flops

SMALL = 'configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py'


@pytest.fixture(scope='module')
def counter():
    return ComplexityCounter(threads=1)


def test_config_counts_one_clip_of_its_test_input(counter):
    result = config_complexity(SMALL, counter=counter)
    assert result['clip_shape'] == [8, 3, 32, 32]
    assert (result['gflops'], result['mparams']) == (0.25, 8.75)
    assert (result['clips'], result['crops']) == (1, 1)


def test_shapes_and_cache(tmp_path, counter):
    cfg = load_config(SMALL)
    for shape in ([8, 3, 112, 112], [112], [112, 112]):
        assert clip_shape_from_args(cfg, shape) == (8, 3, 112, 112)
    assert clip_shape_from_args(cfg, None) == (8, 3, 32, 32)
    with pytest.raises(ValueError, match='without the batch dimension'):
        clip_shape_from_args(cfg, [1, 8, 3, 224, 224])

    cache = tmp_path / 'flops.json'
    large = config_complexity(
        SMALL, shape=[112], counter=ComplexityCounter(str(cache)))
    small = config_complexity(SMALL, counter=counter)
    assert large['flops'] > 3.5 * small['flops']  # ~4x the positions
    assert large['params'] == small['params']
    stored = json.loads(cache.read_text())
    assert len(stored['results']) == 1 and stored['fingerprint']
    # a new counter reads the cache instead of counting
    again = ComplexityCounter(str(cache))
    assert list(again.results.values()) == [[large['params'], large['flops']]]


def test_per_module_table():
    cfg = load_config(SMALL)
    text = flops_table(cfg, (8, 3, 32, 32), max_depth=2)
    assert 'backbone.layer2' in text and 'cls_head' in text


def test_2_clip_configs_report_views():
    cfg = load_config('configs/recognition/rsanet/rsanet_r50_16x2_ssv1.py')
    assert config_frames(cfg) == 16
    assert views_per_video(cfg) == (2, 1)
    assert config_frame_size(cfg) == (224, 224)


def test_static_transforms_of_table_2_count_as_their_convolutions():
    conv = FrameConv3d(4, ((5, 7, 7), ), num_segments=8)
    flops = count_flops(conv, (torch.randn(16, 4, 6, 6), ))
    assert flops == 4 * 4 * 5 * 7 * 7 * (2 * 8 * 6 * 6)
    conv = FrameConv3d(4, ((1, 7, 7), (5, 1, 1)), num_segments=8)
    flops = count_flops(conv, (torch.randn(16, 4, 6, 6), ))
    assert flops == 4 * 4 * (49 + 5) * (2 * 8 * 6 * 6)
