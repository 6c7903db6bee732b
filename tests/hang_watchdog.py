# Copyright (c) mmrsa contributors. All rights reserved.
"""A pytest plugin that turns a hung test into a failure that shows where
it hung.

A test that runs longer than ``MMRSA_TEST_TIMEOUT`` seconds (default 1800:
above every time limit the tests set on their own subprocesses; 0 turns
the watchdog off) gets the stack of every thread of its process printed to
standard error (:func:`faulthandler.dump_traceback_later`), and the process
ends. Under pytest-xdist the test is reported as failed, with the crashed
worker, and the run goes on; without it, the run stops there. Either way it
does not sit until the CI job's own limit.
"""
import faulthandler
import os
from typing import Iterator, Optional

import pytest

_stderr_fd: Optional[int] = None  # a copy of the process's standard error


def pytest_configure(config: pytest.Config) -> None:
    """Keep a copy of the standard error as it is here, outside the capture
    of the tests' output (which would lose the stacks with the process)."""
    global _stderr_fd
    _stderr_fd = os.dup(2)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _stderr_fd
    if _stderr_fd is not None:
        os.close(_stderr_fd)
        _stderr_fd = None


def timeout_seconds() -> float:
    """``MMRSA_TEST_TIMEOUT``, or 1800."""
    return float(os.environ.get('MMRSA_TEST_TIMEOUT', '1800'))


@pytest.fixture(autouse=True)
def hang_watchdog() -> Iterator[None]:
    """Arm the watchdog for the test (its own fixtures included, not the
    session's) and disarm it after."""
    seconds = timeout_seconds()
    if seconds > 0:
        faulthandler.dump_traceback_later(seconds, exit=True, file=_stderr_fd)
    yield
    if seconds > 0:
        faulthandler.cancel_dump_traceback_later()
