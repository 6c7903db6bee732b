# Copyright (c) mmrsa contributors. All rights reserved.
from .rsa_hybrid import RSAHybrid
from .rsanet import (PAPER_RSA_BLOCKS, ClipDropPath, DropPathBasicBlock,
                     DropPathBottleneck, FrameRSA, RSANet, default_rsa_blocks)

__all__ = [
    'RSANet', 'FrameRSA', 'ClipDropPath', 'DropPathBasicBlock',
    'DropPathBottleneck', 'PAPER_RSA_BLOCKS', 'default_rsa_blocks', 'RSAHybrid'
]
