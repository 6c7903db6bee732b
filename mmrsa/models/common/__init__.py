# Copyright (c) mmrsa contributors. All rights reserved.
"""Pure RSA layers and their registration into MMAction2's ``MODELS``."""
from mmaction.registry import MODELS
from .attention_reference import (attention_kernel_reference,
                                  attention_reference)
from .local_attention import (ATTENTION_KERNELS, LocalSelfAttention,
                              unfold_neighbourhood)
from .rsa import RSA, l2_normalize
from .rsa_reference import RSAReference, rsa_reference, unfold_context
from .spatiotemporal_conv import Conv2Plus1dTransform, Conv3dTransform

MODELS.register_module(module=RSA)
# the other spatio-temporal transforms of the paper's Table 2
MODELS.register_module(module=Conv3dTransform)
MODELS.register_module(module=Conv2Plus1dTransform)
MODELS.register_module(module=LocalSelfAttention)
# RSAReference and the attention reference are test and teaching oracles:
# importable, not registered

__all__ = [
    'RSA', 'RSAReference', 'l2_normalize', 'rsa_reference', 'unfold_context',
    'Conv3dTransform', 'Conv2Plus1dTransform', 'LocalSelfAttention',
    'ATTENTION_KERNELS', 'unfold_neighbourhood', 'attention_reference',
    'attention_kernel_reference'
]
