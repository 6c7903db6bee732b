# Copyright (c) mmrsa contributors. All rights reserved.
"""Classify one video with a recognizer and print the top-5 labels.

Example (after ``python tools/demo_synthmotion.py``)::

    python demo/demo.py data/synthmotion/videos/val_00000.mp4 \
        configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py \
        work_dirs/synthmotion_demo/rsanet_r18_8x1_synthmotion.pth \
        --label-file data/synthmotion/label_map.txt

VIDEO is a video file that decord can read, or a folder of frames named as
the config's ``filename_tmpl`` (SSv1 layout). The frames go through the
config's ``test_pipeline``; for a video file its frame-decoding step
(``RawFrameDecode``) is replaced by ``DecordInit`` and ``DecordDecode``, so a
config written for rawframes works on videos too.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional, Sequence, Tuple

# runnable from a source checkout without installing mmrsa
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

import mmrsa  # noqa: E402,F401  (compat fixes, registration)

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

from mmrsa.engine import load_checkpoint_strictly  # noqa: E402
from mmrsa.utils.checkpoint import (CheckpointDownloadError,  # noqa: E402
                                    UnsafeCheckpointError, trust_checkpoint)

DECODE_STEPS = ('RawFrameDecode', 'DecordDecode', 'OpenCVDecode',
                'PyAVDecode', 'VideoOrFramesDecode')
INIT_STEPS = ('DecordInit', 'OpenCVInit', 'PyAVInit', 'VideoOrFramesInit')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Print the top-5 labels of a video (MMAction2 + mmrsa).')
    parser.add_argument('video', help='video file or folder of frames')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--label-file',
        help='class names, one per line (the id is the line number); '
        'without it the class ids are printed')
    parser.add_argument(
        '--trust-pickle',
        action='store_true',
        help='load CHECKPOINT even if it pickles arbitrary objects, which '
        'can run code: only for a file you trust')
    parser.add_argument(
        '--device', default='cpu', help='torch device, e.g. cpu or cuda:0')
    parser.add_argument(
        '--topk', type=int, default=5, help='how many labels to print')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries')
    return parser.parse_args(argv)


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
        tmpl = _filename_tmpl(cfg)
        total = 0
        while osp.isfile(osp.join(path, tmpl.format(total + 1))):
            total += 1
        if total == 0:
            raise ValueError(f'{path} is a folder without frames named '
                             f'{tmpl.format(1)!r}, {tmpl.format(2)!r}, ...')
        data = dict(
            frame_dir=path,
            total_frames=total,
            filename_tmpl=tmpl,
            start_index=1,
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
    data = dict(filename=path, label=-1, start_index=0, modality='RGB')
    return data, video_pipeline(cfg.test_pipeline)


def read_labels(path: Optional[str]) -> Optional[List[str]]:
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

    from mmaction.apis import inference_recognizer, init_recognizer
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    data, pipeline = load_input(video, cfg)
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    # weights_only loading; refuses a checkpoint of another architecture
    model = init_recognizer(cfg, None, device=device)
    load_checkpoint_strictly(model, checkpoint)
    # init_recognizer set the default scope the pipeline's types live in
    result = inference_recognizer(
        model, data, test_pipeline=Compose(pipeline))
    return result.pred_score.detach().cpu()


def main(argv=None) -> List[Tuple[str, float]]:
    args = parse_args(argv)
    if args.trust_pickle:
        trust_checkpoint(args.checkpoint)
    try:
        labels = read_labels(args.label_file)
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
        sys.exit(f'error: {args.label_file} has {len(labels)} names but the '
                 f'model predicts {len(scores)} classes')
    k = min(args.topk, len(scores))
    top = torch.topk(scores, k)
    results = []
    print(f'top-{k} labels for {args.video}:')
    for score, idx in zip(top.values.tolist(), top.indices.tolist()):
        name = labels[idx] if labels is not None else str(idx)
        results.append((name, score))
        print(f'{score:8.4f}  {name}')
    return results


if __name__ == '__main__':
    main()
