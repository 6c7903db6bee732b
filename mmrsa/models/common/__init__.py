# Copyright (c) mmrsa contributors. All rights reserved.
"""Pure RSA layers and their registration into MMAction2's ``MODELS``."""
from mmaction.registry import MODELS

from .rsa import RSA, l2_normalize
from .rsa_reference import RSAReference, rsa_reference, unfold_context

MODELS.register_module(module=RSA)
# RSAReference is a test and teaching oracle: importable, not registered

__all__ = [
    'RSA', 'RSAReference', 'l2_normalize', 'rsa_reference', 'unfold_context'
]
