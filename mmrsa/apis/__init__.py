# Copyright (c) mmrsa contributors. All rights reserved.
from .inference import load_input, predict, read_labels
from .run_config import ToolConfigError, build_test_config, build_train_config

__all__ = [
    'ToolConfigError', 'build_train_config', 'build_test_config',
    'load_input', 'predict', 'read_labels'
]
