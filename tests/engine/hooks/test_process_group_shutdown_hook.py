# Copyright (c) mmrsa contributors. All rights reserved.
"""ProcessGroupShutdownHook: after a finished run the process group is
destroyed at exit, while the interpreter is whole (gloo's threads otherwise
abort the process: "terminate called without an active exception"); not
after a run that did not finish or a process that ends with an error."""
import socket
import subprocess
import sys
import textwrap

import pytest
from run_helpers import tool_env

# Registered before the hook's handler, the check runs after it (atexit
# handlers run last-in, first-out).
SCRIPT = textwrap.dedent("""
    import atexit
    import sys

    import torch.distributed as dist

    from mmrsa.engine.hooks import ProcessGroupShutdownHook

    dist.init_process_group('gloo', init_method='tcp://127.0.0.1:{port}',
                            rank=0, world_size=1)
    atexit.register(lambda: print('initialized at exit:',
                                  dist.is_initialized()))
    if '{case}' != 'unfinished':
        ProcessGroupShutdownHook().after_run(runner=None)
    if '{case}' == 'error':
        raise RuntimeError('a failure after the run')
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('case, destroyed', [('finished', True),
                                             ('unfinished', False),
                                             ('error', False)])
def test_process_group_destroyed_after_a_finished_run(case, destroyed):
    result = subprocess.run(
        [sys.executable, '-c',
         SCRIPT.format(port=_free_port(), case=case)],
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120)
    assert f'initialized at exit: {not destroyed}' in result.stdout, (
        result.stdout + result.stderr)[-3000:]
    assert result.returncode == (1 if case == 'error' else 0)
    assert 'terminate called' not in result.stderr


def test_nothing_to_do_without_a_process_group():
    from mmrsa.engine.hooks import destroy_process_group_at_exit
    assert destroy_process_group_at_exit() is False
