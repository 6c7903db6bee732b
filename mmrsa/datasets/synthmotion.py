# Copyright (c) mmrsa contributors. All rights reserved.
"""SynthMotion: a procedurally generated, Something-Something-like motion
set: its classes, its generator and its dataset.

Every class is defined by *how* an object moves, never by what it looks like:
the object (a handwritten digit from scikit-learn's bundled ``load_digits``
images, drawn as a glyph or cut out of a disc, square, triangle or diamond),
its colour and size, the background, the start position and the speed
profile are drawn at random for every clip. Four pairs of classes are exact
time reversals of each other::

    Moving something from left to right   <->  ... from right to left
    Moving something up                   <->  Moving something down
    Moving something towards the camera   <->  ... away from the camera
    Rotating something clockwise          <->  ... anticlockwise

A clip of the second class of a pair is rendered by drawing a clip of the first
class and playing it backwards, so the two classes have the same distribution
of *unordered* frames: a model that pools frames without regard to their order
(TSN) is at chance within each pair, while a model that relates frames in time
(TSM, RSA) is not. Two more classes, ``Holding something still`` and
``Shaking something``, differ in motion but not in direction.

:func:`generate_synthmotion` (command line:
``tools/data/synthmotion/generate_synthmotion.py``) writes the set in the
layouts of the Something-Something recipes, and :class:`SynthMotionDataset`
(registered in MMAction2's ``DATASETS``) reads the rawframe one:

.. code-block:: text

    <out>/rawframes/<clip>/00001.jpg ...   as SSv1
    <out>/videos/<clip>.mp4                as SSv2 (mp4v, read by decord)
    <out>/synthmotion_{train,val}_list_rawframes.txt
                                           lines "<clip> <num_frames> <label>"
    <out>/synthmotion_{train,val}_list_videos.txt
                                           lines "<clip>.mp4 <label>"
    <out>/label_map.txt                    one class name per line
    <out>/meta.json                        settings, pairs, flip map

Clips are named ``<split>_<index:05>`` and have label ``index % 10``.

Every clip is drawn from its own random stream seeded by ``(seed, split,
index)``, so a clip does not depend on how many others are generated, and the
same settings give byte-identical files. The settings in ``meta.json`` thus
name every path a run wrote, and are the generator's record of what is its
own: it never overwrites or deletes a path that the ``meta.json`` of a set it
wrote in the folder does not name (see :func:`generate_synthmotion`).
"""
from __future__ import annotations
import json
import numbers
import os
import os.path as osp
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import cv2
import numpy as np

from mmaction.registry import DATASETS
from ..fileio.atomic import (OverwriteRefusedError, refuse_existing,
                             write_bytes_atomic)
from .annotation_checks import CheckedRawframeDataset

__all__ = [
    'SYNTHMOTION_CLASSES', 'REVERSED_PAIRS', 'HFLIP_LABEL_MAP',
    'GENERATOR_VERSION', 'GENERATE_COMMAND', 'render_clip',
    'generate_synthmotion', 'read_label_map', 'synthmotion_is_complete',
    'SynthMotionDataset'
]

GENERATOR_VERSION = 1

#: The command line of :func:`generate_synthmotion`.
GENERATE_COMMAND = 'python tools/data/synthmotion/generate_synthmotion.py'

SYNTHMOTION_CLASSES: Tuple[str, ...] = (
    'Moving something from left to right',
    'Moving something from right to left',
    'Moving something up',
    'Moving something down',
    'Moving something towards the camera',
    'Moving something away from the camera',
    'Rotating something clockwise',
    'Rotating something anticlockwise',
    'Holding something still',
    'Shaking something',
)

# (forward class, its time reversal): the second is rendered as the first
# played backwards.
REVERSED_PAIRS: Tuple[Tuple[int, int], ...] = ((0, 1), (2, 3), (4, 5), (6, 7))

# What a horizontal flip does to a label: left<->right and clockwise<->
# anticlockwise swap, every other class is unchanged. Usable as MMAction2's
# ``Flip(flip_label_map=...)``.
HFLIP_LABEL_MAP: Dict[int, int] = {0: 1, 1: 0, 6: 7, 7: 6}

_SPLIT_CODES = {'train': 0, 'val': 1}
_FORMATS = ('rawframes', 'videos')


