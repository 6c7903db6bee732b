# Copyright (c) mmrsa contributors. All rights reserved.
"""Convert a checkpoint of the authors' RSA implementation to mmrsa.

Usage::

    python tools/convert/convert_official_checkpoint.py SRC DST \\
        [--config CFG] [--verify] [--trust-pickle] [--force]

SRC is a local file or an ``http(s)://`` URL (downloaded once into the
torch hub cache). The settings read from the shapes, the key map, the
official-style forward pass used by ``--verify`` and the conversion are in
:mod:`mmrsa.converters.official` (``settings``, ``keymap``, ``oracle``,
``convert``). An existing DST is kept unless ``--force``.
"""
import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert a checkpoint of the authors\' RSA '
        'implementation (KimManjin/RSA) into an mmrsa checkpoint.')
    parser.add_argument(
        'src',
        help='official checkpoint (.pth / .pth.tar): a path or an '
        'http(s) URL')
    parser.add_argument('dst', help='mmrsa checkpoint to write')
    parser.add_argument(
        '--config',
        help='mmrsa config the checkpoint must match (default: read the '
        'settings from the checkpoint, on top of rsanet_r50_8x1_ssv1.py)')
    parser.add_argument(
        '--verify',
        action='store_true',
        help='compare logits with an independent official forward pass')
    parser.add_argument(
        '--verify-size', type=int, default=224, help='frame size for --verify')
    parser.add_argument(
        '--trust-pickle',
        action='store_true',
        help='allow arbitrary pickled objects in a local SRC (runs code from '
        'the file: only for sources you trust)')
    parser.add_argument(
        '--force', action='store_true', help='overwrite DST if it exists')
    parser.add_argument(
        '--no-progress',
        dest='progress',
        action='store_false',
        help='no progress bar while downloading')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmrsa.converters import ConversionError, convert_official_checkpoint
    from mmrsa.fileio.atomic import OverwriteRefusedError
    try:
        convert_official_checkpoint(
            args.src,
            args.dst,
            args.config,
            trust_pickle=args.trust_pickle,
            verify=args.verify,
            verify_size=args.verify_size,
            overwrite=args.force,
            progress=args.progress,
            log=print)
    except (ConversionError, OverwriteRefusedError, OSError) as err:
        # OSError: a missing --config, a DST that cannot be written
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
