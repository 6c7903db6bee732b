# Copyright (c) mmrsa contributors. All rights reserved.
"""Train a recognizer with an MMAction2 config that may use mmrsa modules.

The command line follows MMAction2's ``tools/train.py``::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--no-validate] [--auto-scale-lr] [--seed S] [--deterministic]
        [--cfg-options KEY=VALUE ...] [--trust-pickle]
        [--launcher none|pytorch|slurm|mpi]

``mmrsa`` is imported before anything else, so its compatibility fixes are in
place and its modules registered even for configs without
``custom_imports``. A checkpoint to resume from (or the config's
``load_from``) is read with ``torch.load(weights_only=True)`` plus the types
MMEngine checkpoints hold, unless ``--trust-pickle`` opts in for that file.
Distributed runs: ``bash tools/dist_train.sh CONFIG N``.
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
from mmrsa.apis import ToolConfigError, build_train_config  # noqa: E402
from mmrsa.datasets import AnnotationError, SampleLoadError  # noqa: E402
from mmrsa.engine import CheckpointMismatchError  # noqa: E402
from mmrsa.engine import (ClipSamplingError, NonFiniteTrainingError,
                          NonFiniteWeightsError, WorkDirBusyError,
                          find_resumable_checkpoint)
from mmrsa.fileio.atomic import OverwriteRefusedError  # noqa: E402
from mmrsa.fileio.checkpoint import CheckpointDownloadError  # noqa: E402
from mmrsa.fileio.checkpoint import (CheckpointFileError,
                                     UnsafeCheckpointError, trust_checkpoint)
from mmrsa.utils import keep_freed_memory  # noqa: E402

#: Errors whose message says what is wrong; reported without a traceback
#: (exit code 1). A pre-empted run (PreemptionHook) exits with code 75.
CLEAR_ERRORS = (UnsafeCheckpointError, CheckpointFileError,
                CheckpointDownloadError, CheckpointMismatchError,
                ClipSamplingError, AnnotationError, SampleLoadError,
                WorkDirBusyError, NonFiniteTrainingError,
                NonFiniteWeightsError)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train an action recognizer (MMAction2 + mmrsa).')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--work-dir',
        help='where logs and checkpoints go; defaults to '
        'work_dirs/<config name>')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        default=None,
        help='resume from this checkpoint, or without a value from the '
        'latest checkpoint in the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision: float16 AmpOptimWrapper on a GPU, bfloat16 '
        'autocast on a CPU')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not validate during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual total batch size over '
        '`auto_scale_lr.base_batch_size`')
    parser.add_argument(
        '--seed',
        type=int,
        default=None,
        help='random seed (overrides '
        'the config\'s `randomness.seed`)')
    parser.add_argument(
        '--diff-rank-seed',
        action='store_true',
        help='a different seed on every rank')
    parser.add_argument(
        '--deterministic',
        action='store_true',
        help='deterministic algorithms (slower)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. '
        'train_cfg.max_epochs=2 "model.backbone.rsa_blocks=[[],[1],[1],[]]"')
    parser.add_argument(
        '--trust-pickle',
        action='store_true',
        help='let the checkpoint this run starts from (--resume, the latest '
        'one for a bare --resume, or the config\'s `load_from`) pickle '
        'arbitrary objects, which can run code: only for files you trust '
        '(checkpoints of your own runs load without it)')
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
        return build_train_config(
            args.config,
            work_dir=args.work_dir,
            resume=args.resume,
            amp=args.amp,
            no_validate=args.no_validate,
            auto_scale_lr=args.auto_scale_lr,
            seed=args.seed,
            diff_rank_seed=args.diff_rank_seed,
            deterministic=args.deterministic,
            cfg_options=args.cfg_options,
            launcher=args.launcher)
    except (ToolConfigError, OverwriteRefusedError) as e:
        raise SystemExit(f'error: {e}')


def _checkpoint_to_load(cfg: Config):
    """The checkpoint the run will load, if any."""
    if cfg.get('resume') and cfg.get('load_from') is None:
        return find_resumable_checkpoint(cfg.work_dir)
    return cfg.get('load_from')


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = build_config(args)
    if not torch.cuda.is_available():
        # reuse freed activation memory instead of page-faulting fresh
        # pages every iteration (MMRSA_KEEP_FREED_MEMORY=0 switches off)
        keep_freed_memory()
    if args.trust_pickle:
        checkpoint = _checkpoint_to_load(cfg)
        if checkpoint is None:
            raise SystemExit('error: --trust-pickle names no checkpoint: '
                             'this run neither resumes nor has load_from')
        trust_checkpoint(checkpoint)
    try:
        if 'runner_type' in cfg:
            runner = RUNNERS.build(cfg)
        else:
            runner = Runner.from_cfg(cfg)
        runner.train()
    except CLEAR_ERRORS as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
