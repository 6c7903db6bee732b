# Copyright (c) mmrsa contributors. All rights reserved.
"""Classify one video with a recognizer and print the top-5 labels.

The arguments are those of MMAction2's ``demo/demo.py``
(``CONFIG CHECKPOINT VIDEO LABEL``, ``--out-filename``, ``--fps``,
``--device``, ``--font-scale``, ``--font-color``, ``--target-resolution``,
``--cfg-options``). Example (after ``bash tools/run.sh demo``, i.e. ``python
demo/synthmotion_demo.py``)::

    python demo/demo.py \
        configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py \
        work_dirs/synthmotion_demo/rsanet_r18_8x1_synthmotion.pth \
        data/synthmotion/rawframes/val_00000 data/synthmotion/label_map.txt \
        --out-filename val_00000_labelled.mp4

VIDEO is a video file or a folder of frames; see
:mod:`mmrsa.apis.inference`, which this script calls. LABEL may be left out
(the class ids are printed). With ``--out-filename out.mp4`` (or ``.avi``,
``.gif``) the video is written with the top-1 label drawn on every frame.

The former order ``VIDEO CONFIG CHECKPOINT [--label-file LABEL]`` still works
in this release, with a ``DeprecationWarning``; it is recognised by its
second argument being a ``.py`` config and its first not.
"""
import argparse
import os.path as osp
import sys
import warnings
from typing import List, Optional, Sequence, Tuple

# runnable from a source checkout without installing mmrsa
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

import numpy as np
import torch
from mmengine.config import DictAction

import mmrsa  # noqa: F401  (compat fixes, registration)
from mmrsa.apis import load_config, load_input, predict, read_labels
from mmrsa.fileio.checkpoint import (CheckpointDownloadError,
                                     UnsafeCheckpointError, trust_checkpoint)

#: How the former argument order is reported.
LEGACY_ORDER_MESSAGE = (
    'demo/demo.py VIDEO CONFIG CHECKPOINT is deprecated and will be removed '
    'in the next release; use MMAction2\'s order: demo/demo.py CONFIG '
    'CHECKPOINT VIDEO [LABEL]')


def _default_device() -> str:
    return 'cuda:0' if torch.cuda.is_available() else 'cpu'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Print the top-5 labels of a video (MMAction2 + mmrsa).')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('video', help='video file or folder of frames')
    parser.add_argument(
        'label',
        nargs='?',
        help='class names, one per line (the id is the line number); '
        'without it the class ids are printed')
    parser.add_argument(
        '--label-file',
        help='deprecated spelling of LABEL (former argument order)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. model.cls_head.average_clips='
        'score')
    parser.add_argument(
        '--device',
        default=_default_device(),
        help='torch device, e.g. cpu or cuda:0 (defaults to cuda:0 when a '
        'GPU is visible, else cpu)')
    parser.add_argument(
        '--fps',
        default=30,
        type=int,
        help='frame rate of the output video (--out-filename)')
    parser.add_argument(
        '--font-scale',
        default=None,
        type=float,
        help='OpenCV font scale of the label in the output video (defaults '
        'to one that fits the frame size)')
    parser.add_argument(
        '--font-color',
        default='white',
        help='colour of the label in the output video: a name or #rrggbb')
    parser.add_argument(
        '--target-resolution',
        nargs=2,
        default=None,
        type=int,
        metavar=('W', 'H'),
        help='resize the output frames to W x H; -1 for one of them keeps '
        'the aspect ratio')
    parser.add_argument(
        '--out-filename',
        default=None,
        help='write the video with the top-1 label drawn (.mp4, .avi or '
        '.gif)')
    parser.add_argument(
        '--trust-pickle',
        action='store_true',
        help='load CHECKPOINT even if it pickles arbitrary objects, which '
        'can run code: only for a file you trust')
    parser.add_argument(
        '--topk', type=int, default=5, help='how many labels to print')
    args = parser.parse_args(argv)
    if is_legacy_order(args):
        with warnings.catch_warnings():
            warnings.simplefilter('always', DeprecationWarning)
            warnings.warn(LEGACY_ORDER_MESSAGE, DeprecationWarning)
        # VIDEO CONFIG CHECKPOINT, read as CONFIG CHECKPOINT VIDEO
        args.config, args.checkpoint, args.video = (args.checkpoint,
                                                    args.video, args.config)
    if args.label_file is not None:
        if args.label is not None:
            parser.error('give LABEL or --label-file, not both')
        args.label = args.label_file
    if args.target_resolution is not None:
        w, h = args.target_resolution
        if (w, h) == (-1, -1) or min(w, h) < -1 or 0 in (w, h):
            parser.error('--target-resolution W H must be positive, one of '
                         f'them may be -1; got {w} {h}')
    return args


def is_legacy_order(args: argparse.Namespace) -> bool:
    """The former ``VIDEO CONFIG CHECKPOINT`` order: the second positional
    is a ``.py`` config and the first is not (a video or frame folder)."""
    return (args.checkpoint.endswith('.py') and not args.config.endswith('.py')
            and args.label is None)


