# Copyright (c) mmrsa contributors. All rights reserved.
"""A video or frame folder shorter than one clip is named, not silently
padded (its frames are repeated to fill the clip)."""
import cv2
import mmengine.logging
import numpy as np
import pytest
from mmengine.config import Config
from run_helpers import DEMO_CONFIG

import mmrsa  # noqa: F401
from mmrsa.apis import load_input


@pytest.fixture
def said(monkeypatch):
    messages = []
    monkeypatch.setattr(mmengine.logging, 'print_log',
                        lambda message, **kwargs: messages.append(message))
    return messages


def _frames(n: int):
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(n)
    ]


@pytest.mark.parametrize('count, warned', [(1, True), (2, True), (7, True),
                                           (8, False)])
def test_short_frame_folder_is_named(tmp_path, said, count, warned):
    cfg = Config.fromfile(DEMO_CONFIG)  # num_segments = 8
    folder = tmp_path / 'clip'
    folder.mkdir()
    for i, frame in enumerate(_frames(count)):
        cv2.imwrite(str(folder / f'{i + 1:05}.jpg'), frame)
    data, _ = load_input(str(folder), cfg)
    assert data['total_frames'] == count
    short = [m for m in said if 'fewer than the 8 frames' in m]
    assert bool(short) is warned
    if warned:
        assert str(folder) in short[0] and f'has {count} frame' in short[0]


def test_short_video_is_named(tmp_path, said):
    cfg = Config.fromfile(DEMO_CONFIG)
    path = tmp_path / 'two.mp4'
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*'mp4v'), 8, (48, 32))
    for frame in _frames(2):
        writer.write(frame)
    writer.release()
    load_input(str(path), cfg)
    (line, ) = [m for m in said if 'fewer than' in m]
    assert str(path) in line and 'has 2 frame(s)' in line
