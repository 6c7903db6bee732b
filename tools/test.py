# Copyright (c) mmrsa contributors. All rights reserved.
"""Test (and evaluate) a checkpoint with an MMAction2 config that may use
mmrsa modules.

The command line follows MMAction2's ``tools/test.py``::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR]
        [--dump OUT.pkl [--force]] [--cfg-options KEY=VALUE ...]
        [--show-dir DIR] [--show]
        [--trust-pickle] [--launcher none|pytorch|slurm|mpi]

``mmrsa`` is imported before anything else. The checkpoint is read with
``torch.load(weights_only=True)`` (plus the types MMEngine checkpoints hold),
unless ``--trust-pickle`` opts in for this one file, and it must fit the
model built from the config (:class:`mmrsa.engine.CheckpointFitHook`).
``--dump`` writes the predictions (``pred_score``, ``pred_label``,
``gt_label`` per clip) to a pickle file.
"""
import argparse
import os
import os.path as osp
import sys

# runnable from a source checkout without installing mmrsa
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmrsa  # noqa: E402,F401  (compat fixes, registration)
from mmaction.registry import RUNNERS  # noqa: E402
from mmrsa.apis import ToolConfigError, build_test_config  # noqa: E402
from mmrsa.datasets import AnnotationError, SampleLoadError  # noqa: E402
from mmrsa.engine import CheckpointMismatchError  # noqa: E402
from mmrsa.engine import ClipSamplingError, NonFiniteCheckHook
from mmrsa.fileio.atomic import OverwriteRefusedError  # noqa: E402
from mmrsa.fileio.checkpoint import CheckpointDownloadError  # noqa: E402
from mmrsa.fileio.checkpoint import (CheckpointFileError,
                                     UnsafeCheckpointError, trust_checkpoint)
from mmrsa.utils import keep_freed_memory  # noqa: E402

#: Errors whose message says what is wrong; reported without a traceback.
CLEAR_ERRORS = (UnsafeCheckpointError, CheckpointFileError,
                CheckpointDownloadError, CheckpointMismatchError,
                ClipSamplingError, AnnotationError, SampleLoadError)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Test an action recognizer (MMAction2 + mmrsa).')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='where the metrics and logs go; defaults to '
        'work_dirs/<config name>')
    parser.add_argument(
        '--dump', help='also write the predictions to this pickle file (.pkl)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='overwrite an existing --dump file')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. test_dataloader.batch_size=4')
    parser.add_argument(
        '--trust-pickle',
        action='store_true',
        help='load CHECKPOINT with full unpickling (it may run code): only '
        'for a file you trust that holds more than tensors and plain data')
    parser.add_argument(
        '--show-dir', help='save visualised predictions to this folder')
    parser.add_argument(
        '--show', action='store_true', help='show predictions in a window')
    parser.add_argument(
        '--interval',
        type=int,
        default=1,
        help='visualise every this many samples')
    parser.add_argument(
        '--wait-time',
        type=float,
        default=2,
        help='seconds each shown prediction stays')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with the command-line changes."""
    try:
        return build_test_config(
            args.config,
            args.checkpoint,
            work_dir=args.work_dir,
            dump=args.dump,
            force=args.force,
            show=args.show,
            show_dir=args.show_dir,
            interval=args.interval,
            wait_time=args.wait_time,
            cfg_options=args.cfg_options,
            launcher=args.launcher)
    except (ToolConfigError, OverwriteRefusedError) as e:
        raise SystemExit(f'error: {e}')


def main(argv=None) -> dict:
    """Run the test; return the metrics."""
    args = parse_args(argv)
    cfg = build_config(args)
    if not torch.cuda.is_available():
        # reuse freed activation memory instead of page-faulting fresh
        # pages every iteration (MMRSA_KEEP_FREED_MEMORY=0 switches off)
        keep_freed_memory()
    if args.trust_pickle:
        trust_checkpoint(args.checkpoint)
    try:
        if 'runner_type' in cfg:
            runner = RUNNERS.build(cfg)
        else:
            runner = Runner.from_cfg(cfg)
        if not any(isinstance(h, NonFiniteCheckHook) for h in runner.hooks):
            # warns when predicted scores hold nan / inf
            runner.register_hook(NonFiniteCheckHook())
        return runner.test()
    except CLEAR_ERRORS as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
