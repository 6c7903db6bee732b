# Copyright (c) mmrsa contributors. All rights reserved.
"""The paper's Table 2 comparison on SynthMotion, in one command.

Trains and tests, with the same data, seeds and schedule, TSN-R18 (2D), the
R18 transform configs (3D, (2+1)D, self-attention and its variants, the
involution, one RSA layer; ``configs/recognition/rsanet/transforms/``),
RSANet-R18, TSM-R18 and a small TimeSformer, then prints top-1, the
direction accuracy within time-reversed class pairs, parameters, FLOPs and
training time per model (mean ± std over seeds) and writes a bar chart::

    python tools/analysis_tools/compare_transforms.py \\
        --data-root data/synthmotion --seeds 0 1 \\
        --work-dir work_dirs/compare_transforms \\
        --out work_dirs/compare_transforms/compare_transforms.png
    python tools/analysis_tools/compare_transforms.py --models tsn rsa \\
        --max-epochs 1

SynthMotion is generated in ``--data-root`` when that folder is absent or
empty (``--num-train``/``--num-val`` clips). Runs finished before (in
``<work-dir>/results.json``, same data and epochs) are not trained again.
The logic lives in :mod:`mmrsa.analysis.compare`.
"""
import argparse
import os
import os.path as osp
import sys
import time

from mmengine.config import DictAction

import mmrsa  # noqa: F401  (compat fixes, registration)
from mmrsa.analysis.compare import (COMPARE_MODELS, DEFAULT_MODELS,
                                    format_summary, plot_summary,
                                    run_comparison, summarise)
from mmrsa.datasets.synthmotion import (generate_synthmotion,
                                        synthmotion_is_complete)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train and test the spatio-temporal transforms of the '
        'RSA paper\'s Table 2 (and RSANet, TSM, TimeSformer) on SynthMotion '
        'and compare them.')
    parser.add_argument(
        '--models',
        nargs='+',
        choices=list(COMPARE_MODELS),
        default=list(DEFAULT_MODELS),
        help='models to compare, in this order (default: all)')
    parser.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        default=[0],
        help='training seeds; every model is trained once per seed')
    parser.add_argument(
        '--max-epochs',
        type=int,
        default=None,
        help='override the configs\' number of epochs (8)')
    parser.add_argument(
        '--data-root',
        default='data/synthmotion',
        help='the SynthMotion set (generated here if absent or empty)')
    parser.add_argument(
        '--num-train',
        type=int,
        default=2000,
        help='training clips when generating SynthMotion')
    parser.add_argument(
        '--num-val',
        type=int,
        default=300,
        help='test clips when generating SynthMotion')
    parser.add_argument(
        '--work-dir',
        default='work_dirs/compare_transforms',
        help='logs, checkpoints and results.json')
    parser.add_argument(
        '--out',
        default=None,
        help='bar chart PNG (default: <work-dir>/compare_transforms.png)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override entries of every model\'s config')
    parser.add_argument(
        '--report-only',
        action='store_true',
        help='train nothing: report the runs of --models x --seeds already '
        'in <work-dir>/results.json')
    parser.add_argument(
        '--threads',
        type=int,
        default=2,
        help='torch CPU threads (sized for 2 cores)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    import torch
    args = parse_args(argv)
    if args.max_epochs is not None and args.max_epochs <= 0:
        sys.exit('error: --max-epochs must be positive')
    torch.set_num_threads(args.threads)
    start = time.time()
    if not args.report_only and not synthmotion_is_complete(
            args.data_root, formats=('rawframes', )):
        if osp.isdir(args.data_root) and os.listdir(args.data_root):
            sys.exit(f'error: {args.data_root} holds no complete SynthMotion '
                     'set; give another --data-root or generate one with '
                     'tools/data/synthmotion/generate_synthmotion.py')
        print(
            f'generating SynthMotion ({args.num_train} + {args.num_val} '
            f'clips) in {args.data_root} ...',
            flush=True)
        generate_synthmotion(
            args.data_root,
            formats=('rawframes', ),
            num_train=args.num_train,
            num_val=args.num_val)
    rows = run_comparison(
        args.models,
        args.seeds,
        data_root=args.data_root,
        work_dir=args.work_dir,
        max_epochs=args.max_epochs,
        cfg_options=args.cfg_options,
        train=not args.report_only,
        progress=lambda line: print(line, flush=True))
    if not rows:
        sys.exit(f'error: no finished run of these models and seeds in '
                 f'{osp.join(args.work_dir, "results.json")}')
    summary = summarise(rows)
    out = args.out or osp.join(args.work_dir, 'compare_transforms.png')
    plot_summary(summary, out)
    print(f'\nSynthMotion ({args.data_root}), seeds '
          f'{" ".join(map(str, args.seeds))}; mean ± std over seeds; FLOPs '
          'of one test clip (8 x 32 x 32), multiply-adds; direction: the '
          'true class scores above its time reversal (chance 50 %)')
    print(format_summary(summary))
    print(f'bar chart: {out}')
    print(f'results: {osp.join(args.work_dir, "results.json")}')
    print(f'total wall time: {(time.time() - start) / 60:.1f} min '
          f'({torch.get_num_threads()} threads)')
    return 1 if any(s['errors'] for s in summary) else 0


if __name__ == '__main__':
    sys.exit(main())
