# Copyright (c) mmrsa contributors. All rights reserved.
"""Classify one video with a recognizer and print the top-5 labels.

Example (after ``bash tools/run.sh demo``, i.e. ``python
demo/synthmotion_demo.py``)::

    python demo/demo.py data/synthmotion/videos/val_00000.mp4 \
        configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py \
        work_dirs/synthmotion_demo/rsanet_r18_8x1_synthmotion.pth \
        --label-file data/synthmotion/label_map.txt

VIDEO is a video file or a folder of frames; see
:mod:`mmrsa.apis.inference`, which this script calls.
"""
import argparse
import os.path as osp
import sys
from typing import List, Tuple

# runnable from a source checkout without installing mmrsa
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

import mmrsa  # noqa: E402,F401  (compat fixes, registration)

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from mmrsa.apis.inference import predict, read_labels  # noqa: E402
from mmrsa.utils.checkpoint import (CheckpointDownloadError,  # noqa: E402
                                    UnsafeCheckpointError, trust_checkpoint)


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
