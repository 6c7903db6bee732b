# Copyright (c) mmrsa contributors. All rights reserved.
"""Relational Self-Attention (RSA) for MMAction2.

Importing this package first applies the runtime fixes of
:mod:`mmrsa.utils.compat` (they must act before ``mmaction.models`` is
imported), then imports :mod:`mmrsa.datasets` and :mod:`mmrsa.models`, whose
modules register themselves into MMAction2's registries, and
:mod:`mmrsa.engine`, whose checks (safe checkpoint loading, clip length,
annotation lines) only act when something is wrong.
"""
from .utils.compat import apply_compat_fixes

apply_compat_fixes()

from . import datasets, engine, models  # noqa: E402
from .version import __version__, version_info  # noqa: E402

__all__ = ['__version__', 'version_info', 'datasets', 'engine', 'models']
