# Copyright (c) mmrsa contributors. All rights reserved.
"""mmrsa.analysis.paper_tables: the paper's rows, their configs, the
comparison; ``-m slow`` counts every row."""
from pathlib import Path

import pytest

from mmrsa.analysis import (ComplexityCounter, config_complexity, load_config,
                            paper_tables)

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = 'configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py'


@pytest.fixture(scope='module')
def counter():
    return ComplexityCounter(threads=1)


def test_every_paper_row_has_its_config():
    rows = [row for _, rows in paper_tables.PAPER_TABLES for row in rows]
    assert len(rows) == 47
    for row in rows:
        assert (REPO_ROOT / row.config).is_file(), row.config
        assert row.flops > 0 and row.params > 0


def test_paper_rows_are_compared_within_the_tolerances(monkeypatch, counter):
    small = config_complexity(SMALL, counter=counter, shape=[224])
    flops, params = small['flops'] / 1e9, small['params'] / 1e6
    table = ('Test table', (
        paper_tables.PaperRow('exact', SMALL, round(flops, 1),
                              round(params, 1)),
        paper_tables.PaperRow('off', SMALL, flops + 1., params, note='why'),
    ))
    monkeypatch.setattr(paper_tables, 'PAPER_TABLES', (table, ))
    lines = []
    rows = paper_tables.paper_table_rows(counter, progress=lines.append)
    assert [r['ok'] for r in rows] == [True, False]
    assert len(lines) == 2 and 'counted Test table / exact' in lines[0]
    text = paper_tables.format_paper_tables(rows)
    assert 'OFF [1]' in text and '[1] why' in text
    assert '1 of 2 rows within 0.1 M parameters and 0.15 GFLOPs' in text


def test_3d_convolution_row_of_table_2(counter):
    """The paper's 3D-convolution row (57.0 G, 39.3 M), on which the
    explanation of its 2D row rests."""
    row = paper_tables.PAPER_TABLES[0][1][1]
    assert row.label.startswith('3D convolution')
    cfg = load_config(row.config)
    params, flops = counter.count(cfg, (8, 3, 224, 224), row.swap)
    assert abs(flops / 1e9 - row.flops) <= 0.15
    assert abs(params / 1e6 - row.params) <= 0.1


@pytest.mark.parametrize(
    'label', ['self-attention σ(qK^T + qP^T)', 'SA variant qP^T (involution)'])
def test_attention_rows_of_table_2_are_counted_from_their_configs(
        counter, label):
    """Table 2's self-attention rows come from real configs (one layer in
    res4), not from a FLOPs-only swap, and match the paper."""
    row = {r.label: r for r in paper_tables.PAPER_TABLES[0][1]}[label]
    assert row.swap is None and '/transforms/' in row.config
    cfg = load_config(row.config)
    params, flops = counter.count(cfg, (8, 3, 224, 224))
    assert abs(flops - row.flops * 1e9) <= paper_tables.FLOPS_TOL
    assert abs(params - row.params * 1e6) <= paper_tables.PARAMS_TOL


@pytest.mark.slow
def test_every_paper_row_is_within_tolerance_or_explained(counter):
    rows = paper_tables.paper_table_rows(counter)
    off = [(r['table'], r['label']) for r in rows if not r['ok']]
    tables = paper_tables.PAPER_TABLES
    assert off == [(tables[0][0], '2D convolution (TSN)'), (tables[6][0], '0')]
    assert all(r['note'] == paper_tables._2D_NOTE for r in rows if not r['ok'])
