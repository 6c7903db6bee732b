# Copyright (c) mmrsa contributors. All rights reserved.
"""Reliability for long runs: early, clear errors and safe loading.

Importing this package (``import mmrsa`` does) installs three checks into
MMEngine and MMAction2; each only acts when something is wrong:

* :mod:`.safe_loading`: a checkpoint that pickles objects which could run
  code is refused with a message naming the object, the file and the
  per-file opt-in (``--trust-pickle``, ``MMRSA_TRUSTED_CHECKPOINTS``);
* :mod:`.clip_check`: ``Runner.build_model`` checks that the pipelines
  sample the number of frames the backbone's ``num_segments`` expects;
* :mod:`.data_errors`: rawframe and video datasets check at build time that
  their annotation lines point at existing data, and name the annotation
  file and line of a sample that fails to load.

It also registers :class:`CheckpointFitHook`, which refuses a checkpoint of
another architecture, listing the mismatching keys.
"""
from .checkpoint_fit import (CheckpointFitHook, CheckpointMismatchError,
                             check_checkpoint_fits, load_checkpoint_strictly)
from .clip_check import (ClipSamplingError, check_clip_sampling,
                         install_clip_check)
from .data_errors import AnnotationError, SampleLoadError, install_data_errors
from .safe_loading import (TRUST_ENV, UnsafeCheckpointError,
                           install_safe_loading, is_trusted_checkpoint,
                           trust_checkpoint)

install_safe_loading()
install_clip_check()
install_data_errors()

__all__ = [
    'CheckpointFitHook', 'CheckpointMismatchError', 'check_checkpoint_fits',
    'load_checkpoint_strictly', 'ClipSamplingError', 'check_clip_sampling',
    'install_clip_check', 'AnnotationError', 'SampleLoadError',
    'install_data_errors', 'TRUST_ENV', 'UnsafeCheckpointError',
    'install_safe_loading', 'is_trusted_checkpoint', 'trust_checkpoint'
]
