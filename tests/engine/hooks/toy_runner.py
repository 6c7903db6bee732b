# Copyright (c) mmrsa contributors. All rights reserved.
"""A small, fast training run for the tests of the checkpoint and random
state hooks: a linear model with dropout, trained on samples whose
augmentation draws from numpy, Python's ``random`` and torch, validated on
data drawn the same way."""
import random
import uuid
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from torch.utils.data import Dataset

from mmrsa.engine.hooks import AtomicCheckpointHook, RandomStateHook
from mmrsa.engine.runner import ResumableRunner

NUM_SAMPLES = 8
BATCH_SIZE = 2


class NoisyDataset(Dataset):
    """Samples ``i`` plus noise from the three generators a transform
    may use."""

    def __len__(self) -> int:
        return NUM_SAMPLES

    def __getitem__(self, index: int) -> dict:
        noise = np.random.rand() + random.random() + torch.rand(()).item()
        return dict(
            inputs=torch.full((4, ), float(index)) + noise,
            target=torch.tensor(index % 2))


@MODELS.register_module(force=True)
class DropoutLinear(BaseModel):
    """Built by the runner (``dict(type='DropoutLinear')``), after it has
    seeded the generators, as a config's model is."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 2)

    def forward(self, inputs, target=None, mode='tensor'):
        out = self.fc(self.drop(inputs))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(out, target))
        if mode == 'predict':
            return [dict(pred=o, target=t) for o, t in zip(out, target)]
        return out


class Accuracy(BaseMetric):

    def process(self, data_batch, data_samples) -> None:
        self.results += [
            float(s['pred'].argmax() == s['target']) for s in data_samples
        ]

    def compute_metrics(self, results) -> dict:
        return dict(acc=sum(results) / len(results))


class Crash(Exception):
    """Stands for the end of the process (a kill, a pre-emption)."""


class CrashAfterEpochHook(Hook):
    """Raises :class:`Crash` after the checkpoint of ``epoch`` is saved,
    before validation."""

    priority = 'LOWEST'

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 == self.epoch:
            raise Crash(f'after epoch {self.epoch}')


class CrashWhileSavingHook(Hook):
    """Raises :class:`Crash` while the checkpoint of ``epoch`` is being
    saved (after CheckpointHook chose which old checkpoints to remove)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        if checkpoint['meta']['epoch'] == self.epoch:
            raise Crash(f'while saving epoch {self.epoch}')


def _loader(num_workers: int, shuffle: bool) -> dict:
    return dict(
        dataset=NoisyDataset(),
        sampler=dict(type='DefaultSampler', shuffle=shuffle),
        batch_size=BATCH_SIZE,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        collate_fn=dict(type='default_collate'))


def build_runner(
    work_dir,
    max_epochs: int = 3,
    resume: bool = False,
    num_workers: int = 0,
    checkpoint_hook: Optional[Hook] = None,
    random_state: bool = True,
    hooks: Sequence[Hook] = ()) -> ResumableRunner:
    """A runner of the toy model, seed 0, a checkpoint every epoch."""
    custom_hooks = [RandomStateHook()] if random_state else []
    if checkpoint_hook is None:
        checkpoint_hook = AtomicCheckpointHook(interval=1, max_keep_ckpts=1)
    return ResumableRunner(
        model=dict(type='DropoutLinear'),
        work_dir=str(work_dir),
        experiment_name=f'toy_{uuid.uuid4().hex[:8]}',
        train_dataloader=_loader(num_workers, shuffle=True),
        val_dataloader=_loader(0, shuffle=False),
        val_evaluator=Evaluator([Accuracy()]),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.5)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs, val_interval=1),
        val_cfg=dict(),
        default_hooks=dict(
            checkpoint=checkpoint_hook,
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=custom_hooks + list(hooks),
        randomness=dict(seed=0),
        resume=resume,
        default_scope='mmengine')


def weights(path) -> dict:
    """The state dict of a checkpoint, read with weights only."""
    from mmrsa.fileio.checkpoint import safe_torch_load
    return safe_torch_load(str(path), map_location='cpu')['state_dict']
