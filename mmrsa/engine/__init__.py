# Copyright (c) mmrsa contributors. All rights reserved.
"""Checks and training helpers that plug into MMEngine's extension points.

Nothing here changes a run unless its config opts in:

* :mod:`.hooks`: ``ClipCheckHook`` (clip length and classes agree with the
  model, before the first iteration) and ``CheckpointFitHook`` (a loaded or
  resumed checkpoint fits the model, listing the mismatching keys), for
  ``custom_hooks``;
* :mod:`.optimizers`: ``CPUAutocastOptimWrapper`` (bfloat16 autocast on a
  CPU), for ``optim_wrapper``.
* :mod:`.runner`: ``ResumableRunner`` (auto-resume continues the
  interrupted run, identified by a run id, from its newest checkpoint that
  loads; one run per work dir, through a lock the system releases when the
  run dies; stale temporary files removed), for ``runner_type``; with the
  hooks ``AtomicCheckpointHook`` (``default_hooks.checkpoint``) and
  ``RandomStateHook`` (``custom_hooks``), a run survives a crash at any
  moment and resumes bit-identically on CPU;
* ``NonFiniteCheckHook`` (stop, or skip the step, at the first non-finite
  loss, gradient norm or BatchNorm statistic; ``AtomicCheckpointHook``
  never saves non-finite weights) and ``PreemptionHook`` (``SIGTERM`` /
  ``SIGUSR1``: save ``preempted_iter_<N>.pth``, exit 75, resume without
  repeating or skipping data), for ``custom_hooks``.

Safe checkpoint loading lives in :mod:`mmrsa.fileio.checkpoint`; the datasets
that check their annotation files in :mod:`mmrsa.datasets`.
"""
from .hooks import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403
from .runner import *  # noqa: F401,F403
