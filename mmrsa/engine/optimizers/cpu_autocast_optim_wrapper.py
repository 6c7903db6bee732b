# Copyright (c) mmrsa contributors. All rights reserved.
"""Mixed precision on a CPU: bfloat16 autocast in the optimizer wrapper."""
from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

from mmaction.registry import OPTIM_WRAPPERS

__all__ = ['CPUAutocastOptimWrapper']


@OPTIM_WRAPPERS.register_module()
class CPUAutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` that runs the forward pass under CPU bfloat16
    autocast.

    MMEngine's ``AmpOptimWrapper`` needs CUDA; this is what ``--amp`` of
    ``tools/train.py`` selects on a machine without a GPU, and a config may
    name it directly::

        optim_wrapper = dict(type='CPUAutocastOptimWrapper', optimizer=...)

    bfloat16 has float32's exponent range, so no loss scaling is needed.
    Heads compute their loss from float32 scores (see
    :func:`mmrsa.utils.compat.patch_bf16_head_loss`).
    """

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        with ExitStack() as stack:
            stack.enter_context(super().optim_context(model))
            stack.enter_context(torch.autocast('cpu', dtype=torch.bfloat16))
            yield
