# Copyright (c) mmrsa contributors. All rights reserved.
"""Export a recognizer to ONNX and check it with onnxruntime.

The graph maps a normalised clip ``[N, T, C, H, W]`` (or frames
``[N*T, C, H, W]``) to the raw class scores ``[N, num_classes]`` (the
``cls_head`` output, before softmax), with a dynamic batch axis; the file is
then run with onnxruntime on 1 and 3 clips and compared with eager PyTorch::

    python tools/deployment/export_onnx.py \\
        configs/recognition/rsanet/rsanet_r50_8x1_ssv1.py \\
        checkpoints/rsanet_r50_8x1_ssv1.pth --out rsanet_r50_8x1_ssv1.onnx
    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out m.onnx \\
        --legacy --opset 11 --shape 1 8 3 224 224

``--dynamo`` (default) uses PyTorch's ``torch.export``-based exporter,
``--legacy`` the TorchScript-based one (``dynamo=False``) that mmdeploy
calls. See :mod:`mmrsa.deployment.onnx`.
"""
import argparse
import os
import os.path as osp
import pickle
import sys

from mmengine.config import DictAction

# runnable from a source checkout without installing mmrsa
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export a recognizer to ONNX (clip -> raw class scores) '
        'and compare onnxruntime with PyTorch.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', required=True, help='the .onnx file')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        help='input shape N T C H W (or N*T C H W); defaults to one clip of '
        'the config (1, num_segments, 3, crop, crop). N is dynamic')
    exporter = parser.add_mutually_exclusive_group()
    exporter.add_argument(
        '--dynamo',
        dest='exporter',
        action='store_const',
        const='dynamo',
        help="torch.export-based exporter (default)")
    exporter.add_argument(
        '--legacy',
        dest='exporter',
        action='store_const',
        const='legacy',
        help='TorchScript-based exporter (dynamo=False), as mmdeploy')
    parser.set_defaults(exporter='dynamo')
    parser.add_argument(
        '--opset',
        type=int,
        help='ONNX opset (default: 17 with --legacy, the exporter\'s own '
        'with --dynamo)')
    parser.add_argument(
        '--trust-pickle',
        action='store_true',
        help='load CHECKPOINT even if it pickles arbitrary objects, which '
        'can run code: only for a file you trust')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, KEY=VALUE')
    args = parser.parse_args(argv)
    if args.shape is not None and len(args.shape) not in (4, 5):
        parser.error('--shape takes N T C H W or N*T C H W')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import mmrsa  # noqa: F401  (compat fixes, registration)
    from mmrsa.deployment import export_config
    from mmrsa.fileio.checkpoint import trust_checkpoint

    for path, what in ((args.config, 'config'), (args.checkpoint,
                                                 'checkpoint')):
        if not osp.isfile(path):
            print(f'error: {what} not found: {path}', file=sys.stderr)
            return 1
    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    try:
        if args.trust_pickle:
            trust_checkpoint(args.checkpoint)
        report = export_config(
            args.config,
            args.out,
            checkpoint=args.checkpoint,
            shape=args.shape,
            exporter=args.exporter,
            opset=args.opset,
            cfg_options=args.cfg_options)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    shape = 'x'.join(map(str, report['shape']))
    print(f"exported {report['path']} ({args.exporter} exporter, input "
          f"{shape}, batch dynamic, {report['num_classes']} classes) in "
          f"{report['export_s']:.1f} s")
    for batch, diff in report['max_abs_diff'].items():
        print(f'onnxruntime vs PyTorch, {batch} clip(s): max abs diff '
              f'{diff:.3g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
