# Copyright (c) mmrsa contributors. All rights reserved.
from .complexity import count_flops, count_params, recognizer_complexity

__all__ = ['count_flops', 'count_params', 'recognizer_complexity']
