# Copyright (c) mmrsa contributors. All rights reserved.
"""Benchmark the RSA layer and RSANet-R50 against their convolutional peers.

See :mod:`mmrsa.analysis.benchmark` for the sections and options::

    python tools/analysis_tools/benchmark_rsa.py --quick
    python tools/analysis_tools/benchmark_rsa.py --device cuda --amp \\
        --batch 8 --sections model layer                  # GPU figures

The layer section runs with torch alone: where MMEngine, MMCV or MMAction2
is missing (a GPU machine with torch only), mmrsa's packages are entered as
bare packages of this checkout, so that their torch-only modules import
without ``mmrsa/__init__.py`` (which registers into MMAction2).
"""
import functools
import importlib.util
import sys
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # mmrsa from this checkout
    sys.path.insert(0, str(REPO_ROOT))

#: The packages whose ``__init__`` needs the OpenMMLab stack.
PURE_PACKAGES = ('mmrsa', 'mmrsa.utils', 'mmrsa.models',
                 'mmrsa.models.common', 'mmrsa.analysis')

if any(importlib.util.find_spec(name) is None
       for name in ('mmengine', 'mmcv', 'mmaction')):
    for name in PURE_PACKAGES:
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(REPO_ROOT.joinpath(*name.split('.')))]
            sys.modules[name] = package

from mmrsa.analysis.benchmark import main  # noqa: E402

if __name__ == '__main__':
    main(echo=functools.partial(print, flush=True))
