# Copyright (c) mmrsa contributors. All rights reserved.
"""Checks of a config that the tools run before building anything."""
from typing import Any, Mapping

__all__ = ['check_batch_sizes']


def check_batch_sizes(cfg: Mapping[str, Any]) -> None:
    """Refuse a dataloader batch size that is not a positive int.

    MMEngine divides by it when it converts epochs to iterations, so a
    ``batch_size=0`` otherwise ends in ``ZeroDivisionError``.

    Raises:
        ValueError: Naming the dataloader and the value.
    """
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if not loader or 'batch_size' not in loader:
            continue
        size = loader['batch_size']
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                f'{split}_dataloader.batch_size={size!r}: it must be a '
                f'positive int (clips per process and iteration).')
