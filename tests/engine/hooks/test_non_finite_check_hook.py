# Copyright (c) mmrsa contributors. All rights reserved.
"""NonFiniteCheckHook stops the run (or skips the step) at the first
non-finite loss or gradient norm, naming the iteration, with the weights of
the step before; AtomicCheckpointHook never saves non-finite weights over
the last finite checkpoint."""
import math

import pytest
import torch
from mmengine.hooks import Hook
from toy_runner import build_runner, weights

from mmrsa.engine.hooks import (NonFiniteCheckHook, NonFiniteTrainingError,
                                NonFiniteWeightsError, non_finite_tensors)


class PoisonBatchHook(Hook):
    """Fills the inputs of the given iterations (1-based) with nan."""

    def __init__(self, iterations) -> None:
        self.iterations = set(iterations)

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter + 1 in self.iterations:
            data_batch['inputs'].fill_(math.nan)


class PoisonWeightsHook(Hook):
    """Writes nan into fc.weight after the given iteration (1-based)."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            with torch.no_grad():
                runner.model.fc.weight.fill_(math.nan)


def _finite(model) -> bool:
    return not non_finite_tensors(model.state_dict())


def test_stop_names_the_iteration_and_keeps_finite_weights(tmp_path):
    # 4 iterations an epoch: iteration 6 is batch 2 of epoch 2
    runner = build_runner(
        tmp_path,
        max_epochs=3,
        hooks=[NonFiniteCheckHook(),
               PoisonBatchHook([6])])
    with pytest.raises(NonFiniteTrainingError) as error:
        runner.train()
    message = str(error.value)
    assert 'at iteration 6 (epoch 2, batch 2/4)' in message
    assert 'loss (nan)' in message and 'gradient norm (nan)' in message
    assert 'left as before this step' in message
    assert _finite(runner.model)
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['epoch_1.pth']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path /
                                                             'epoch_1.pth')


def test_skip_goes_on_with_the_weights_of_the_step_before(tmp_path):
    hook = NonFiniteCheckHook(action='skip')
    runner = build_runner(
        tmp_path, max_epochs=2, hooks=[hook, PoisonBatchHook([3])])
    runner.train()
    assert hook.skipped_iters == [3]
    assert not non_finite_tensors(weights(tmp_path / 'epoch_2.pth'))


def test_skip_stops_after_too_many_in_a_row(tmp_path):
    runner = build_runner(
        tmp_path,
        max_epochs=3,
        hooks=[
            NonFiniteCheckHook(action='skip', max_consecutive_skips=2),
            PoisonBatchHook(range(5, 13))
        ])
    with pytest.raises(
            NonFiniteTrainingError,
            match=r'3 steps in a row .* at iteration 7 '):
        runner.train()
    assert _finite(runner.model)


def test_checkpoint_hook_refuses_non_finite_weights(tmp_path):
    """Without NonFiniteCheckHook: weights gone nan in epoch 2 are not
    saved, and max_keep_ckpts=1 does not remove epoch_1.pth."""
    runner = build_runner(
        tmp_path, max_epochs=3, hooks=[PoisonWeightsHook(iteration=7)])
    with pytest.raises(
            NonFiniteWeightsError,
            match=r'Not saving epoch_2.pth: .* non-finite '
            r'values \(inf/nan\) in 2 tensors \(fc.weight, '
            r'fc.bias\)'):
        runner.train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['epoch_1.pth']
    assert not non_finite_tensors(weights(tmp_path / 'epoch_1.pth'))
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path /
                                                             'epoch_1.pth')


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"\('stop', 'skip'\)"):
        NonFiniteCheckHook(action='ignore')
    with pytest.raises(ValueError, match='max_consecutive_skips'):
        NonFiniteCheckHook(max_consecutive_skips=0)


def test_non_finite_tensors():
    tensors = dict(
        a=torch.ones(2),
        b=torch.tensor([1.0, math.inf]),
        c=torch.tensor([math.nan]),
        steps=torch.tensor(3))
    assert non_finite_tensors(tensors) == ['b', 'c']
