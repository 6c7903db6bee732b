# Copyright (c) mmrsa contributors. All rights reserved.
from .run_config import ToolConfigError, build_test_config, build_train_config

__all__ = ['ToolConfigError', 'build_train_config', 'build_test_config']
