# Copyright (c) mmrsa contributors. All rights reserved.
"""Draw the basic and relational kernels of an RSA layer (paper Fig. 3).

Usage::

    python tools/visualizations/visualize_kernels.py CONFIG CHECKPOINT VIDEO \\
        --out DIR [--layer layer1.2] [--query T H W] [--queries 0 1 2 3] \\
        [--force] [--trust-pickle]

VIDEO is a video file or a folder of frames; CHECKPOINT an mmrsa checkpoint
or ``none`` for random weights. What is drawn, for the clip and its time
reversal: :mod:`mmrsa.visualization.kernels`. Pictures of an earlier run in
DIR are kept unless ``--force``. Reading CHECKPOINT runs no code from it;
``--trust-pickle`` opts in for a local checkpoint you trust that pickles
other objects.
"""
import argparse
import pickle
import sys

from mmengine.config import DictAction


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw the basic and relational kernels of an RSA layer '
        'for a clip and its time reversal.')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        'checkpoint', help='mmrsa checkpoint, or "none" for random weights')
    parser.add_argument('video', help='video file or folder of frames')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument(
        '--force',
        action='store_true',
        help='overwrite the pictures and kernels.npz of an earlier run in '
        '--out (other files there are never touched)')
    parser.add_argument(
        '--trust-pickle',
        action='store_true',
        help='allow arbitrary pickled objects in a local CHECKPOINT (runs '
        'code from the file: only for files you trust)')
    parser.add_argument(
        '--layer',
        help='block holding the RSA layer, e.g. layer1.2 '
        '(default: the first RSA layer)')
    parser.add_argument(
        '--query',
        type=int,
        nargs=3,
        metavar=('T', 'H', 'W'),
        help='query position on the layer\'s feature map (default: frame '
        'T // 2, where the frames change most)')
    parser.add_argument(
        '--queries',
        type=int,
        nargs='+',
        help='which of the L queries to draw (default: the first 4)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, KEY=VALUE')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmrsa.fileio.atomic import OverwriteRefusedError
    from mmrsa.fileio.checkpoint import trust_checkpoint
    from mmrsa.visualization import visualize
    try:
        if args.trust_pickle and args.checkpoint.lower() != 'none':
            trust_checkpoint(args.checkpoint)
        result = visualize(args.config, args.checkpoint, args.video, args.out,
                           args.layer, args.query, args.queries,
                           args.cfg_options, args.force)
    except (OverwriteRefusedError, ValueError, OSError,
            pickle.UnpicklingError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'layer {result["layer"]}, query (t, h, w) = {result["position"]}, '
          f'queries {result["queries"]}')
    for name in ('basic', 'relational'):
        value = result[f'{name}_change']
        if value is not None:
            print(f'{name} kernel change under time reversal: '
                  f'{100 * value:.1f}% of its largest value')
    print('wrote ' + ', '.join(result['files']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
