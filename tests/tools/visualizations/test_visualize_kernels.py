# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/visualizations/visualize_kernels.py, run as a command."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from mmrsa.datasets.synthmotion import SYNTHMOTION_CLASSES, render_clip

REPO_ROOT = Path(__file__).resolve().parents[3]
TOOL = REPO_ROOT / 'tools' / 'visualizations' / 'visualize_kernels.py'
CONFIG = REPO_ROOT / 'configs' / 'recognition' / 'rsanet' / \
    'rsanet_r18_8x1_synthmotion.py'


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=600)


def test_video_file_layer_and_queries(tmp_path):
    frames = render_clip(
        SYNTHMOTION_CLASSES.index('Moving something up'),
        np.random.default_rng(5),
        size=64,
        num_frames=16)
    video = tmp_path / 'up.mp4'
    writer = cv2.VideoWriter(
        str(video), cv2.VideoWriter_fourcc(*'mp4v'), 8, (64, 64))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / 'out'
    result = run(
        str(CONFIG), 'none', str(video), '--out', str(out), '--layer',
        'layer1.1', '--query', '2', '1', '3', '--queries', '0', '7')
    assert result.returncode == 0, result.stderr
    assert 'layer layer1.1, query (t, h, w) = (2, 1, 3), queries [0, 7]' \
        in result.stdout
    assert 'relational kernel change under time reversal' in result.stdout
    arrays = np.load(out / 'kernels.npz')
    assert tuple(arrays['position']) == (2, 1, 3)
    assert arrays['relational'].shape == (8, 5, 3, 3)  # 8x8 map of layer1

    result = run(
        str(CONFIG), 'none', str(tmp_path / 'nothing'), '--out',
        str(tmp_path / 'out2'))
    assert result.returncode == 1
    assert 'error: ' in result.stderr and 'no such file' in result.stderr


def _frames_folder(path: Path) -> Path:
    frames = render_clip(
        SYNTHMOTION_CLASSES.index('Moving something up'),
        np.random.default_rng(5),
        size=64,
        num_frames=8)
    path.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(path / f'img_{i + 1:05}.jpg'), frame[..., ::-1])
    return path


def test_earlier_pictures_are_kept_unless_force(tmp_path):
    frames = _frames_folder(tmp_path / 'frames')
    out = tmp_path / 'out'
    out.mkdir()
    earlier = out / 'figure.png'
    earlier.write_bytes(b'the picture of an earlier run')
    notes = out / 'notes.txt'
    notes.write_bytes(b'my notes')
    result = run(str(CONFIG), 'none', str(frames), '--out', str(out))
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert f'error: {out} already holds figure.png' in result.stderr
    assert 'pass --force' in result.stderr
    assert earlier.read_bytes() == b'the picture of an earlier run'
    assert notes.read_bytes() == b'my notes'
    assert sorted(p.name for p in out.iterdir()) == ['figure.png', 'notes.txt']

    result = run(
        str(CONFIG), 'none', str(frames), '--out', str(out), '--force')
    assert result.returncode == 0, result.stderr
    assert earlier.read_bytes()[:4] == b'\x89PNG'
    assert notes.read_bytes() == b'my notes'
    assert len(list(out.iterdir())) == 8


def test_bad_checkpoint_files_are_named_without_a_traceback(tmp_path):
    frames = _frames_folder(tmp_path / 'frames')
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    truncated = tmp_path / 'truncated.pth'
    import torch
    torch.save({'state_dict': {'w': torch.ones(64, 64)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    no_weights = tmp_path / 'list.pth'
    torch.save([1, 2, 3], no_weights)
    for path, what in ((empty, 'is empty (0 bytes)'),
                       (truncated, 'is truncated or not a checkpoint'),
                       (no_weights, 'is not an mmrsa checkpoint')):
        out = tmp_path / f'out_{path.stem}'
        result = run(str(CONFIG), str(path), str(frames), '--out', str(out))
        assert result.returncode == 1, result.stdout
        assert 'Traceback' not in result.stderr, result.stderr
        (line, ) = [
            x for x in result.stderr.splitlines() if x.startswith('error:')
        ]
        assert str(path) in line and what in line, line
        assert not out.exists()


def test_trust_pickle_admits_a_checkpoint_you_trust(tmp_path):
    """A checkpoint that pickles an object the safe loader does not know is
    refused, with the opt-in named; ``--trust-pickle`` reads it."""
    from fractions import Fraction

    import torch
    from mmengine.config import Config

    from mmrsa.visualization import kernels
    frames = _frames_folder(tmp_path / 'frames')
    model = kernels.build_model(Config.fromfile(str(CONFIG)), 'none')
    checkpoint = tmp_path / 'mine.pth'
    torch.save(
        dict(meta=dict(score=Fraction(1, 3)), state_dict=model.state_dict()),
        checkpoint)
    result = run(
        str(CONFIG), str(checkpoint), str(frames), '--out',
        str(tmp_path / 'refused'))
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr, result.stderr
    assert 'fractions.Fraction' in result.stderr
    assert '--trust-pickle' in result.stderr
    assert not (tmp_path / 'refused').exists()
    result = run(
        str(CONFIG), str(checkpoint), str(frames), '--out',
        str(tmp_path / 'trusted'), '--trust-pickle')
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'trusted' / 'kernels.npz').is_file()
