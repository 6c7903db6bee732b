# Copyright (c) mmrsa contributors. All rights reserved.
from .resumable_runner import (DEFAULT_FILENAME_TMPLS, ResumableRunner,
                               checkpoint_problem, find_resumable_checkpoint)

__all__ = [
    'DEFAULT_FILENAME_TMPLS', 'ResumableRunner', 'checkpoint_problem',
    'find_resumable_checkpoint'
]
