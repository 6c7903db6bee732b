# Copyright (c) mmrsa contributors. All rights reserved.
"""Generate the SynthMotion motion-classification set.

Example::

    python tools/data/synthmotion/generate_synthmotion.py \
        --out data/synthmotion
    python tools/data/synthmotion/generate_synthmotion.py \
        --out data/synthmotion \
        --format both --num-train 2000 --num-val 400 --seed 1 --force

See :mod:`mmrsa.datasets.synthmotion` for the classes, the layout and
``SynthMotionDataset``, which reads it. ``meta.json`` in the output folder
records the settings, which name every file the generator wrote; ``--force``
replaces those files and nothing else.
"""
import argparse
import sys
import time

FORMATS = {
    'rawframes': ('rawframes', ),
    'videos': ('videos', ),
    'both': ('rawframes', 'videos')
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write the procedurally generated SynthMotion set '
        '(Something-Something layouts: rawframes as SSv1, videos as SSv2).')
    parser.add_argument(
        '--out', default='data/synthmotion', help='output folder')
    parser.add_argument(
        '--format',
        choices=sorted(FORMATS),
        default='rawframes',
        help='rawframes (<clip>/{:05}.jpg), videos (<clip>.mp4) or both')
    parser.add_argument(
        '--num-train', type=int, default=2000, help='training clips')
    parser.add_argument(
        '--num-val', type=int, default=300, help='validation clips')
    parser.add_argument('--seed', type=int, default=0, help='seed of the set')
    parser.add_argument(
        '--size', type=int, default=64, help='frame height and width')
    parser.add_argument(
        '--min-frames', type=int, default=16, help='fewest frames a clip')
    parser.add_argument(
        '--max-frames', type=int, default=16, help='most frames a clip')
    parser.add_argument(
        '--fps', type=int, default=12, help='frame rate of the videos')
    parser.add_argument(
        '--force',
        '--overwrite',
        dest='overwrite',
        action='store_true',
        help='replace a set an earlier run wrote into --out: only the files '
        'its meta.json names are replaced (without it, an existing set is '
        'never overwritten; a file the generator did not write is never '
        'overwritten or deleted, even with --force)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from mmrsa.datasets.synthmotion import generate_synthmotion
    progress = None
    if not args.quiet:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(args.num_train + args.num_val)
        progress = lambda done, total: bar.update()  # noqa: E731

    start = time.time()
    try:
        generate_synthmotion(
            args.out,
            formats=FORMATS[args.format],
            num_train=args.num_train,
            num_val=args.num_val,
            seed=args.seed,
            size=args.size,
            min_frames=args.min_frames,
            max_frames=args.max_frames,
            fps=args.fps,
            overwrite=args.overwrite,
            progress=progress)
    except (FileExistsError, ValueError) as e:
        sys.exit(f'error: {e}')
    print(f'\nwrote {args.num_train} + {args.num_val} clips ({args.format}) '
          f'to {args.out} in {time.time() - start:.1f} s')


if __name__ == '__main__':
    main()