@lru_cache(maxsize=1)
def _digit_images() -> np.ndarray:
    """The 1797 8x8 handwritten digits bundled with scikit-learn, in [0, 1]."""
    from sklearn.datasets import load_digits  # local: slow import, offline
    return (load_digits().images / 16.0).astype(np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _random_colour(rng: np.random.Generator, lo: float,
                   hi: float) -> np.ndarray:
    """A random colour whose luma is about ``[lo, hi]`` (values in [0, 1])."""
    hue = rng.uniform(0.0, 6.0)
    sat = rng.uniform(0.3, 1.0)
    # hue wheel -> pure RGB, then mix towards grey by 1 - saturation
    i = int(hue) % 6
    f = hue - int(hue)
    pure = [(1, f, 0), (1 - f, 1, 0), (0, 1, f), (0, 1 - f, 1), (f, 0, 1),
            (1, 0, 1 - f)][i]
    rgb = sat * np.array(pure, np.float32) + (1 - sat) * 0.5
    target = rng.uniform(lo, hi)
    # shift to the target luma, keeping the hue as far as the clip allows
    rgb = np.clip(rgb + (target - _luma(rgb)), 0.0, 1.0)
    return rgb.astype(np.float32)


def _background(rng: np.random.Generator,
                size: int) -> Tuple[np.ndarray, bool]:
    """A random static background and whether it is dark.

    A random dark or light colour with a faint smooth texture: colour noise
    or a gradient at a random angle.

    Returns:
        tuple: ``[size, size, 3]`` float32 RGB in [0, 1], and a bool that is
        True for a dark background (the object is then drawn light).
    """
    dark = bool(rng.random() < 0.5)
    lo, hi = (0.05, 0.25) if dark else (0.75, 0.95)
    base = _random_colour(rng, lo, hi)
    amp = rng.uniform(0.02, 0.06)
    if rng.random() < 0.5:  # smooth colour noise
        cells = int(rng.integers(2, 5))
        grid = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
        tex = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    else:  # linear gradient at a random angle
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
        ang = rng.uniform(0, 2 * np.pi)
        ramp = 2 * (np.cos(ang) * xx + np.sin(ang) * yy)
        tex = ramp[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)
    return np.clip(base + amp * tex, 0, 1).astype(np.float32), dark


def _sprite(rng: np.random.Generator, size: int, dark_bg: bool) -> np.ndarray:
    """An object with a digit in it on a transparent square, ``[n, n, 4]``.

    Either a handwritten digit (one of scikit-learn's bundled 8x8 images,
    upscaled) drawn as a glyph, or a disc / square / triangle / diamond with
    that digit cut out of it, so that its rotation is visible. One random
    colour whose luma contrasts with the background. The canvas is padded so
    rotation does not clip.
    """
    digits = _digit_images()
    n = size
    pad = int(np.ceil(n * 0.25))
    full = n + 2 * pad
    glyph = cv2.resize(
        digits[rng.integers(len(digits))], (n, n),
        interpolation=cv2.INTER_CUBIC)
    glyph = np.clip(glyph * 1.6, 0, 1)
    lo, hi = (0.75, 1.0) if dark_bg else (0.0, 0.25)
    colour = _random_colour(rng, lo, hi)
    kind = rng.integers(5)
    if kind == 0:  # the digit itself
        alpha = glyph
    else:
        # anti-aliased shape mask, drawn at 4x and shrunk
        big = np.zeros((4 * n, 4 * n), np.uint8)
        c, r = 2 * n, int(1.9 * n)
        if kind == 1:
            cv2.circle(big, (c, c), r, 255, -1)
        elif kind == 2:
            big[c - int(0.85 * r):c + int(0.85 * r),
                c - int(0.85 * r):c + int(0.85 * r)] = 255
        elif kind == 3:
            tri = np.array([[c, c - r], [c - r, c + int(0.8 * r)],
                            [c + r, c + int(0.8 * r)]], np.int32)
            cv2.fillPoly(big, [tri], 255)
        else:
            dia = np.array([[c, c - r], [c + int(0.75 * r), c], [c, c + r],
                            [c - int(0.75 * r), c]], np.int32)
            cv2.fillPoly(big, [dia], 255)
        shape = cv2.resize(big, (n, n), interpolation=cv2.INTER_AREA)
        # the digit is cut out of the shape (the background shows through)
        alpha = shape.astype(np.float32) / 255.0 * (1 - 0.8 * glyph)
    sprite = np.zeros((full, full, 4), np.float32)
    sprite[pad:pad + n, pad:pad + n, :3] = colour
    sprite[pad:pad + n, pad:pad + n, 3] = alpha
    return sprite


def _ease(u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random monotone time warp of ``u`` in [0, 1] (speed not constant)."""
    a = rng.uniform(-0.8, 0.8)
    return u + a * np.sin(2 * np.pi * u) / (2 * np.pi)


def _trajectory(label: int, rng: np.random.Generator, num_frames: int,
                size: int) -> Tuple[np.ndarray, ...]:
    """Object centre, scale and angle per frame for a *forward* class.

    Returns:
        tuple: ``x, y, scale, angle`` arrays of length ``num_frames``;
        ``x, y`` in pixels, ``scale`` relative to the sprite, ``angle`` in
        degrees, positive = anticlockwise on screen (OpenCV convention).
    """
    t = np.arange(num_frames, dtype=np.float64)
    u = _ease(t / max(num_frames - 1, 1), rng)
    s = float(size)
    # a slow drift so that no class is perfectly axis-aligned
    drift = rng.uniform(-0.04, 0.04, 2) * s
    x = np.full(num_frames, rng.uniform(0.3, 0.7) * s) + drift[0] * u
    y = np.full(num_frames, rng.uniform(0.3, 0.7) * s) + drift[1] * u
    scale = np.ones(num_frames)
    angle = np.full(num_frames, rng.uniform(-25, 25)) + rng.uniform(-8, 8) * u
    if label in (0, 2):  # left -> right (x grows) or up (y shrinks)
        dist = rng.uniform(0.5, 0.75) * s
        start = rng.uniform(0.12 * s, 0.88 * s - dist)
        pos = start + dist * u
        if label == 0:
            x = pos
        else:
            y = s - pos
    elif label == 4:  # towards the camera: grows
        s0 = rng.uniform(0.55, 0.75)
        scale = s0 * np.exp(np.log(rng.uniform(1.8, 2.4)) * u)
    elif label == 6:  # clockwise on screen = decreasing OpenCV angle
        angle = angle[0] - rng.uniform(150, 260) * u
    elif label == 8:  # held still, with a little hand jitter
        x = x[:1] + rng.normal(0, 0.006 * s, num_frames)
        y = y[:1] + rng.normal(0, 0.006 * s, num_frames)
    elif label == 9:  # shaking left and right
        period = rng.uniform(4.5, 7.5)
        amp = rng.uniform(0.07, 0.12) * s
        x = x[:1] + amp * np.sin(2 * np.pi * t / period + rng.uniform(0, 6.3))
    else:
        raise ValueError(f'{label} is not a forward class')
    return x, y, scale, angle


def render_clip(label: int,
                rng: np.random.Generator,
                *,
                size: int = 64,
                num_frames: int = 16) -> np.ndarray:
    """Render one clip of class ``label``.

    Args:
        label (int): Class index into :data:`SYNTHMOTION_CLASSES`.
        rng (np.random.Generator): The clip's own random stream.
        size (int): Frame height and width in pixels. Defaults to 64.
        num_frames (int): Number of frames. Defaults to 16.

    Returns:
        np.ndarray: ``[num_frames, size, size, 3]`` uint8 RGB frames.
    """
    if not 0 <= label < len(SYNTHMOTION_CLASSES):
        raise ValueError(f'label must be in [0, {len(SYNTHMOTION_CLASSES)}),'
                         f' got {label}')
    if size < 16:
        raise ValueError(f'size must be >= 16, got {size}')
    if num_frames < 2:
        raise ValueError(f'num_frames must be >= 2, got {num_frames}')
    reverse = {b: a for a, b in REVERSED_PAIRS}
    forward = reverse.get(label, label)
    bg, dark = _background(rng, size)
    obj = int(rng.uniform(0.36, 0.48) * size)
    if forward == 4:  # leave room to grow
        obj = int(obj * 0.75)
    sprite = _sprite(rng, obj, dark)
    x, y, scale, angle = _trajectory(forward, rng, num_frames, size)
    noise = rng.uniform(0.0, 0.02)
    centre = (sprite.shape[1] - 1) / 2.0
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        # sprite coords -> frame coords: rotate/scale about the sprite centre,
        # then move the centre to (x, y)
        m = cv2.getRotationMatrix2D((centre, centre), float(angle[t]),
                                    float(scale[t]))
        m[0, 2] += x[t] - centre
        m[1, 2] += y[t] - centre
        layer = cv2.warpAffine(
            sprite,
            m, (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0, 0))
        a = layer[..., 3:]
        img = bg * (1 - a) + layer[..., :3] * a
        img = img + rng.normal(0, noise, img.shape)
        frames[t] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if label != forward:
        frames = frames[::-1].copy()
    return frames


# --------------------------------------------------------------------- #
# writing a set
# --------------------------------------------------------------------- #
_META_NAME = 'meta.json'
# cv2.VideoWriter writes only to a named file with a video suffix: each video
# is encoded here, then written to its place by the atomic writer.
_VIDEO_SCRATCH = '.synthmotion_encoding.mp4'
# The settings that decide which paths a run writes.
_PATH_SETTINGS = ('formats', 'num_train', 'num_val', 'seed', 'min_frames',
                  'max_frames')


def read_label_map(path: str) -> List[str]:
    """Read a label-name file (one class name per line, blank lines skipped).
    """
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def _check_settings(*, formats: Sequence[str], num_train: int, num_val: int,
                    seed: int, size: int, min_frames: int, max_frames: int,
                    fps: int) -> None:
    """Raise ``ValueError`` naming the first bad setting."""
    formats = tuple(formats)
    if not formats or any(f not in _FORMATS for f in formats):
        raise ValueError(f'formats must be a non-empty subset of {_FORMATS},'
                         f' got {formats}')
    integers = dict(
        num_train=num_train,
        num_val=num_val,
        seed=seed,
        size=size,
        min_frames=min_frames,
        max_frames=max_frames,
        fps=fps)
    for name, value in integers.items():
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise ValueError(f'{name} must be an integer, got {value!r}')
    if num_train < 0 or num_val < 0:
        raise ValueError('num_train and num_val must be >= 0, got '
                         f'{num_train} and {num_val}')
    if not 2 <= min_frames <= max_frames:
        raise ValueError('need 2 <= min_frames <= max_frames, got '
                         f'{min_frames} and {max_frames}')
    if size < 16:
        raise ValueError(f'size must be >= 16, got {size}')
    if fps < 1:
        raise ValueError(f'fps must be >= 1, got {fps}')


def _clip_stream(seed: int, split: str, index: int, min_frames: int,
                 max_frames: int) -> Tuple[np.random.Generator, int]:
    """A clip's own random stream, and its number of frames (the stream's
    first draw)."""
    rng = np.random.default_rng(
        np.random.SeedSequence([seed, _SPLIT_CODES[split], index]))
    return rng, int(rng.integers(min_frames, max_frames + 1))


def _plan(formats: Sequence[str], num_train: int, num_val: int, seed: int,
          min_frames: int, max_frames: int) -> Dict[str, List[str]]:
    """The files and folders (relative to the output folder, ``/``
    separated) a run with these settings writes."""
    files = [_META_NAME, 'label_map.txt']
    dirs = [fmt for fmt in _FORMATS if fmt in formats]
    if 'videos' in formats:
        files.append(_VIDEO_SCRATCH)
    for split, count in (('train', num_train), ('val', num_val)):
        files += [f'synthmotion_{split}_list_{fmt}.txt' for fmt in formats]
        for index in range(count):
            clip = f'{split}_{index:05}'
            if 'rawframes' in formats:
                _, num_frames = _clip_stream(seed, split, index, min_frames,
                                             max_frames)
                dirs.append(f'rawframes/{clip}')
                files += [
                    f'rawframes/{clip}/{i + 1:05}.jpg'
                    for i in range(num_frames)
                ]
            if 'videos' in formats:
                files.append(f'videos/{clip}.mp4')
    return dict(files=files, dirs=dirs)


def _path(out_dir: str, rel: str) -> str:
    return osp.join(out_dir, *rel.split('/'))


def _read_own_meta(out_dir: str) -> Optional[dict]:
    """The ``meta.json`` of a set this generator wrote in ``out_dir``,
    finished or not; None when there is none, or when the file is not one
    (unreadable, another generator version, settings this version never
    writes): the paths of the folder are then not the generator's."""
    path = osp.join(out_dir, _META_NAME)
    if not osp.isfile(path) or osp.islink(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            meta = json.load(f)
        if meta.get('generator_version') != GENERATOR_VERSION:
            return None
        _check_settings(
            **{key: meta[key]
               for key in _PATH_SETTINGS + ('size', 'fps')})
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None
    return meta


def _refuse_foreign(out_dir: str, plan: Dict[str, List[str]],
                    owned: Set[str]) -> None:
    """Refuse (whatever ``overwrite`` says) a run that would write over a
    path the generator did not write: a file of ``plan`` that exists and is
    not in ``owned``, or anything but a folder where ``plan`` has one."""
    foreign = []
    if osp.lexists(out_dir) and not osp.isdir(out_dir):
        foreign.append(out_dir)
    for rel in plan['files']:
        path = _path(out_dir, rel)
        if osp.lexists(path) and (rel not in owned or osp.islink(path)
                                  or not osp.isfile(path)):
            foreign.append(path)
    for rel in plan['dirs']:
        path = _path(out_dir, rel)
        if osp.lexists(path) and (osp.islink(path) or not osp.isdir(path)):
            foreign.append(path)
    if foreign:
        one = len(foreign) == 1
        more = '' if len(foreign) <= 3 else f' and {len(foreign) - 3} more'
        raise OverwriteRefusedError(
            f'{", ".join(foreign[:3])}{more} '
            f'{"exists and was" if one else "exist and were"} not written by '
            f'the SynthMotion generator (no {_META_NAME} of a set it wrote '
            f'there names {"it" if one else "them"}): nothing it did not '
            f'write is overwritten or deleted, not even with --force. Move '
            f'{"it" if one else "them"} away or choose another output '
            f'folder.')


def _remove_set(out_dir: str, plan: Dict[str, List[str]]) -> None:
    """Remove the files of a set the generator wrote (``plan`` of its
    ``meta.json``), ``meta.json`` last so that a run killed here can still
    be replaced, then those of its folders that are left empty."""
    for rel in sorted(plan['files'], key=lambda rel: rel == _META_NAME):
        path = _path(out_dir, rel)
        if osp.isfile(path) and not osp.islink(path):
            os.remove(path)
    for rel in sorted(plan['dirs'], key=lambda rel: -rel.count('/')):
        path = _path(out_dir, rel)
        if osp.isdir(path) and not osp.islink(path) and not os.listdir(path):
            os.rmdir(path)


def _write_text(path: str, lines: Sequence[str]) -> None:
    write_bytes_atomic(path, ''.join(lines).encode('utf-8'))


def _write_rawframes(frames: np.ndarray, clip_dir: str) -> None:
    for i, frame in enumerate(frames):
        path = osp.join(clip_dir, f'{i + 1:05}.jpg')
        ok, data = cv2.imencode('.jpg', np.ascontiguousarray(frame[..., ::-1]),
                                [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise OSError(f'OpenCV could not encode {path}')
        # bulk files: meta.json's "complete" flag covers a power loss
        write_bytes_atomic(path, data.tobytes(), durable=False)


def _write_video(frames: np.ndarray, path: str, fps: int,
                 scratch: str) -> None:
    """Encode ``frames`` (mp4v) into ``scratch``, then write them to
    ``path`` atomically and remove ``scratch``."""
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(scratch, cv2.VideoWriter_fourcc(*'mp4v'), fps,
                             (w, h))
    if not writer.isOpened():
        raise OSError(f'OpenCV cannot open an mp4v writer for {scratch}')
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
    finally:
        writer.release()
    try:
        with open(scratch, 'rb') as f:
            data = f.read()
    finally:
        os.remove(scratch)
    write_bytes_atomic(path, data, durable=False)


def _meta(*, formats: Sequence[str], num_train: int, num_val: int, seed: int,
          size: int, min_frames: int, max_frames: int, fps: int,
          complete: bool) -> dict:
    return dict(
        generator_version=GENERATOR_VERSION,
        seed=int(seed),
        size=int(size),
        min_frames=int(min_frames),
        max_frames=int(max_frames),
        fps=int(fps),
        num_train=int(num_train),
        num_val=int(num_val),
        formats=sorted(formats),
        classes=list(SYNTHMOTION_CLASSES),
        reversed_pairs=[list(p) for p in REVERSED_PAIRS],
        hflip_label_map={
            str(k): v
            for k, v in sorted(HFLIP_LABEL_MAP.items())
        },
        complete=complete)


def _write_meta(path: str, meta: dict) -> None:
    _write_text(path, [json.dumps(meta, indent=2), '\n'])


def synthmotion_is_complete(out_dir: str, **settings) -> bool:
    """Whether ``out_dir`` holds a finished set made with ``settings``.

    ``settings`` are keyword arguments of :func:`generate_synthmotion`; only
    those given are compared with the recorded ``meta.json`` (``formats`` is
    satisfied by a superset).
    """
    meta = _read_own_meta(out_dir)
    # sets made before the "complete" flag wrote meta.json last
    if meta is None or meta.get('complete', True) is not True:
        return False
    for key, value in settings.items():
        if key == 'formats':
            if not set(value) <= set(meta['formats']):
                return False
        elif meta.get(key) != value:
            return False
    return True


def generate_synthmotion(
        out_dir: str,
        *,
        formats: Sequence[str] = ('rawframes', ),
        num_train: int = 2000,
        num_val: int = 300,
        seed: int = 0,
        size: int = 64,
        min_frames: int = 16,
        max_frames: int = 16,
        fps: int = 12,
        overwrite: bool = False,
        progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Write a SynthMotion set to ``out_dir``.

    Clips are balanced over classes (clip ``i`` of a split has label
    ``i % num_classes``) and named ``<split>_<i:05>``.

    What is written where is decided by the settings, and ``meta.json``
    records them; it is written first (``"complete": false``), so that a
    run that stops half-way can be replaced, and again last
    (``"complete": true``). Before anything is written or removed, the run
    is refused:

    * whatever ``overwrite`` says, when one of the paths it would write
      exists and is not named by the ``meta.json`` of a set the generator
      wrote in ``out_dir`` (a user's ``label_map.txt`` or
      ``rawframes/train_00001/``): a file the generator did not write is
      never overwritten or deleted. Other files in the folder (a user's
      ``notes.txt`` or ``rawframes/my_video/``) are no obstacle and are left
      alone;
    * without ``overwrite``, when ``out_dir`` holds a set (finished or not).

    Args:
        out_dir (str): Output folder; created if missing.
        formats (Sequence[str]): Any of ``'rawframes'`` and ``'videos'``.
            Defaults to ``('rawframes', )``.
        num_train (int): Training clips. Defaults to 2000.
        num_val (int): Validation clips. Defaults to 300.
        seed (int): Seed of the whole set. Defaults to 0.
        size (int): Frame height and width. Defaults to 64.
        min_frames (int): Fewest frames in a clip. Defaults to 16.
        max_frames (int): Most frames in a clip. Defaults to 16.
        fps (int): Frame rate written into the videos. Defaults to 12.
        overwrite (bool): Replace the set ``out_dir`` holds: the files its
            ``meta.json`` names are removed first, then the folders it named
            that are left empty. Defaults to False.
        progress (callable, optional): Called as ``progress(done, total)``
            after each clip. Defaults to None.

    Returns:
        dict: The metadata written to ``meta.json``.

    Raises:
        ValueError: A setting is out of range.
        OverwriteRefusedError: (a ``FileExistsError``) The run is refused,
            as above; nothing was written or removed.
    """
    formats = tuple(formats)
    settings = dict(
        formats=formats,
        num_train=num_train,
        num_val=num_val,
        seed=seed,
        min_frames=min_frames,
        max_frames=max_frames)
    _check_settings(size=size, fps=fps, **settings)
    plan = _plan(**settings)
    previous = _read_own_meta(out_dir)
    owned = _plan(**{key: previous[key] for key in _PATH_SETTINGS}) \
        if previous is not None else dict(files=[], dirs=[])
    _refuse_foreign(out_dir, plan, set(owned['files']))
    meta_path = osp.join(out_dir, _META_NAME)
    if previous is not None:
        refuse_existing(
            meta_path,
            overwrite,
            option='--force (or --overwrite; overwrite=True in Python)',
            what=f'{out_dir} holds a SynthMotion set:')
        _remove_set(out_dir, owned)

    meta = _meta(size=size, fps=fps, complete=False, **settings)
    _write_meta(meta_path, meta)
    _digit_images()  # load once, before the loop
    num_classes = len(SYNTHMOTION_CLASSES)
    total = num_train + num_val
    done = 0
    for split, count in (('train', num_train), ('val', num_val)):
        lines: Dict[str, List[str]] = {fmt: [] for fmt in formats}
        for index in range(count):
            rng, num_frames = _clip_stream(seed, split, index, min_frames,
                                           max_frames)
            label = index % num_classes
            frames = render_clip(label, rng, size=size, num_frames=num_frames)
            clip = f'{split}_{index:05}'
            if 'rawframes' in formats:
                _write_rawframes(frames, _path(out_dir, f'rawframes/{clip}'))
                lines['rawframes'].append(f'{clip} {num_frames} {label}\n')
            if 'videos' in formats:
                _write_video(frames, _path(out_dir, f'videos/{clip}.mp4'), fps,
                             _path(out_dir, _VIDEO_SCRATCH))
                lines['videos'].append(f'{clip}.mp4 {label}\n')
            done += 1
            if progress is not None:
                progress(done, total)
        for fmt in formats:
            _write_text(
                osp.join(out_dir, f'synthmotion_{split}_list_{fmt}.txt'),
                lines[fmt])
    _write_text(
        osp.join(out_dir, 'label_map.txt'),
        [name + '\n' for name in SYNTHMOTION_CLASSES])
    meta['complete'] = True
    _write_meta(meta_path, meta)
    return meta


# --------------------------------------------------------------------- #
# reading a set
# --------------------------------------------------------------------- #
@DATASETS.register_module()
class SynthMotionDataset(CheckedRawframeDataset):
    """SynthMotion in its rawframe (SSv1) layout, as
    :func:`generate_synthmotion` writes it.

    MMAction2's ``RawframeDataset`` with the annotation checks of
    :class:`~mmrsa.datasets.CheckedRawframeDataset` and the same arguments,
    so a config may name either type. The defaults fit the layout:

    * ``metainfo['classes']`` is :data:`SYNTHMOTION_CLASSES`;
    * ``num_classes`` defaults to their number, so a label outside
      ``[0, 10)`` fails when the dataset is built;
    * ``filename_tmpl`` defaults to ``'{:05}.jpg'``;
    * ``data_prefix`` defaults to ``dict(img=<folder of ann_file>/rawframes)``;
    * a missing annotation file raises ``FileNotFoundError`` naming the
      command that generates the set.

    Example::

        dataset=dict(
            type='SynthMotionDataset',
            ann_file='data/synthmotion/synthmotion_train_list_rawframes.txt',
            pipeline=train_pipeline)

    Args:
        ann_file (str): A ``synthmotion_{train,val}_list_rawframes.txt``.
        pipeline (list): The processing pipeline.
        data_prefix (dict, optional): ``dict(img=<folder of the clip
            folders>)``. Defaults to ``rawframes`` next to ``ann_file``.
        filename_tmpl (str): Frame file names. Defaults to ``'{:05}.jpg'``.
        **kwargs: The other arguments of ``RawframeDataset``.
    """

    METAINFO = dict(classes=SYNTHMOTION_CLASSES)

    def __init__(self,
                 ann_file: str,
                 pipeline: List[Union[dict, Callable]],
                 data_prefix: Optional[dict] = None,
                 filename_tmpl: str = '{:05}.jpg',
                 **kwargs) -> None:
        if data_prefix is None:
            data_prefix = dict(
                img=osp.join(osp.dirname(ann_file), 'rawframes'))
        if kwargs.get('num_classes') is None:
            kwargs['num_classes'] = len(SYNTHMOTION_CLASSES)
        super().__init__(
            ann_file,
            pipeline,
            data_prefix=data_prefix,
            filename_tmpl=filename_tmpl,
            **kwargs)

    def load_data_list(self) -> List[dict]:
        ann_file = str(self.ann_file)
        if '://' not in ann_file and not osp.isfile(ann_file):
            raise FileNotFoundError(
                f'SynthMotion annotation file {ann_file} does not exist; '
                f'generate the set with\n    {GENERATE_COMMAND} --out '
                f'{osp.dirname(ann_file) or "."}\n(--help lists the number '
                f'of clips, seed and formats).')
        return super().load_data_list()
