# Copyright (c) mmrsa contributors. All rights reserved.
"""Classify one video file or frame folder with a config and a checkpoint.

The logic of ``demo/demo.py``. VIDEO is a video file that decord can read,
or a folder of frames named as the config's ``filename_tmpl`` (SSv1 layout),
numbered without a gap (a missing frame is an error that names it). The
frames go through the config's ``test_pipeline``, whose decoding steps are
swapped for decord's (a video) or ``RawFrameDecode`` (a folder), so a config
written for rawframes works on videos too. The checkpoint is read safely and
must fit the model (:func:`mmrsa.engine.load_checkpoint_strictly`).
"""
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config

from .model import build_model, load_config

__all__ = [
    'DECODE_STEPS', 'INIT_STEPS', 'video_pipeline', 'rawframe_pipeline',
    'load_input', 'read_labels', 'predict'
]

DECODE_STEPS = ('RawFrameDecode', 'DecordDecode', 'OpenCVDecode', 'PyAVDecode',
                'VideoOrFramesDecode')
INIT_STEPS = ('DecordInit', 'OpenCVInit', 'PyAVInit', 'VideoOrFramesInit')


def video_pipeline(pipeline: Sequence[dict]) -> List[dict]:
    """``pipeline`` with its frame-decoding step swapped for decord's."""
    steps = [dict(step) for step in pipeline if step['type'] not in INIT_STEPS]
    decode = [
        i for i, step in enumerate(steps) if step['type'] in DECODE_STEPS
    ]
    if len(decode) != 1:
        raise ValueError('the test pipeline must have exactly one frame '
                         f'decoding step (one of {DECODE_STEPS})')
    steps[decode[0]] = dict(type='DecordDecode')
    return [dict(type='DecordInit')] + steps


def rawframe_pipeline(pipeline: Sequence[dict]) -> List[dict]:
    """``pipeline`` with its frame-decoding step swapped for rawframes'."""
    steps = [dict(step) for step in pipeline if step['type'] not in INIT_STEPS]
    for i, step in enumerate(steps):
        if step['type'] in DECODE_STEPS:
            steps[i] = dict(type='RawFrameDecode')
    return steps


def _filename_tmpl(cfg: Config) -> str:
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    return dataset.get('filename_tmpl', 'img_{:05}.jpg')


def _warn_if_short(path: str, count: int, cfg: Config) -> None:
    """Name a video or frame folder with fewer frames than one clip takes
    (its frames are then repeated to fill the clip)."""
    import logging

    from mmengine.logging import print_log
    needed = cfg.get('model', {}).get('backbone', {}).get('num_segments')
    if not isinstance(needed, int) or count >= needed:
        return
    print_log(
        f'{path} has {count} frame(s), fewer than the {needed} frames of one '
        f'clip (the backbone\'s num_segments): its frames are repeated to '
        f'fill the clip, so the prediction sees no real motion.',
        logger='current',
        level=logging.WARNING)


def load_input(path: str, cfg: Config) -> Tuple[dict, List[dict]]:
    """The pipeline input for a video file or a frame folder, and the
    pipeline for it.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a readable video or frame folder.
    """
    if not osp.exists(path):
        raise FileNotFoundError(f'video not found: {path}')
    if osp.isdir(path):
        from mmrsa.datasets.transforms import find_frames
        tmpl = _filename_tmpl(cfg)
        # all frames, numbered without a gap (else a ValueError naming it)
        first, total = find_frames(path, tmpl)
        _warn_if_short(path, total, cfg)
        data = dict(
            frame_dir=path,
            total_frames=total,
            filename_tmpl=tmpl,
            start_index=first,
            label=-1,
            modality='RGB')
        return data, rawframe_pipeline(cfg.test_pipeline)
    import decord
    try:
        reader = decord.VideoReader(path, num_threads=1)
        num_frames = len(reader)
        del reader
    except Exception as e:  # decord raises its own DECORDError
        raise ValueError(f'cannot read video {path}: '
                         f'{str(e).splitlines()[0]}') from None
    if num_frames == 0:
        raise ValueError(f'cannot read video {path}: it has no frames')
    _warn_if_short(path, num_frames, cfg)
    data = dict(filename=path, label=-1, start_index=0, modality='RGB')
    return data, video_pipeline(cfg.test_pipeline)


def read_labels(path: Optional[str]) -> Optional[List[str]]:
    """The class names of a label file, one per line (``None`` for no
    file)."""
    if path is None:
        return None
    if not osp.isfile(path):
        raise FileNotFoundError(f'label file not found: {path}')
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def predict(video: str,
            config: str,
            checkpoint: str,
            *,
            device: str = 'cpu',
            cfg_options: Optional[dict] = None) -> torch.Tensor:
    """Class scores ``[num_classes]`` of one video."""
    from mmengine.dataset import Compose

    from mmaction.apis import inference_recognizer
    cfg = load_config(config, cfg_options)
    data, pipeline = load_input(video, cfg)
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    # weights_only loading; refuses a checkpoint of another architecture.
    # build_model sets the default scope the pipeline's types live in
    model = build_model(cfg, checkpoint, device=device)
    result = inference_recognizer(model, data, test_pipeline=Compose(pipeline))
    return result.pred_score.detach().cpu()
