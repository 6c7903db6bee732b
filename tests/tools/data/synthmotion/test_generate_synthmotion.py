# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/data/synthmotion/generate_synthmotion.py, run as a command: it
writes a set, replaces a set it wrote only when told ``--force``, and never
overwrites or deletes a file it did not write."""
import json
import subprocess
import sys
from pathlib import Path

from mmrsa.datasets.synthmotion import synthmotion_is_complete

REPO_ROOT = Path(__file__).resolve().parents[4]
TOOL = REPO_ROOT / 'tools' / 'data' / 'synthmotion' / \
    'generate_synthmotion.py'


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), *args, '--quiet'],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300)


def test_writes_videos(tmp_path):
    out = str(tmp_path / 'cli')
    result = run('--out', out, '--format', 'videos', '--num-train', '3',
                 '--num-val', '2', '--seed', '4')
    assert result.returncode == 0, result.stderr
    assert 'wrote 3 + 2 clips' in result.stdout
    assert synthmotion_is_complete(out, seed=4, formats=('videos', ))


def test_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / 'synthmotion'
    small = ('--out', str(out), '--num-train', '2', '--num-val', '1')
    assert run(*small).returncode == 0
    frame = out / 'rawframes' / 'train_00000' / '00001.jpg'
    before = {p: p.read_bytes() for p in (frame, out / 'meta.json')}

    result = run(*small, '--seed', '1')
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert (f'error: {out} holds a SynthMotion set: {out / "meta.json"} '
            'already exists; pass --force (or --overwrite') in result.stderr
    assert {p: p.read_bytes() for p in before} == before

    assert run(*small, '--seed', '1', '--force').returncode == 0
    assert json.loads((out / 'meta.json').read_text())['seed'] == 1
    assert frame.read_bytes() != before[frame]
    # --overwrite is the same flag
    assert run(*small, '--seed', '2', '--overwrite').returncode == 0
    assert json.loads((out / 'meta.json').read_text())['seed'] == 2


def test_force_replaces_only_what_the_generator_wrote(tmp_path):
    """A user's clip folder under rawframes/ and a file next to the set are
    no obstacle, and survive --force byte for byte; a run with fewer clips
    removes the generator's own older clips (those its meta.json names)."""
    out = tmp_path / 'synthmotion'
    mine = out / 'rawframes' / 'my_real_video'
    mine.mkdir(parents=True)
    (mine / '00001.jpg').write_bytes(b'my frame')
    (out / 'notes.txt').write_bytes(b'my notes')
    result = run('--out', str(out), '--num-train', '3', '--num-val', '1')
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / 'meta.json').read_text())
    assert (meta['formats'], meta['num_train'], meta['num_val'],
            meta['complete']) == (['rawframes'], 3, 1, True)
    assert sorted(p.name for p in (out / 'rawframes').iterdir()) == [
        'my_real_video', 'train_00000', 'train_00001', 'train_00002',
        'val_00000'
    ]

    result = run('--out', str(out), '--num-train', '2', '--num-val', '1',
                 '--format', 'videos', '--force')
    assert result.returncode == 0, result.stderr
    assert (mine / '00001.jpg').read_bytes() == b'my frame'
    assert (out / 'notes.txt').read_bytes() == b'my notes'
    assert sorted(p.name
                  for p in (out / 'rawframes').iterdir()) == ['my_real_video']
    assert not (out / 'synthmotion_train_list_rawframes.txt').exists()
    assert sorted(p.name for p in (out / 'videos').iterdir()) == [
        'train_00000.mp4', 'train_00001.mp4', 'val_00000.mp4'
    ]
    assert synthmotion_is_complete(out, formats=('videos', ), num_train=2)


def test_foreign_files_are_refused_even_with_force(tmp_path):
    out = tmp_path / 'synthmotion'
    out.mkdir()
    label_map = out / 'label_map.txt'
    label_map.write_bytes(b'my class\nmy other class\n')
    result = run('--out', str(out), '--num-train', '2', '--num-val', '1',
                 '--force')
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert (f'error: {label_map} exists and was not written by the '
            'SynthMotion generator') in result.stderr
    assert 'not even with --force' in result.stderr
    assert label_map.read_bytes() == b'my class\nmy other class\n'
    assert sorted(p.name for p in out.iterdir()) == ['label_map.txt']

    # a user's folder where a clip would go, inside a set the generator
    # wrote: refused before anything is removed
    other = tmp_path / 'other'
    assert run('--out', str(other), '--num-train', '1', '--num-val',
               '0').returncode == 0
    before = {p: p.read_bytes() for p in other.rglob('*') if p.is_file()}
    clip = other / 'rawframes' / 'train_00001'
    clip.mkdir()
    (clip / '00001.jpg').write_bytes(b'my frame')
    result = run('--out', str(other), '--num-train', '2', '--num-val', '0',
                 '--force')
    assert result.returncode == 1
    assert f'{clip / "00001.jpg"}' in result.stderr
    assert 'was not written by the SynthMotion generator' in result.stderr
    assert (clip / '00001.jpg').read_bytes() == b'my frame'
    assert {p: p.read_bytes() for p in before} == before
