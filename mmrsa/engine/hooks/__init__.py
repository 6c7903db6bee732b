# Copyright (c) mmrsa contributors. All rights reserved.
from .atomic_checkpoint_hook import AtomicCheckpointHook, AtomicLocalBackend
from .checkpoint_fit_hook import (CheckpointFitHook, CheckpointMismatchError,
                                  check_checkpoint_fits,
                                  load_checkpoint_strictly)
from .clip_check_hook import (ClipCheckHook, ClipSamplingError,
                              check_clip_sampling, check_num_classes)
from .non_finite_check_hook import (NonFiniteCheckHook, NonFiniteTrainingError,
                                    NonFiniteWeightsError, non_finite_tensors)
from .preemption_hook import PREEMPTED_EXIT_CODE, PreemptionHook
from .process_group_shutdown_hook import (ProcessGroupShutdownHook,
                                          destroy_process_group_at_exit)
from .random_state_hook import (EpochWorkerSeed, RandomStateHook,
                                capture_random_state, restore_random_state)

__all__ = [
    'CheckpointFitHook', 'CheckpointMismatchError', 'check_checkpoint_fits',
    'load_checkpoint_strictly', 'ClipCheckHook', 'ClipSamplingError',
    'check_clip_sampling', 'check_num_classes', 'AtomicCheckpointHook',
    'AtomicLocalBackend', 'NonFiniteCheckHook', 'NonFiniteTrainingError',
    'NonFiniteWeightsError', 'non_finite_tensors', 'PREEMPTED_EXIT_CODE',
    'PreemptionHook', 'ProcessGroupShutdownHook',
    'destroy_process_group_at_exit', 'RandomStateHook', 'EpochWorkerSeed',
    'capture_random_state', 'restore_random_state'
]
