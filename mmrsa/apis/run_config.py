# Copyright (c) mmrsa contributors. All rights reserved.
"""The configs that ``tools/train.py`` and ``tools/test.py`` run.

The command-line options of MMAction2's tools, applied to a config. The
scripts parse their arguments and call these functions; tests call them
directly.
"""
import os.path as osp
from typing import Any, Dict, Optional

from mmengine.config import Config

from mmrsa.apis.model import load_config
from mmrsa.fileio.atomic import refuse_existing
from mmrsa.utils.config import check_batch_sizes

__all__ = ['ToolConfigError', 'build_train_config', 'build_test_config']


class ToolConfigError(ValueError):
    """A command-line option does not fit the config."""


def _load(config: str, cfg_options: Optional[Dict[str, Any]],
          work_dir: Optional[str], launcher: str) -> Config:
    cfg = load_config(config, cfg_options)
    try:
        check_batch_sizes(cfg)
    except ValueError as e:
        raise ToolConfigError(str(e)) from None
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(config))[0]
        cfg.work_dir = osp.join('work_dirs', name)
    return cfg


def _use_amp(cfg: Config, cuda: bool) -> None:
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper not in ('OptimWrapper', 'AmpOptimWrapper',
                       'CPUAutocastOptimWrapper'):
        raise ToolConfigError(f'--amp cannot replace the custom optimizer '
                              f'wrapper {wrapper!r} of this config.')
    if cuda:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        # registered by mmrsa.engine.optimizers
        cfg.optim_wrapper.type = 'CPUAutocastOptimWrapper'


def build_train_config(config: str,
                       *,
                       work_dir: Optional[str] = None,
                       resume: Optional[str] = None,
                       amp: bool = False,
                       no_validate: bool = False,
                       auto_scale_lr: bool = False,
                       seed: Optional[int] = None,
                       diff_rank_seed: bool = False,
                       deterministic: bool = False,
                       cfg_options: Optional[Dict[str, Any]] = None,
                       launcher: str = 'none',
                       cuda: Optional[bool] = None) -> Config:
    """The config of a training run, as MMAction2's ``tools/train.py``
    options change it.

    Args:
        config (str): Config file.
        work_dir (str, optional): Defaults to the config's, else
            ``work_dirs/<config name>``.
        resume (str, optional): ``'auto'`` (the latest checkpoint of the
            work dir) or a checkpoint path/URL. Defaults to None.
        amp (bool): float16 ``AmpOptimWrapper`` with CUDA, bfloat16
            ``CPUAutocastOptimWrapper`` without.
        no_validate (bool): Drop validation (and ``save_best``).
        auto_scale_lr (bool): Enable the config's ``auto_scale_lr``.
        seed, diff_rank_seed, deterministic: ``randomness`` overrides.
        cfg_options (dict, optional): Overrides merged into the config.
        launcher (str): Job launcher. Defaults to ``'none'``.
        cuda (bool, optional): Whether a GPU runs the job (chooses the AMP
            wrapper). Defaults to ``torch.cuda.is_available()``.

    Raises:
        ToolConfigError: An option does not fit the config.
    """
    if cuda is None:
        import torch
        cuda = torch.cuda.is_available()
    cfg = _load(config, cfg_options, work_dir, launcher)
    if no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        # nothing to pick the best checkpoint from
        ckpt_hook = cfg.get('default_hooks', {}).get('checkpoint')
        if ckpt_hook is not None:
            ckpt_hook.pop('save_best', None)
            ckpt_hook.pop('rule', None)
    if amp:
        _use_amp(cfg, cuda)
    if resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        if '://' not in resume and not osp.isfile(resume):
            raise ToolConfigError(f'--resume {resume}: no such file')
        cfg.resume, cfg.load_from = True, resume
    if auto_scale_lr:
        if not isinstance(cfg.get('auto_scale_lr'), dict):
            raise ToolConfigError('--auto-scale-lr needs `auto_scale_lr = '
                                  'dict(base_batch_size=...)` in the config.')
        cfg.auto_scale_lr.enable = True
    randomness = dict(cfg.get('randomness') or {})
    if seed is not None:
        randomness['seed'] = seed
    if diff_rank_seed:
        randomness['diff_rank_seed'] = True
    if deterministic:
        randomness['deterministic'] = True
    cfg.randomness = randomness
    return cfg


def build_test_config(config: str,
                      checkpoint: str,
                      *,
                      work_dir: Optional[str] = None,
                      dump: Optional[str] = None,
                      force: bool = False,
                      show: bool = False,
                      show_dir: Optional[str] = None,
                      interval: int = 1,
                      wait_time: float = 2,
                      cfg_options: Optional[Dict[str, Any]] = None,
                      launcher: str = 'none') -> Config:
    """The config of a test run, as MMAction2's ``tools/test.py`` options
    change it, with ``CheckpointFitHook`` added when the config lacks it (a
    checkpoint of another architecture is refused instead of testing a
    half-loaded model).

    Raises:
        ToolConfigError: A missing checkpoint, a ``dump`` that is not a
            ``.pkl`` file, or one that exists without ``force``.
    """
    if '://' not in checkpoint and not osp.isfile(checkpoint):
        raise ToolConfigError(f'checkpoint {checkpoint!r} does not exist')
    cfg = _load(config, cfg_options, work_dir, launcher)
    cfg.load_from = checkpoint
    cfg.resume = False
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') == 'CheckpointFitHook' for h in hooks):
        hooks.append(dict(type='CheckpointFitHook'))
    cfg.custom_hooks = hooks

    if show or show_dir is not None:
        default_hooks = cfg.setdefault('default_hooks', {})
        vis = default_hooks.get('visualization') or dict(
            type='VisualizationHook')
        vis.update(
            enable=True,
            show=show,
            out_dir=show_dir,
            interval=interval,
            wait_time=wait_time)
        default_hooks['visualization'] = vis

    if dump is not None:
        if not dump.endswith(('.pkl', '.pickle')):
            raise ToolConfigError(
                f'--dump must name a .pkl file, got {dump!r}')
        refuse_existing(dump, force)
        entry = dict(type='DumpResults', out_file_path=dump)
        evaluator = cfg.test_evaluator
        if isinstance(evaluator, (list, tuple)):
            cfg.test_evaluator = [*evaluator, entry]
        else:
            cfg.test_evaluator = [evaluator, entry]
    return cfg
