# Copyright (c) mmrsa contributors. All rights reserved.
"""GFLOPs and parameters of a config, counted as the RSA paper counts them.

One FLOP is one fused multiply-add; batch normalisation is not counted (it
folds into the convolution before it at inference), nor are element-wise ops
and pooling. The count is for **one clip** (one view): ``T x 3 x 224 x 224``
for the paper's recipes, with ``T`` the backbone's ``num_segments``. The
parameters include the classifier. Counting is done by
:mod:`mmrsa.analysis` (MMEngine's ``FlopAnalyzer``).

Examples::

    python tools/analysis_tools/get_flops.py \\
        configs/recognition/rsanet/rsanet_r50_8x1_ssv1.py
    python tools/analysis_tools/get_flops.py CONFIG --shape 16 3 224 224
    python tools/analysis_tools/get_flops.py CONFIG --shape 112  # 112 x 112
    python tools/analysis_tools/get_flops.py CONFIG --json --table 4
    python tools/analysis_tools/get_flops.py --paper-tables [--cache FILE]

``--shape`` takes one clip without the batch dimension (``T 3 H W``; the
batch of 1 is added here), or ``H W`` / ``S`` for the frame size with ``T``
taken from the config; by default ``T`` and the test crop size (224 for the
paper's recipes) come from the config.

``--paper-tables`` builds every ablation config and prints our numbers next
to those printed in the paper (main Tables 2, 4a-d; supplementary Tables
2a-c) with the difference, flagging rows off by more than 0.1 M parameters
or 0.15 GFLOPs. It counts 40 ResNet-50s (one of them 252 GFLOPs): minutes
on a CPU; ``--cache FILE`` keeps the counts for the next run.
"""
import argparse
import json
import sys

from mmengine.config import DictAction


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='GFLOPs (multiply-adds, batch norm excluded) and '
        'parameters of a config, or of every paper ablation row.')
    parser.add_argument('config', nargs='?', help='config file')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        help='one clip without the batch dimension: T 3 H W, or H W, or S '
        '(default: T 3 224 224 with T from the config)')
    parser.add_argument(
        '--paper-tables',
        action='store_true',
        help='count every ablation config and compare with the paper')
    parser.add_argument(
        '--table',
        type=int,
        metavar='DEPTH',
        help='also print FLOPs and parameters per module down to DEPTH')
    parser.add_argument(
        '--json', action='store_true', help='print one JSON object')
    parser.add_argument(
        '--cache',
        help='JSON file that keeps counts between runs (invalidated when '
        'mmrsa.models, torch or mmengine change)')
    parser.add_argument(
        '--threads', type=int, help='torch threads while counting')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, KEY=VALUE')
    args = parser.parse_args(argv)
    if not args.config and not args.paper_tables:
        parser.error('give a CONFIG or --paper-tables')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmrsa.analysis import (ComplexityCounter, config_complexity,
                                flops_table, format_paper_tables, load_config,
                                paper_table_rows)
    counter = ComplexityCounter(args.cache, args.threads)
    if args.paper_tables:
        rows = paper_table_rows(
            counter,
            progress=None if args.json else
            (lambda line: print(line, file=sys.stderr)))
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            print(format_paper_tables(rows))
        if not args.config:
            return 0
    try:
        result = config_complexity(args.config, args.shape, counter,
                                   args.cfg_options)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        t, c, h, w = result['clip_shape']
        views = result['clips'] * result['crops']
        print(f'config      {result["config"]}\n'
              f'input       one clip of {t} x {c} x {h} x {w} '
              f'(T x C x H x W)\n'
              f'FLOPs       {result["flops"] / 1e9:.2f} G per clip '
              f'(multiply-adds; batch norm excluded)\n'
              f'params      {result["params"] / 1e6:.2f} M\n'
              f'test views  {result["clips"]} clip(s) x {result["crops"]} '
              f'crop(s): {views * result["flops"] / 1e9:.2f} G per video')
    if args.table:
        cfg = load_config(args.config, args.cfg_options)
        print(flops_table(cfg, result['clip_shape'], args.table))
    return 0


if __name__ == '__main__':
    sys.exit(main())
