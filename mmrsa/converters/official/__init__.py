# Copyright (c) mmrsa contributors. All rights reserved.
"""Checkpoints of the authors' RSA implementation, as mmrsa checkpoints.

One job per module:

- :mod:`.settings`: the RSA settings of an official state dict, read from
  its tensor shapes, as config overrides, and how they differ from a model;
- :mod:`.keymap`: official key -> mmrsa key, and the layout changes;
- :mod:`.oracle`: the authors' network forward on their own tensors, with
  the literal RSA of :mod:`mmrsa.models.common.rsa_reference` (``--verify``);
- :mod:`.convert`: reading the source (:mod:`mmrsa.fileio.checkpoint`),
  building the model (:mod:`mmrsa.apis.model`), converting, verifying and
  writing (:mod:`mmrsa.fileio.atomic`): :func:`convert_official_checkpoint`.
"""
from .convert import (DEFAULT_CONFIG, OFFICIAL_CHECKPOINTS,
                      check_against_model, convert_official_checkpoint,
                      fetch_official, is_url, load_official,
                      official_state_dict)
from .errors import ConversionError
from .keymap import convert_state_dict, map_key
from .oracle import (official_forward, official_rsa_forward,
                     official_rsa_weights)
from .settings import (DEPTHS, TYPE_MAP, model_rsa_settings, official_blocks,
                       official_rsa_settings, official_settings,
                       settings_cfg_options, settings_mismatch)

__all__ = [
    'OFFICIAL_CHECKPOINTS', 'DEFAULT_CONFIG', 'ConversionError', 'is_url',
    'fetch_official', 'load_official', 'official_state_dict', 'TYPE_MAP',
    'DEPTHS', 'official_blocks', 'official_rsa_settings', 'official_settings',
    'settings_cfg_options', 'model_rsa_settings', 'settings_mismatch',
    'map_key', 'convert_state_dict', 'official_rsa_weights',
    'official_rsa_forward', 'official_forward', 'check_against_model',
    'convert_official_checkpoint'
]
