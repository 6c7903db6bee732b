# Copyright (c) mmrsa contributors. All rights reserved.
"""Suite-wide test settings.

The tests use small tensors, for which one intra-op thread is fastest and
keeps parallel test runs on a shared CPU from oversubscribing it. Set
``MMRSA_TEST_THREADS`` to change the number.
"""
import os

import torch


def pytest_configure(config):
    torch.set_num_threads(int(os.environ.get('MMRSA_TEST_THREADS', '1')))
