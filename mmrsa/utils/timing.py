# Copyright (c) mmrsa contributors. All rights reserved.
"""Timing candidates side by side (standard library only, so that
``tools/analysis_tools/gpu_check.py`` loads it on a machine with torch
alone)."""
import statistics
import time
from typing import Callable, Dict, List

__all__ = ['time_alternating']


def time_alternating(fns: Dict[str, Callable[[], None]],
                     repeats: int,
                     warmup: int,
                     sync: Callable[[], None],
                     pause: float = 0.0) -> Dict[str, float]:
    """Median milliseconds per candidate, rounds alternating between them
    (the order reversed every other round), with ``pause`` idle seconds
    before every timed call and ``sync()`` (wait for the device) around it.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for i in range(repeats):
        order = list(fns.items())
        if i % 2:
            order.reverse()
        for name, fn in order:
            sync()
            time.sleep(pause)
            start = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}
