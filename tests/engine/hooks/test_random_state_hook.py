# Copyright (c) mmrsa contributors. All rights reserved.
"""RandomStateHook: a run resumed after a crash ends with the weights of
the run that was not interrupted (bit for bit), with data-loading workers
and without; what it saves loads with ``weights_only=True``."""
import random

import numpy as np
import pytest
import torch
from toy_runner import Crash, CrashAfterEpochHook, build_runner, weights

from mmrsa.engine.hooks import (EpochWorkerSeed, capture_random_state,
                                restore_random_state)

MAX_EPOCHS = 3


def _straight_and_resumed(tmp_path, num_workers, random_state=True):
    """Final weights of 3 epochs straight, and of a run crashed after
    epoch 1 and resumed (``--resume``)."""
    straight = tmp_path / 'straight'
    build_runner(
        straight,
        MAX_EPOCHS,
        num_workers=num_workers,
        random_state=random_state).train()

    resumed = tmp_path / 'resumed'
    crashing = build_runner(
        resumed,
        MAX_EPOCHS,
        num_workers=num_workers,
        random_state=random_state,
        hooks=[CrashAfterEpochHook(epoch=1)])
    with pytest.raises(Crash):
        crashing.train()
    assert (resumed / 'epoch_1.pth').is_file()
    build_runner(
        resumed,
        MAX_EPOCHS,
        resume=True,
        num_workers=num_workers,
        random_state=random_state).train()
    name = f'epoch_{MAX_EPOCHS}.pth'
    return weights(straight / name), weights(resumed / name)


@pytest.mark.parametrize('num_workers', [0, 2])
def test_resumed_run_is_bit_identical(tmp_path, num_workers):
    # num_workers=2: persistent workers, which carry their random state
    # from one epoch to the next in the run that was not interrupted
    expected, got = _straight_and_resumed(tmp_path, num_workers)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_without_the_hook_the_resumed_run_differs(tmp_path):
    """What the hook fixes: the toy run is sensitive to the random state."""
    expected, got = _straight_and_resumed(tmp_path, 0, random_state=False)
    assert not all(torch.equal(expected[k], got[k]) for k in expected)


def test_checkpoint_holds_the_state_as_plain_data(tmp_path):
    build_runner(tmp_path, max_epochs=1).train()
    from mmrsa.fileio.checkpoint import safe_torch_load
    checkpoint = safe_torch_load(
        str(tmp_path / 'epoch_1.pth'), map_location='cpu')
    (state, ) = checkpoint['random_state']['ranks']
    assert state['torch'].dtype == torch.uint8
    assert state['numpy']['keys'].shape == (624, )
    assert state['python']['state'].shape == (625, )
    assert state['sampler_seed'] == 0


def test_capture_and_restore_round_trip():
    state = capture_random_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_random_state(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2] == second[2]


def test_worker_seeds_depend_on_seed_epoch_rank_and_worker():
    calls = []
    seeds = {
        (s, e, r, w): EpochWorkerSeed(s, e, r).worker_seed(w)
        for s in (0, 1)
        for e in (0, 1)
        for r in (0, 1)
        for w in (0, 1)
    }
    assert len(set(seeds.values())) == len(seeds)
    assert EpochWorkerSeed(0, 1, 0).worker_seed(1) == seeds[(0, 1, 0, 1)]
    # the loader's own worker_init_fn runs first, then the seeding
    seeder = EpochWorkerSeed(0, 1, 0, init_fn=calls.append)
    seeder(1)
    assert calls == [1]
    drawn = torch.rand(2)
    torch.manual_seed(seeds[(0, 1, 0, 1)])
    assert torch.equal(drawn, torch.rand(2))
