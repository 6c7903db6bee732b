# Copyright (c) mmrsa contributors. All rights reserved.
"""onnxruntime CPU latency of recognizers, measured side by side.

Each config is exported with its initial weights (latency does not depend
on their values) and checked against PyTorch; then the models run in turn
for ``--rounds`` rounds in this one process and the median latency of each
is printed, with its ratio to the first config::

    python tools/deployment/benchmark_onnx.py \\
        configs/recognition/rsanet/rsanet_r50_8x1_ssv1.py \\
        configs/recognition/rsanet/ablations/rsanet_r50_8x1_ssv1_0layers.py \\
        --shape 1 8 3 224 224 --threads 2

(``..._0layers.py`` is RSANet-R50 without RSA layers: TSN-R50 with the same
head.) ``--profile K`` adds the K slowest operator types of each model in
onnxruntime's profiler. See :func:`mmrsa.deployment.onnx.benchmark_onnx` and
:func:`mmrsa.deployment.onnx.profile_onnx`.
"""
import argparse
import os.path as osp
import sys
import tempfile

# runnable from a source checkout without installing mmrsa
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Time recognizers exported to ONNX on onnxruntime (CPU), '
        'side by side in one process.')
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        help='input shape N T C H W (or N*T C H W) of every model; defaults '
        'to one clip of each config')
    exporter = parser.add_mutually_exclusive_group()
    exporter.add_argument(
        '--legacy',
        dest='exporter',
        action='store_const',
        const='legacy',
        help='TorchScript-based exporter (default)')
    exporter.add_argument(
        '--dynamo',
        dest='exporter',
        action='store_const',
        const='dynamo',
        help='torch.export-based exporter')
    parser.set_defaults(exporter='legacy')
    parser.add_argument('--opset', type=int, help='ONNX opset')
    parser.add_argument(
        '--threads',
        type=int,
        help='intra-op threads of onnxruntime and PyTorch (default: theirs)')
    parser.add_argument(
        '--rounds', type=int, default=10, help='timed runs of each model')
    parser.add_argument(
        '--warmup', type=int, default=2, help='untimed runs of each model')
    parser.add_argument(
        '--eager',
        action='store_true',
        help='also time eager PyTorch inference in the same rounds')
    parser.add_argument(
        '--profile',
        type=int,
        default=0,
        metavar='K',
        help='also print the K slowest operator types of each model in '
        "onnxruntime's profiler (ms per run, summed over the nodes)")
    parser.add_argument(
        '--malloc',
        choices=('default', 'keep'),
        default='default',
        help='"keep" keeps freed memory for reuse in this process (glibc '
        'mallopt, as tools/test.py does on CPU; see mmrsa.utils.allocator), '
        'which speeds up eager inference; onnxruntime has its own memory '
        'arena (default: glibc as it is)')
    parser.add_argument(
        '--work-dir',
        help='keep the .onnx files here (default: a temporary folder)')
    args = parser.parse_args(argv)
    if args.shape is not None and len(args.shape) not in (4, 5):
        parser.error('--shape takes N T C H W or N*T C H W')
    if args.rounds < 1 or args.warmup < 0:
        parser.error('--rounds must be positive and --warmup not negative')
    return args


def _ms(stats: dict) -> str:
    return f"{stats['median']:9.1f} ({stats['min']:.1f}-{stats['max']:.1f})"


def main(argv=None) -> int:
    args = parse_args(argv)
    import mmrsa  # noqa: F401  (compat fixes, registration)
    from mmrsa.deployment import benchmark_onnx
    from mmrsa.deployment.onnx import profile_onnx
    malloc = 'default'
    if args.malloc == 'keep':
        from mmrsa.utils.allocator import keep_freed_memory
        malloc = 'keep freed memory' if keep_freed_memory() else 'default'

    for config in args.configs:
        if not osp.isfile(config):
            print(f'error: config not found: {config}', file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory() as tmp:
        rows = benchmark_onnx(
            args.configs,
            args.work_dir or tmp,
            args.shape,
            exporter=args.exporter,
            opset=args.opset,
            threads=args.threads,
            warmup=args.warmup,
            rounds=args.rounds,
            eager=args.eager)
        profiles = [
            profile_onnx(row['path'], row['shape'], threads=args.threads)
            for row in rows
        ] if args.profile else []
    threads = args.threads if args.threads is not None else 'default'
    print(f'onnxruntime CPU, {args.exporter} exporter, {threads} threads, '
          f'median (min-max) of {args.rounds} rounds, ms; malloc: {malloc}')
    if args.eager:
        from mmrsa.models.common.rsa_native import native_status
        print(f'native RSA products (eager): {native_status()}')
    header = f"{'config':44s} {'input':>14s} {'onnxruntime':>22s}  ratio"
    eager_keys = [
        key for key in ('eager_ms', 'eager_torch_ms') if key in rows[0]
    ]
    titles = dict(eager_ms='PyTorch eager', eager_torch_ms='eager, no native')
    for key in eager_keys:
        header += f' {titles[key]:>22s}  ratio'
    print(header + '  max|diff|')
    base = rows[0]['onnx_ms']['median']
    for row in rows:
        name = osp.splitext(osp.basename(row['config']))[0]
        shape = 'x'.join(map(str, row['shape']))
        line = (f"{name:44s} {shape:>14s} {_ms(row['onnx_ms']):>22s} "
                f"{row['onnx_ms']['median'] / base:6.2f}")
        for key in eager_keys:
            line += (f' {_ms(row[key]):>22s} '
                     f"{row[key]['median'] / rows[0][key]['median']:6.2f}")
        diff = max(row['max_abs_diff'].values())
        print(f'{line}  {diff:.2g}')
    for row, ops in zip(rows, profiles):
        name = osp.splitext(osp.basename(row['config']))[0]
        total = sum(ms for _, ms, _ in ops)
        print(f'\n{name}: onnxruntime profile, {total:.1f} ms of node '
              f'time per run')
        print(f"{'op type':24s} {'ms/run':>9s} {'share':>6s} {'nodes':>6s}")
        for op, ms, nodes in ops[:args.profile]:
            print(f'{op:24s} {ms:9.1f} {100 * ms / total:5.1f}% {nodes:6d}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
