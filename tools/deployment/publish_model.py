# Copyright (c) mmrsa contributors. All rights reserved.
# Replaces MMAction2's: its torch.load fails on HistoryBuffer with torch>=2.6.
"""Turn a training checkpoint into a publishable one.

Keeps the weights and the plain metadata, drops the optimizer, schedulers
and message hub, and writes ``<OUT_PREFIX>-<sha256[:8]>.pth``, which loads
with ``torch.load(weights_only=True)`` (see
:func:`mmrsa.utils.publish.publish_checkpoint`)::

    python tools/deployment/publish_model.py \\
        work_dirs/rsanet/epoch_50.pth checkpoints/rsanet_r50_8x1_ssv1
    # -> checkpoints/rsanet_r50_8x1_ssv1-1a2b3c4d.pth, sha256 printed

Reading the input runs no code from it; ``--trust-pickle`` opts in for an
input you trust that pickles other objects.
"""
import argparse
import pickle
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Strip optimizer and runtime state from a checkpoint and '
        'name it by its sha256.')
    parser.add_argument('in_file', help='input checkpoint')
    parser.add_argument(
        'out_prefix',
        help='output path without the hash, e.g. checkpoints/rsanet_r50_8x1')
    parser.add_argument(
        '--force',
        action='store_true',
        help='overwrite the output file if it exists')
    parser.add_argument(
        '--trust-pickle',
        action='store_true',
        help='allow arbitrary pickled objects in IN_FILE (runs code from the '
        'file: only for files you trust)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import mmrsa  # noqa: F401
    from mmrsa.fileio.checkpoint import trust_checkpoint
    from mmrsa.utils.publish import publish_checkpoint
    try:
        if args.trust_pickle:
            trust_checkpoint(args.in_file)
        out_path, sha256, dropped = publish_checkpoint(args.in_file,
                                                       args.out_prefix,
                                                       args.force)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
        message = str(err)
        if args.in_file not in message:  # every message names the file
            message = f'{args.in_file}: {message}'
        print(f'error: {message}', file=sys.stderr)
        return 1
    if dropped:
        print('dropped: ' + ', '.join(dropped))
    print(f'{out_path}\nsha256 {sha256}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
