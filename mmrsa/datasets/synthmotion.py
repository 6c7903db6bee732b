# Copyright (c) mmrsa contributors. All rights reserved.
"""SynthMotion: a procedurally generated, Something-Something-like motion set.

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

The data are written in the layouts of the Something-Something recipes:

.. code-block:: text

    <out>/rawframes/<clip>/00001.jpg ...   as SSv1
    <out>/videos/<clip>.mp4                as SSv2 (mp4v, read by decord)
    <out>/synthmotion_{train,val}_list_rawframes.txt
                                           lines "<clip> <num_frames> <label>"
    <out>/synthmotion_{train,val}_list_videos.txt
                                           lines "<clip>.mp4 <label>"
    <out>/label_map.txt                    one class name per line
    <out>/meta.json                        settings, pairs, flip map
    <out>/synthmotion_manifest.json        what the generator wrote there

Clips are named ``<split>_<index:05>`` and have label ``index % 10``.

Every clip is drawn from its own random stream seeded by ``(seed, split,
index)``, so a clip does not depend on how many others are generated, and the
same settings give byte-identical files.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    'SYNTHMOTION_CLASSES', 'REVERSED_PAIRS', 'HFLIP_LABEL_MAP',
    'GENERATOR_VERSION', 'render_clip', 'generate_synthmotion',
    'read_label_map', 'synthmotion_is_complete', 'read_manifest',
    'MANIFEST_NAME'
]

GENERATOR_VERSION = 1

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


def _sprite(rng: np.random.Generator, size: int,
            dark_bg: bool) -> np.ndarray:
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
    glyph = cv2.resize(digits[rng.integers(len(digits))], (n, n),
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
            dia = np.array([[c, c - r], [c + int(0.75 * r), c],
                            [c, c + r], [c - int(0.75 * r), c]], np.int32)
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
            sprite, m, (size, size), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
        a = layer[..., 3:]
        img = bg * (1 - a) + layer[..., :3] * a
        img = img + rng.normal(0, noise, img.shape)
        frames[t] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if label != forward:
        frames = frames[::-1].copy()
    return frames


def _write_rawframes(frames: np.ndarray, clip_dir: str) -> None:
    os.makedirs(clip_dir, exist_ok=True)
    for i, frame in enumerate(frames):
        path = osp.join(clip_dir, f'{i + 1:05}.jpg')
        if not cv2.imwrite(path, frame[..., ::-1],
                           [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f'could not write {path}')


def _write_video(frames: np.ndarray, path: str, fps: int) -> None:
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), fps,
                             (w, h))
    if not writer.isOpened():
        raise OSError(f'OpenCV cannot open an mp4v writer for {path}')
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


def read_label_map(path: str) -> List[str]:
    """Read a label-name file (one class name per line, blank lines skipped).
    """
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def _meta(seed: int, size: int, min_frames: int, max_frames: int, fps: int,
          num_train: int, num_val: int, formats: Sequence[str]) -> dict:
    return dict(
        generator_version=GENERATOR_VERSION,
        seed=seed,
        size=size,
        min_frames=min_frames,
        max_frames=max_frames,
        fps=fps,
        num_train=num_train,
        num_val=num_val,
        formats=sorted(formats),
        classes=list(SYNTHMOTION_CLASSES),
        reversed_pairs=[list(p) for p in REVERSED_PAIRS],
        hflip_label_map={str(k): v
                         for k, v in sorted(HFLIP_LABEL_MAP.items())})


def synthmotion_is_complete(out_dir: str, **settings) -> bool:
    """Whether ``out_dir`` holds a finished set made with ``settings``.

    ``settings`` are keyword arguments of :func:`generate_synthmotion`; only
    those given are compared with the recorded ``meta.json`` (``formats`` is
    satisfied by a superset).
    """
    path = osp.join(out_dir, 'meta.json')
    if not osp.isfile(path):
        return False
    with open(path, encoding='utf-8') as f:
        meta = json.load(f)
    if meta.get('generator_version') != GENERATOR_VERSION:
        return False
    for key, value in settings.items():
        if key == 'formats':
            if not set(value) <= set(meta.get('formats', [])):
                return False
        elif meta.get(key) != value:
            return False
    return True


MANIFEST_NAME = 'synthmotion_manifest.json'
_MANIFEST_KIND = 'mmrsa SynthMotion generator manifest'


def _clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([seed, _SPLIT_CODES[split], index]))


def _plan(formats: Sequence[str], num_train: int, num_val: int, seed: int,
          min_frames: int, max_frames: int) -> Dict[str, List[str]]:
    """The files and folders (relative to the output folder, ``/``
    separated) a run with these settings writes."""
    files = ['label_map.txt', 'meta.json']
    dirs = [fmt for fmt in _FORMATS if fmt in formats]
    for split, count in (('train', num_train), ('val', num_val)):
        for fmt in formats:
            files.append(f'synthmotion_{split}_list_{fmt}.txt')
        for index in range(count):
            clip = f'{split}_{index:05}'
            if 'rawframes' in formats:
                rng = _clip_rng(seed, split, index)
                num_frames = int(rng.integers(min_frames, max_frames + 1))
                dirs.append(f'rawframes/{clip}')
                files += [
                    f'rawframes/{clip}/{i + 1:05}.jpg'
                    for i in range(num_frames)
                ]
            if 'videos' in formats:
                files.append(f'videos/{clip}.mp4')
    return dict(files=files, dirs=dirs)


def read_manifest(out_dir: str) -> Optional[Dict[str, List[str]]]:
    """What an earlier run of the generator wrote into ``out_dir``:
    ``files`` and the folders it created (``dirs``), as recorded in its
    ``synthmotion_manifest.json``; None without one.

    Raises:
        FileExistsError: The manifest is not one this generator writes (it
            is then treated as a user's file and left alone).
    """
    path = osp.join(out_dir, MANIFEST_NAME)
    if not osp.lexists(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            manifest = json.load(f)
        ok = (isinstance(manifest, dict)
              and manifest.get('kind') == _MANIFEST_KIND and all(
                  isinstance(manifest.get(k), list)
                  and all(isinstance(p, str) for p in manifest[k])
                  for k in ('files', 'dirs')))
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise FileExistsError(
            f'{path} is not a manifest of the SynthMotion generator; it '
            f'and the rest of {out_dir} are left alone: choose another '
            f'output folder.')
    return dict(files=manifest['files'], dirs=manifest['dirs'])


def _write_manifest(out_dir: str, files: Sequence[str],
                    dirs: Sequence[str]) -> None:
    path = osp.join(out_dir, MANIFEST_NAME)
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(
            dict(
                kind=_MANIFEST_KIND,
                note='files and folders written by '
                'tools/data/synthmotion/generate_synthmotion.py; --force '
                'replaces these and nothing else',
                files=list(files),
                dirs=list(dirs)), f)
        f.write('\n')
    os.replace(tmp, path)


def _is_safe_relative(path: str) -> bool:
    parts = path.split('/')
    return bool(path) and not osp.isabs(path) and '..' not in parts \
        and '' not in parts and '\\' not in path


def _check_conflicts(out_dir: str, plan: Dict[str, List[str]],
                     previous: Optional[Dict[str, List[str]]],
                     overwrite: bool) -> None:
    """Refuse a run that would overwrite a path the generator did not
    write, or (without ``overwrite``) one that it did."""
    ours = set(previous['files']) if previous else set()
    foreign = []
    for rel in plan['files']:
        path = osp.join(out_dir, *rel.split('/'))
        if osp.lexists(path) and (rel not in ours or osp.isdir(path)
                                  or osp.islink(path)):
            foreign.append(path)
    for rel in plan['dirs']:
        path = osp.join(out_dir, *rel.split('/'))
        if osp.lexists(path) and (not osp.isdir(path) or osp.islink(path)):
            foreign.append(path)
    if osp.lexists(out_dir) and not osp.isdir(out_dir):
        foreign.append(out_dir)
    if foreign:
        more = f' and {len(foreign) - 3} more' if len(foreign) > 3 else ''
        raise FileExistsError(
            f'{", ".join(foreign[:3])}{more} '
            f'{"exists and was" if len(foreign) == 1 else "exist and were"} '
            f'not written by the SynthMotion generator (not in '
            f'{MANIFEST_NAME}): nothing it did not write is overwritten or '
            f'deleted, not even with --force. Move it away or choose another'
            f' output folder.')
    written = previous is not None and any(
        osp.lexists(osp.join(out_dir, *rel.split('/')))
        for rel in previous['files'])
    if written and not overwrite:
        raise FileExistsError(
            f'{out_dir} already holds a SynthMotion set; pass --force '
            f'(--overwrite; overwrite=True in Python) to replace it (only '
            f'what the generator wrote there, listed in {MANIFEST_NAME}, is '
            f'replaced)')


def _remove_written(out_dir: str, previous: Dict[str, List[str]]) -> None:
    """Remove the files an earlier run wrote and the folders it created
    that are then empty; nothing else."""
    for rel in previous['files']:
        path = osp.join(out_dir, *rel.split('/'))
        if _is_safe_relative(rel) and osp.isfile(path) \
                and not osp.islink(path):
            os.remove(path)
    for rel in sorted(previous['dirs'], key=lambda d: -d.count('/')):
        path = osp.join(out_dir, *rel.split('/'))
        if _is_safe_relative(rel) and osp.isdir(path) \
                and not osp.islink(path):
            try:
                os.rmdir(path)  # only when empty
            except OSError:
                pass


def generate_synthmotion(out_dir: str,
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
                         progress: Optional[Callable[[int, int], None]] = None
                         ) -> dict:
    """Write a SynthMotion set to ``out_dir``.

    Clips are balanced over classes (clip ``i`` of a split has label
    ``i % num_classes``) and named ``<split>_<i:05>``.

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
        overwrite (bool): Replace a set an earlier run wrote into
            ``out_dir``: the files listed in its manifest
            (``synthmotion_manifest.json``) are removed first, and the
            folders it created if they are then empty. Defaults to False,
            which refuses to write into a folder that already holds a set.
            Either way, a file or folder the generator did not write (a
            user's ``label_map.txt`` or ``rawframes/my_video/``) is never
            removed or overwritten: a run that would write one of those
            paths is refused before anything is written.
        progress (callable, optional): Called as ``progress(done, total)``
            after each clip. Defaults to None.

    Returns:
        dict: The metadata also written to ``meta.json``.

    Raises:
        FileExistsError: ``out_dir`` holds a set and ``overwrite`` is False,
            or the run would write a path that the generator did not write.
    """
    formats = tuple(formats)
    bad = [f for f in formats if f not in _FORMATS]
    if bad or not formats:
        raise ValueError(f'formats must be a non-empty subset of {_FORMATS},'
                         f' got {formats}')
    if num_train < 0 or num_val < 0:
        raise ValueError('num_train and num_val must be >= 0, got '
                         f'{num_train} and {num_val}')
    if not 2 <= min_frames <= max_frames:
        raise ValueError('need 2 <= min_frames <= max_frames, got '
                         f'{min_frames} and {max_frames}')
    if size < 16:
        raise ValueError(f'size must be >= 16, got {size}')

    meta_path = osp.join(out_dir, 'meta.json')
    plan = _plan(formats, num_train, num_val, seed, min_frames, max_frames)
    previous = read_manifest(out_dir)
    _check_conflicts(out_dir, plan, previous, overwrite)
    if previous is not None:
        _remove_written(out_dir, previous)
    os.makedirs(out_dir, exist_ok=True)
    # the manifest goes first: a run that stops half-way can be replaced
    created_dirs = [
        d for d in plan['dirs']
        if not osp.isdir(osp.join(out_dir, d)) or (
            previous is not None and d in previous['dirs'])
    ]
    if previous is not None:  # created earlier, kept as they are not empty
        created_dirs += [
            d for d in previous['dirs'] if d not in created_dirs
            and _is_safe_relative(d) and osp.isdir(osp.join(out_dir, d))
        ]
    _write_manifest(out_dir, plan['files'], created_dirs)
    _digit_images()  # load once, before the loop

    num_classes = len(SYNTHMOTION_CLASSES)
    total = num_train + num_val
    done = 0
    for split, count in (('train', num_train), ('val', num_val)):
        raw_lines, video_lines = [], []
        for index in range(count):
            rng = _clip_rng(seed, split, index)
            label = index % num_classes
            num_frames = int(rng.integers(min_frames, max_frames + 1))
            frames = render_clip(label, rng, size=size, num_frames=num_frames)
            clip = f'{split}_{index:05}'
            if 'rawframes' in formats:
                _write_rawframes(frames, osp.join(out_dir, 'rawframes', clip))
                raw_lines.append(f'{clip} {num_frames} {label}\n')
            if 'videos' in formats:
                os.makedirs(osp.join(out_dir, 'videos'), exist_ok=True)
                _write_video(frames,
                             osp.join(out_dir, 'videos', f'{clip}.mp4'), fps)
                video_lines.append(f'{clip}.mp4 {label}\n')
            done += 1
            if progress is not None:
                progress(done, total)
        for fmt, lines in (('rawframes', raw_lines), ('videos', video_lines)):
            if fmt in formats:
                list_path = osp.join(out_dir,
                                     f'synthmotion_{split}_list_{fmt}.txt')
                with open(list_path, 'w', encoding='utf-8') as f:
                    f.writelines(lines)

    with open(osp.join(out_dir, 'label_map.txt'), 'w', encoding='utf-8') as f:
        f.writelines(name + '\n' for name in SYNTHMOTION_CLASSES)
    meta = _meta(seed, size, min_frames, max_frames, fps, num_train, num_val,
                 formats)
    # meta.json last: its presence marks a finished set
    with open(meta_path, 'w', encoding='utf-8') as f:
        json.dump(meta, f, indent=2)
        f.write('\n')
    return meta
