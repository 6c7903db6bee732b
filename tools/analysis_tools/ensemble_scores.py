# Copyright (c) mmrsa contributors. All rights reserved.
"""Average the class scores of several tested models (the paper's "EN").

Dump each model's predictions with the test tool, then fuse them::

    python tools/test.py configs/recognition/rsanet/rsanet_r50_8x2_ssv1.py \\
        CKPT_8 --dump work_dirs/en/r50_8x2.pkl
    python tools/test.py configs/recognition/rsanet/rsanet_r50_16x2_ssv1.py \\
        CKPT_16 --dump work_dirs/en/r50_16x2.pkl
    python tools/analysis_tools/ensemble_scores.py work_dirs/en/r50_8x2.pkl \\
        work_dirs/en/r50_16x2.pkl [--weights 1 1] [--out en.pkl [--force]]

Printed: top-1, top-5 and mean class accuracy (%) of every input and of the
weighted average. ``--out`` writes the fused scores as a dump of the same
format; an existing file is kept unless ``--force``, and an input dump is
never overwritten. Reading a dump runs no code from it. How dumps are
matched and when a softmax is applied: :mod:`mmrsa.evaluation.ensemble`.
"""
import argparse
import sys

SOFTMAX_MODES = ('auto', 'always', 'never')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Average the scores of models tested with '
        'tools/test.py --dump (the paper\'s 8+16-frame ensemble).')
    parser.add_argument('dumps', nargs='+', help='two or more .pkl dumps')
    parser.add_argument(
        '--weights',
        type=float,
        nargs='+',
        help='one finite, non-negative weight per dump, not all zero')
    parser.add_argument(
        '--softmax',
        choices=SOFTMAX_MODES,
        default='auto',
        help='softmax the scores first: auto (only for scores that are not '
        'probabilities), always or never')
    parser.add_argument('--out', help='write the fused scores as a dump')
    parser.add_argument(
        '--force',
        action='store_true',
        help='overwrite an existing --out file (never one of the inputs)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmrsa.evaluation import (EnsembleError, check_out_path, check_weights,
                                  ensemble, format_report, write_dump)
    try:
        check_weights(args.weights, len(args.dumps))
        if args.out:  # before the work: an input is never overwritten
            check_out_path(args.out, args.dumps, args.force)
        result = ensemble(args.dumps, args.weights, args.softmax)
        print(format_report(result))
        if args.out:
            write_dump(result, args.out, args.force)
            print(f'fused scores written to {args.out}')
    except (EnsembleError, OSError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
