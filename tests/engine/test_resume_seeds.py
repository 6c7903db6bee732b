# Copyright (c) mmrsa contributors. All rights reserved.
"""A run resumed with another seed than the interrupted one (``--seed``
changed or left out) reads the data in the ORDER of the run that was not
interrupted and ends with its weights: ``RandomStateHook`` restores the
sampler's seed (the data order is ``seed + epoch``), not only the
generators. With seed 0 everywhere, a sampler seed that is not restored
would go unnoticed."""
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import torch
from mmengine.dataset import DefaultSampler
from mmengine.evaluator import Evaluator
from run_helpers import import_tool
from torch.utils.data import DataLoader

from mmrsa.engine.hooks import (AtomicCheckpointHook, RandomStateHook,
                                capture_random_state, restore_random_state)
from mmrsa.engine.runner import ResumableRunner

# the toy run of the hook tests
toy_runner = import_tool('tests/engine/hooks/toy_runner.py')
BATCH_SIZE, NoisyDataset = toy_runner.BATCH_SIZE, toy_runner.NoisyDataset
Accuracy, weights = toy_runner.Accuracy, toy_runner.weights
Crash, CrashAfterEpochHook = toy_runner.Crash, toy_runner.CrashAfterEpochHook

MAX_EPOCHS = 3
SEED = 7


class OrderDataset(NoisyDataset):
    """The toy samples, recording the index of every sample read in
    :data:`READ` under its name (the runner deep-copies the dataset; the
    loader runs in this process: ``num_workers=0``)."""

    READ: Dict[str, List[int]] = {}

    def __init__(self) -> None:
        self.name = uuid.uuid4().hex
        self.READ[self.name] = []

    @property
    def read(self) -> List[int]:
        return self.READ[self.name]

    def __getitem__(self, index: int) -> dict:
        self.READ[self.name].append(int(index))
        return super().__getitem__(index)


def _runner(work_dir: Path,
            dataset: OrderDataset,
            seed: Optional[int],
            resume: bool = False,
            hooks=()) -> ResumableRunner:
    return ResumableRunner(
        model=dict(type='DropoutLinear'),
        work_dir=str(work_dir),
        experiment_name=f'seeds_{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(
            dataset=dataset,
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=BATCH_SIZE,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        val_dataloader=dict(
            dataset=NoisyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=BATCH_SIZE,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        val_evaluator=Evaluator([Accuracy()]),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.5)),
        train_cfg=dict(by_epoch=True, max_epochs=MAX_EPOCHS, val_interval=1),
        val_cfg=dict(),
        default_hooks=dict(
            checkpoint=AtomicCheckpointHook(interval=1, max_keep_ckpts=1),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[RandomStateHook(), *hooks],
        randomness=dict(seed=seed),
        resume=resume,
        default_scope='mmengine')


def test_data_order_depends_on_the_seed():
    """What the test below relies on: another seed, another order."""
    dataset = NoisyDataset()
    orders = {}
    for seed in (SEED, 11):
        sampler = DefaultSampler(dataset, shuffle=True, seed=seed)
        sampler.set_epoch(1)
        orders[seed] = list(sampler)
    assert orders[SEED] != orders[11]


@pytest.mark.parametrize(
    'resume_seed', [11, None], ids=['another_seed', 'no_seed'])
def test_resume_with_another_seed_keeps_the_data_order(tmp_path, resume_seed):
    straight = OrderDataset()
    _runner(tmp_path / 'straight', straight, SEED).train()
    per_epoch = len(straight)
    assert len(straight.read) == MAX_EPOCHS * per_epoch
    # shuffled: the epochs differ from each other
    epochs = [
        straight.read[i * per_epoch:(i + 1) * per_epoch]
        for i in range(MAX_EPOCHS)
    ]
    assert len({tuple(e) for e in epochs}) == MAX_EPOCHS

    work_dir = tmp_path / 'resumed'
    first = OrderDataset()
    with pytest.raises(Crash):
        _runner(
            work_dir, first, SEED,
            hooks=[CrashAfterEpochHook(epoch=1)]).train()
    assert first.read == epochs[0]

    then = OrderDataset()
    _runner(work_dir, then, resume_seed, resume=True).train()
    assert then.read == straight.read[per_epoch:]
    name = f'epoch_{MAX_EPOCHS}.pth'
    expected, got = weights(tmp_path / 'straight' / name), weights(work_dir /
                                                                   name)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_restore_puts_back_the_sampler_seed_and_loader_generator():
    """A loader built with its own generator (not MMEngine's default) gets
    its generator's state back, and the sampler its seed."""
    sampler = DefaultSampler(NoisyDataset(), shuffle=True, seed=SEED)
    with_sampler = DataLoader(NoisyDataset(), sampler=sampler)
    state = capture_random_state(with_sampler)
    assert state['sampler_seed'] == SEED
    sampler.seed = 11
    restore_random_state(state, with_sampler)
    assert sampler.seed == SEED

    shuffled = DataLoader(
        range(16), shuffle=True, generator=torch.Generator().manual_seed(1))
    state = capture_random_state(shuffled)
    first = [int(i) for i in shuffled]
    assert [int(i) for i in shuffled] != first  # the generator moved on
    restore_random_state(state, shuffled)
    assert [int(i) for i in shuffled] == first
