# Copyright (c) mmrsa contributors. All rights reserved.
from .allocator import keep_freed_memory
from .compat import (apply_compat_fixes, patch_bf16_head_loss, patch_cpu_ddp,
                     patch_cpu_distributed, patch_missing_drn,
                     patch_numpy_aliases, patch_tsm_optim_params)
from .memory import saved_bytes

__all__ = [
    'apply_compat_fixes', 'patch_bf16_head_loss', 'patch_cpu_ddp',
    'patch_cpu_distributed', 'patch_missing_drn', 'patch_numpy_aliases',
    'patch_tsm_optim_params', 'keep_freed_memory', 'saved_bytes'
]
