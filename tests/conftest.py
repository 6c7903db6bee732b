# Copyright (c) mmrsa contributors. All rights reserved.
"""Suite-wide test settings.

The tests use small tensors, for which one intra-op thread is fastest and
keeps parallel test runs on a shared CPU from oversubscribing it. Set
``MMRSA_TEST_THREADS`` to change the number. A test that hangs fails after
``MMRSA_TEST_TIMEOUT`` seconds (``hang_watchdog.py``).
"""
import os
from pathlib import Path

import pytest
import torch
from run_helpers import (DEMO_CONFIG, NUM_TRAIN, NUM_VAL, REPO_ROOT, SMALL_RUN,
                         run_tool)

# a hung test fails and prints every thread's stack (see the module)
pytest_plugins = ('hang_watchdog', )


def pytest_configure(config):
    torch.set_num_threads(int(os.environ.get('MMRSA_TEST_THREADS', '1')))


@pytest.fixture(scope='session')
def synth_dir(tmp_path_factory) -> Path:
    """A folder holding ``data/synthmotion`` (8 + 4 clips, rawframes and
    videos), i.e. a working folder the demo config runs from unchanged."""
    from mmrsa.datasets.synthmotion import generate_synthmotion
    root = tmp_path_factory.mktemp('synth')
    generate_synthmotion(
        str(root / 'data' / 'synthmotion'),
        formats=('rawframes', 'videos'),
        num_train=NUM_TRAIN,
        num_val=NUM_VAL)
    return root


@pytest.fixture(scope='session')
def reference_run(synth_dir) -> Path:
    """The work dir of an uninterrupted, seeded, deterministic 2-epoch run
    of the demo config (``tools/train.py``)."""
    work_dir = synth_dir / 'work_dirs' / 'reference'
    result = run_tool([
        REPO_ROOT / 'tools' / 'train.py', DEMO_CONFIG, '--work-dir', work_dir,
        '--seed', '0', '--deterministic', '--cfg-options', *SMALL_RUN
    ],
                      cwd=synth_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir


@pytest.fixture(autouse=True)
def mmaction_scope():
    """Start every test in MMAction2's registry scope, whatever scope a
    Runner of an earlier test left current (tests build modules by their
    type names)."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmaction')
