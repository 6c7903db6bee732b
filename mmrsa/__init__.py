# Copyright (c) mmrsa contributors. All rights reserved.
"""Relational Self-Attention (RSA) for MMAction2.

Importing this package

1. applies the fixes the pinned stack cannot run without
   (:func:`mmrsa.utils.compat.apply_compat_fixes`; they must act before
   ``mmaction.models`` is imported, and each one is listed in
   docs/compatibility.md with the upstream issue it works around);
2. registers safe checkpoint loaders for local paths and every URL scheme
   through MMEngine's ``CheckpointLoader.register_scheme``
   (:mod:`mmrsa.fileio.checkpoint`);
3. registers the package's models, datasets, transforms, hooks and optimizer
   wrapper into MMAction2's registries, and creates the ``mmrsa`` scope for
   ``mmrsa::`` config paths (:mod:`mmrsa.registry`).

Nothing else of MMEngine or MMAction2 is replaced: the checks (clip length,
annotation lines, checkpoint fit) act only where a config opts in.
"""
from .utils.compat import apply_compat_fixes

apply_compat_fixes()

from .fileio.checkpoint import register_safe_schemes  # noqa: E402

register_safe_schemes()

from . import datasets, engine, models, registry  # noqa: E402
from .version import __version__, version_info  # noqa: E402

__all__ = [
    '__version__', 'version_info', 'datasets', 'engine', 'models', 'registry'
]
