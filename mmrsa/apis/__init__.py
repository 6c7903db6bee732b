# Copyright (c) mmrsa contributors. All rights reserved.
from .inference import load_input, predict, read_labels
from .model import CONFIG_ROOTS, build_model, find_config, load_config
from .run_config import ToolConfigError, build_test_config, build_train_config

__all__ = [
    'CONFIG_ROOTS', 'find_config', 'load_config', 'build_model',
    'ToolConfigError', 'build_train_config', 'build_test_config', 'load_input',
    'predict', 'read_labels'
]
