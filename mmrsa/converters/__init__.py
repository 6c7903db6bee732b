# Copyright (c) mmrsa contributors. All rights reserved.
"""Converters of checkpoints trained by other code bases."""
from .official import (OFFICIAL_CHECKPOINTS, ConversionError,
                       convert_official_checkpoint, convert_state_dict,
                       load_official, map_key, official_forward,
                       official_rsa_forward, official_rsa_settings,
                       official_settings, official_state_dict,
                       settings_cfg_options, settings_mismatch)

__all__ = [
    'OFFICIAL_CHECKPOINTS', 'ConversionError', 'convert_official_checkpoint',
    'convert_state_dict', 'load_official', 'map_key', 'official_forward',
    'official_rsa_forward', 'official_rsa_settings', 'official_settings',
    'official_state_dict', 'settings_cfg_options', 'settings_mismatch'
]
