# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/analysis_tools/get_flops.py: counting, shapes and the paper tables.

Counting a ResNet-50 takes seconds on a CPU, so the non-slow tests count the
small SynthMotion RSANet-R18 and one ResNet-50 row; ``-m slow`` checks every
row of ``--paper-tables``.
"""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import mmrsa  # noqa: F401
from mmrsa.models.utils import count_flops

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = 'configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py'


def _load_tool():
    path = REPO_ROOT / 'tools' / 'analysis_tools' / 'get_flops.py'
    spec = importlib.util.spec_from_file_location('get_flops_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture(scope='module')
def counter():
    return tool.ComplexityCounter(threads=1)


def test_config_counts_one_clip_of_its_test_input(capsys):
    assert tool.main([SMALL]) == 0
    out = capsys.readouterr().out
    assert 'one clip of 8 x 3 x 32 x 32' in out
    assert 'FLOPs       0.25 G per clip' in out
    assert 'params      8.75 M' in out
    assert 'test views  1 clip(s) x 1 crop(s)' in out


def test_shapes_json_and_cache(tmp_path, capsys):
    cache = tmp_path / 'flops.json'
    results = []
    for shape in (['8', '3', '112', '112'], ['112'], ['112', '112']):
        assert tool.main([SMALL, '--json', '--cache', str(cache), '--shape'] +
                         shape) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert all(r['clip_shape'] == [8, 3, 112, 112] for r in results)
    assert len({r['flops'] for r in results}) == 1
    small = tool.config_complexity(SMALL)
    assert results[0]['flops'] > 3.5 * small['flops']  # ~4x the positions
    assert results[0]['params'] == small['params']
    stored = json.loads(cache.read_text())
    assert len(stored['results']) == 1 and stored['fingerprint']
    # the batch dimension is added by the tool
    assert tool.main([SMALL, '--shape', '1', '8', '3', '224', '224']) == 2
    assert 'without the batch dimension' in capsys.readouterr().err


def test_per_module_table(capsys):
    assert tool.main([SMALL, '--table', '2']) == 0
    out = capsys.readouterr().out
    assert 'backbone.layer2' in out and 'cls_head' in out


def test_2_clip_configs_report_views():
    cfg = tool.load_config(
        'configs/recognition/rsanet/rsanet_r50_16x2_ssv1.py')
    assert tool.config_frames(cfg) == 16
    assert tool.views_per_video(cfg) == (2, 1)
    assert tool.config_frame_size(cfg) == (224, 224)


def test_static_transforms_of_table_2_count_as_their_convolutions():
    conv = tool.FrameConv3d(4, ((5, 7, 7), ), num_segments=8)
    flops = count_flops(conv, (torch.randn(16, 4, 6, 6), ))
    assert flops == 4 * 4 * 5 * 7 * 7 * (2 * 8 * 6 * 6)
    conv = tool.FrameConv3d(4, ((1, 7, 7), (5, 1, 1)), num_segments=8)
    flops = count_flops(conv, (torch.randn(16, 4, 6, 6), ))
    assert flops == 4 * 4 * (49 + 5) * (2 * 8 * 6 * 6)


def test_every_paper_row_has_its_config():
    rows = [row for _, rows in tool.PAPER_TABLES for row in rows]
    assert len(rows) == 43
    for row in rows:
        assert (REPO_ROOT / row.config).is_file(), row.config
        assert row.flops > 0 and row.params > 0


def test_paper_rows_are_compared_within_the_tolerances(monkeypatch, counter):
    small = tool.config_complexity(SMALL, counter=counter, shape=[224])
    flops, params = small['flops'] / 1e9, small['params'] / 1e6
    table = ('Test table', (
        tool.PaperRow('exact', SMALL, round(flops, 1), round(params, 1)),
        tool.PaperRow('off', SMALL, flops + 1., params, note='why'),
    ))
    monkeypatch.setattr(tool, 'PAPER_TABLES', (table, ))
    rows = tool.paper_table_rows(counter, progress=False)
    assert [r['ok'] for r in rows] == [True, False]
    text = tool.format_paper_tables(rows)
    assert 'OFF [1]' in text and '[1] why' in text
    assert '1 of 2 rows within 0.1 M parameters and 0.15 GFLOPs' in text


def test_3d_convolution_row_of_table_2(counter):
    """The paper's 3D-convolution row (57.0 G, 39.3 M), on which the
    explanation of its 2D row rests."""
    row = tool.PAPER_TABLES[0][1][1]
    assert row.label.startswith('3D convolution')
    cfg = tool.load_config(row.config)
    params, flops = counter.count(cfg, (8, 3, 224, 224), row.swap)
    assert abs(flops / 1e9 - row.flops) <= 0.15
    assert abs(params / 1e6 - row.params) <= 0.1


@pytest.mark.slow
def test_every_paper_row_is_within_tolerance_or_explained(counter):
    rows = tool.paper_table_rows(counter, progress=False)
    off = [(r['table'], r['label']) for r in rows if not r['ok']]
    assert off == [(tool.PAPER_TABLES[0][0], '2D convolution (TSN)'),
                   (tool.PAPER_TABLES[6][0], '0')]
    assert all(r['note'] == tool._2D_NOTE for r in rows if not r['ok'])
