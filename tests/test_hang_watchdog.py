# Copyright (c) mmrsa contributors. All rights reserved.
"""The hang watchdog of the test suite (``hang_watchdog.py``): a test that
outlives ``MMRSA_TEST_TIMEOUT`` ends its process with every thread's stack
printed; a quick test is not touched."""
import os
import time
from pathlib import Path

from run_helpers import run_tool, tool_env

TESTS = Path(__file__).resolve().parent

HANGS = '''
import threading
import time


def test_quick():
    pass


def test_hangs():
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()  # never returns: a deadlock


def test_after():
    time.sleep(0.1)
'''


def _pytest(tmp_path, *args, timeout='3', test=HANGS):
    """pytest with only the watchdog plugin on ``test`` (a file's text) in
    ``tmp_path``, ``MMRSA_TEST_TIMEOUT=timeout``: the result and seconds."""
    (tmp_path / 'test_case.py').write_text(test)
    # this folder (the plugin) before what the tools get
    path = os.pathsep.join([str(TESTS), tool_env()['PYTHONPATH']])
    env = dict(MMRSA_TEST_TIMEOUT=timeout, PYTHONPATH=path)
    start = time.monotonic()
    result = run_tool([
        '-m', 'pytest', '-p', 'hang_watchdog', '-p', 'no:cacheprovider', '-q',
        *args, tmp_path / 'test_case.py'
    ],
                      cwd=tmp_path,
                      env=env,
                      timeout=120)
    return result, time.monotonic() - start


def test_a_hung_test_ends_its_process_with_the_stacks(tmp_path):
    result, seconds = _pytest(tmp_path)
    assert result.returncode != 0
    assert seconds < 60
    out = result.stdout + result.stderr
    assert 'Timeout (0:00:03)!' in out
    assert 'in test_hangs' in out  # the hung line's stack


def test_a_hung_test_fails_and_the_run_goes_on_with_xdist(tmp_path):
    result, _ = _pytest(tmp_path, '-n', '1', '-rf')
    out = result.stdout + result.stderr
    assert result.returncode == 1, out[-3000:]
    assert '1 failed, 2 passed' in out, out[-3000:]
    assert 'test_hangs' in out and 'in test_hangs' in out


def test_zero_turns_it_off(tmp_path):
    result, _ = _pytest(
        tmp_path,
        timeout='0',
        test='import time\n\ndef test_slow():\n    time.sleep(2)\n')
    assert result.returncode == 0, result.stdout + result.stderr
