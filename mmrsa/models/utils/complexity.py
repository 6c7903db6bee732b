# Copyright (c) mmrsa contributors. All rights reserved.
"""Parameter and FLOP counts as the paper reports them.

FLOPs are counted by MMEngine's :class:`~mmengine.analysis.FlopAnalyzer`
(one fused multiply-add is one FLOP: convolutions, matrix products, linear
layers, adaptive average pooling) with batch normalisation excluded, as it
folds into the preceding convolution at inference. Ops MMEngine has no
handle for (element-wise ``add``/``mul``, the L2 normalisation, max pooling)
count nothing. With these rules the counts match the paper's tables.
"""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer

__all__ = ['count_params', 'count_flops', 'recognizer_complexity']


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def _no_flops(inputs, outputs) -> int:
    """An op handle that counts nothing."""
    return 0


def count_flops(model: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> int:
    """FLOPs of ``model(*inputs)``, batch normalisation excluded.

    Args:
        model (nn.Module): The model, traced in its current mode.
        inputs (tuple[torch.Tensor]): Positional inputs of ``forward``.

    Returns:
        int: The FLOP count.
    """
    analyzer = FlopAnalyzer(model, inputs)
    # ``set_op_handle(name, None)`` keeps a default handle in MMEngine 0.10,
    # so the BN handle is replaced by one that counts nothing.
    analyzer.set_op_handle('aten::batch_norm', _no_flops)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        return int(analyzer.total())


def recognizer_complexity(
    model: nn.Module, clip_shape: Sequence[int] = (8, 3, 224, 224)
) -> Tuple[int, int]:
    """Parameters and FLOPs of a recognizer on one clip.

    Args:
        model (nn.Module): An MMAction2 recognizer; its ``forward`` in
            ``'tensor'`` mode (backbone, neck and head) is traced.
        clip_shape (Sequence[int]): One clip without the batch dimension,
            ``(T, 3, H, W)`` for 2D recognizers. Defaults to
            ``(8, 3, 224, 224)``.

    Returns:
        tuple[int, int]: ``(params, flops)``.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        inputs = (torch.randn(1, *clip_shape, device=device), )
        flops = count_flops(model, inputs)
    finally:
        model.train(was_training)
    return count_params(model), flops
