# Copyright (c) mmrsa contributors. All rights reserved.
"""Pictures of what an RSA layer computes."""
from .kernels import rsa_kernels, visualize

__all__ = ['rsa_kernels', 'visualize']
