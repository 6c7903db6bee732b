# Copyright (c) mmrsa contributors. All rights reserved.
"""Reading and writing files: the one checkpoint / score-file loader
(:mod:`mmrsa.fileio.checkpoint`) and the one atomic writer with its
overwrite rule (:mod:`mmrsa.fileio.atomic`)."""
from .atomic import (OverwriteRefusedError, refuse_existing,
                     remove_stale_temporaries, write_atomic,
                     write_bytes_atomic)
from .checkpoint import (CheckpointDownloadError, CheckpointFileError,
                         UnsafeCheckpointError, load_checkpoint_file,
                         safe_torch_load, sha256_file, state_dict_of,
                         trust_checkpoint)

__all__ = [
    'OverwriteRefusedError', 'refuse_existing', 'remove_stale_temporaries',
    'write_atomic', 'write_bytes_atomic', 'CheckpointDownloadError',
    'CheckpointFileError', 'UnsafeCheckpointError', 'load_checkpoint_file',
    'safe_torch_load', 'sha256_file', 'state_dict_of', 'trust_checkpoint'
]
