# Copyright (c) mmrsa contributors. All rights reserved.
from .resumable_runner import (DEFAULT_FILENAME_TMPLS, PREEMPTED_FILENAME_TMPL,
                               RUN_ID_FILE, ResumableRunner, checkpoint_meta,
                               checkpoint_problem, find_resumable_checkpoint,
                               read_run_id, remove_checkpoint_temporaries)
from .work_dir_lock import (LOCK_FILE, WorkDirBusyError, WorkDirLock,
                            lock_holder)

__all__ = [
    'DEFAULT_FILENAME_TMPLS', 'PREEMPTED_FILENAME_TMPL', 'RUN_ID_FILE',
    'ResumableRunner', 'checkpoint_meta', 'checkpoint_problem',
    'find_resumable_checkpoint', 'read_run_id',
    'remove_checkpoint_temporaries', 'LOCK_FILE', 'WorkDirBusyError',
    'WorkDirLock', 'lock_holder'
]
