# Copyright (c) mmrsa contributors. All rights reserved.
"""Activation memory of a forward pass: the tensors autograd saves for
backward (what training keeps alive between forward and backward)."""
from typing import Callable, Dict, Iterable, Tuple

import torch

__all__ = ['saved_bytes']


def saved_bytes(
    step: Callable[[],
                   torch.Tensor], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of distinct tensors saved for backward during ``step()``.

    Args:
        step (Callable): Runs a forward pass and returns its output.
        exclude (Iterable[torch.Tensor]): Tensors not to count when saved,
            nor their dtype casts (e.g. the parameters and, under autocast,
            their low-precision copies, to count the activations only).
            Defaults to ().

    Returns:
        int: The bytes of the distinct storages saved.
    """
    exclude = list(exclude)
    seen: Dict[Tuple[int, int], int] = {}
    skip = {(t.untyped_storage().data_ptr(), t.device.index or 0)
            for t in exclude}
    skip_ids = {id(t) for t in exclude}

    def is_cast_of_excluded(t: torch.Tensor) -> bool:
        # autocast's weight copies: ToCopyBackward0 <- AccumulateGrad(param)
        fn = t.grad_fn
        if fn is None or type(fn).__name__ != 'ToCopyBackward0':
            return False
        source = fn.next_functions[0][0]
        return id(getattr(source, 'variable', None)) in skip_ids

    def pack(t: torch.Tensor):
        key = (t.untyped_storage().data_ptr(), t.device.index or 0)
        if key not in skip and not (skip_ids and is_cast_of_excluded(t)):
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = step()
    del out
    return sum(seen.values())
