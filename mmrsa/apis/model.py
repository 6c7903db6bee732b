# Copyright (c) mmrsa contributors. All rights reserved.
"""From a config to a model: the one path every mmrsa tool and API takes.

:func:`find_config` resolves a config name, :func:`load_config` reads it
(with overrides) and :func:`build_model` builds the recognizer, optionally
loading a checkpoint through the safe loader with the architecture check of
:func:`mmrsa.engine.load_checkpoint_strictly`. Inference, ONNX export, the
complexity counter, the converter, the kernel tool and the benchmark all call
these.
"""
import copy
import os.path as osp
from typing import Dict, Optional, Union

import torch.nn as nn
from mmengine.config import Config

__all__ = ['CONFIG_ROOTS', 'find_config', 'load_config', 'build_model']

_PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: Where a relative config path is looked up when it is not found from the
#: working directory: the repository root (a checkout) and the installed
#: package's ``.mim`` folder (a wheel).
CONFIG_ROOTS = (osp.dirname(_PACKAGE_DIR), osp.join(_PACKAGE_DIR, '.mim'))


def find_config(config: str) -> str:
    """``config`` itself when it exists (or is absolute), else the first
    ``CONFIG_ROOTS/config`` that exists.

    Raises:
        FileNotFoundError: Nowhere to be found; the message lists where it
            was looked for.
    """
    config = str(config)
    if osp.isfile(config):
        return config
    if not osp.isabs(config):
        for root in CONFIG_ROOTS:
            candidate = osp.join(root, config)
            if osp.isfile(candidate):
                return candidate
    looked = [config] + [
        osp.join(root, config)
        for root in CONFIG_ROOTS if not osp.isabs(config)
    ]
    raise FileNotFoundError(
        f'config file not found: {config} (looked for {", ".join(looked)}). '
        f'Pass a path to a config, e.g. '
        f'configs/recognition/rsanet/rsanet_r50_8x1_ssv1.py.')


def load_config(config: Union[str, Config],
                cfg_options: Optional[Dict] = None) -> Config:
    """Read ``config`` (a path, see :func:`find_config`, or a ``Config``,
    which is copied) and merge ``cfg_options`` into it."""
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        cfg = Config.fromfile(find_config(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _drop_pretrained(model_cfg) -> None:
    """No ImageNet/pretrained weights: the model is initialised by its
    constructors only (nothing is downloaded)."""
    backbone = model_cfg.get('backbone')
    if isinstance(backbone, dict):
        if backbone.get('pretrained') is not None:
            backbone['pretrained'] = None
        if 'pretrained2d' in backbone:  # TSM-family backbones need both
            backbone['pretrained2d'] = False
        backbone.pop('init_cfg', None)
    model_cfg.pop('init_cfg', None)


def build_model(config: Union[str, Config],
                checkpoint: Optional[str] = None,
                *,
                cfg_options: Optional[Dict] = None,
                device: str = 'cpu',
                pretrained: bool = False,
                init_weights: bool = False,
                data_preprocessor: bool = True,
                eval_mode: bool = True) -> nn.Module:
    """The recognizer of ``config``, optionally with ``checkpoint`` loaded.

    Args:
        config (str | Config): A recognizer config (path or object).
        checkpoint (str, optional): Weights to load: any path or URL the safe
            loader reads, checked to fit the model
            (:func:`mmrsa.engine.load_checkpoint_strictly`). Defaults to
            None.
        cfg_options (dict, optional): Overrides merged into the config.
            Defaults to None.
        device (str): Where the model goes. Defaults to ``'cpu'``.
        pretrained (bool): Keep the config's ``pretrained`` / ``init_cfg``
            (may download ImageNet weights when ``init_weights``). Defaults
            to False: a checkpoint or random weights are what is wanted.
        init_weights (bool): Run ``model.init_weights()`` (the training
            initialisation) after building. Defaults to False.
        data_preprocessor (bool): Keep the config's data preprocessor.
            Defaults to True; False builds the model for shaped float clips.
        eval_mode (bool): Return the model in eval mode. Defaults to True.

    Returns:
        nn.Module: The model, with the config as ``model.cfg`` (as
        ``mmaction.apis.init_recognizer`` sets it).
    """
    from mmengine.registry import init_default_scope

    from mmaction.registry import MODELS

    cfg = load_config(config, cfg_options)
    model_cfg = copy.deepcopy(cfg.model)
    if not pretrained:
        _drop_pretrained(model_cfg)
    if not data_preprocessor:
        model_cfg['data_preprocessor'] = None
    init_default_scope(cfg.get('default_scope', 'mmaction'))
    model = MODELS.build(model_cfg)
    if init_weights:
        model.init_weights()
    if checkpoint is not None:
        from mmrsa.engine import load_checkpoint_strictly
        load_checkpoint_strictly(model, checkpoint)
    model.cfg = cfg
    model.to(device)
    return model.eval() if eval_mode else model