def read_frames(video: str,
                config: str,
                cfg_options: Optional[dict] = None) -> List[np.ndarray]:
    """All frames (BGR) of a video file or of a frame folder named as the
    config's ``filename_tmpl``."""
    import cv2
    data, _ = load_input(video, load_config(config, cfg_options))
    if 'frame_dir' in data:
        first = data['start_index']
        return [
            cv2.imread(
                osp.join(data['frame_dir'], data['filename_tmpl'].format(i)))
            for i in range(first, first + data['total_frames'])
        ]
    import decord
    reader = decord.VideoReader(video, num_threads=1)
    return [frame.asnumpy()[..., ::-1] for frame in reader]


def draw_label(
        frames: Sequence[np.ndarray],
        label: str,
        *,
        font_scale: Optional[float] = None,
        font_color: str = 'white',
        target_resolution: Optional[Tuple[int,
                                          int]] = None) -> List[np.ndarray]:
    """``frames`` (BGR) resized to ``target_resolution`` with ``label``
    written in the top-left corner."""
    import cv2
    from matplotlib.colors import to_rgb
    frames = list(frames)
    if target_resolution is not None:
        w, h = target_resolution
        frame_h, frame_w = frames[0].shape[:2]
        if w == -1:
            w = round(h / frame_h * frame_w)
        if h == -1:
            h = round(w / frame_w * frame_h)
        frames = [cv2.resize(f, (w, h)) for f in frames]
    frame_h, frame_w = frames[0].shape[:2]
    if font_scale is None:
        font_scale = max(0.4, min(frame_h, frame_w) / 480)
    color = tuple(round(255 * c) for c in to_rgb(font_color))[::-1]  # BGR
    font = cv2.FONT_HERSHEY_DUPLEX
    thickness = max(1, round(font_scale))
    text_h = cv2.getTextSize(label, font, font_scale, thickness)[0][1]
    origin = (10, 10 + text_h)
    drawn = []
    for frame in frames:
        frame = np.array(frame)  # a contiguous copy: the input stays
        cv2.putText(frame, label, origin, font, font_scale, color, thickness,
                    cv2.LINE_AA)
        drawn.append(frame)
    return drawn


def write_video(frames: Sequence[np.ndarray], path: str, fps: int) -> None:
    """Write BGR ``frames`` to ``path``: ``.gif`` with Pillow, ``.avi``
    (MJPG) or anything else (mp4v) with OpenCV."""
    import cv2
    ext = osp.splitext(path)[1].lower()
    if ext == '.gif':
        from PIL import Image
        images = [
            Image.fromarray(np.ascontiguousarray(f[..., ::-1])) for f in frames
        ]
        images[0].save(
            path,
            save_all=True,
            append_images=images[1:],
            duration=round(1000 / fps),
            loop=0)
        return
    fourcc = cv2.VideoWriter_fourcc(*('MJPG' if ext == '.avi' else 'mp4v'))
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, fourcc, fps, (w, h))
    if not writer.isOpened():
        raise ValueError(f'OpenCV cannot write {path}')
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame))
    finally:
        writer.release()


def main(argv: Optional[Sequence[str]] = None) -> List[Tuple[str, float]]:
    args = parse_args(argv)
    if args.trust_pickle:
        trust_checkpoint(args.checkpoint)
    try:
        labels = read_labels(args.label)
        scores = predict(
            args.video,
            args.config,
            args.checkpoint,
            device=args.device,
            cfg_options=args.cfg_options)
    except (FileNotFoundError, ValueError, UnsafeCheckpointError,
            CheckpointDownloadError) as e:
        sys.exit(f'error: {e}')
    if labels is not None and len(labels) != len(scores):
        sys.exit(f'error: {args.label} has {len(labels)} names but the '
                 f'model predicts {len(scores)} classes')
    if not bool(torch.isfinite(scores).all()):
        print(
            f'warning: the scores for {args.video} hold non-finite values '
            f'(nan/inf): the weights of {args.checkpoint} are probably '
            f'non-finite (a diverged run); the labels below mean nothing.',
            file=sys.stderr)
    k = min(args.topk, len(scores))
    top = torch.topk(scores, k)
    results = []
    print(f'top-{k} labels for {args.video}:')
    for score, idx in zip(top.values.tolist(), top.indices.tolist()):
        name = labels[idx] if labels is not None else str(idx)
        results.append((name, score))
        print(f'{score:8.4f}  {name}')
    if args.out_filename is not None:
        frames = read_frames(args.video, args.config, args.cfg_options)
        try:
            frames = draw_label(
                frames,
                results[0][0],
                font_scale=args.font_scale,
                font_color=args.font_color,
                target_resolution=args.target_resolution)
            write_video(frames, args.out_filename, args.fps)
        except ValueError as e:
            sys.exit(f'error: {e}')
        print(f'wrote {args.out_filename}')
    return results


if __name__ == '__main__':
    main()
