# Copyright (c) mmrsa contributors. All rights reserved.
"""PreemptionHook: a signal mid-epoch saves ``preempted_iter_<N>.pth`` and
exits with code 75; ``--resume`` takes that file and trains exactly the
batches that were left, ending with the weights of the run that was not
interrupted."""
import os
import signal

import pytest
import torch
from mmengine.hooks import Hook
from toy_runner import build_runner, weights

from mmrsa.engine.hooks import PREEMPTED_EXIT_CODE, PreemptionHook
from mmrsa.engine.runner import find_resumable_checkpoint


class SignalHook(Hook):
    """Sends ``signum`` to this process during the given iteration
    (1-based), as a scheduler would."""

    def __init__(self, iteration: int, signum: int) -> None:
        self.iteration, self.signum = iteration, signum

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter + 1 == self.iteration:
            os.kill(os.getpid(), self.signum)


class TrainedSamples(Hook):
    """Records the inputs of every training batch."""

    def __init__(self) -> None:
        self.batches = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.batches.append(data_batch['inputs'].clone())


@pytest.mark.parametrize('signum', [signal.SIGUSR1, signal.SIGTERM])
def test_preempted_run_resumes_exactly(tmp_path, signum):
    reference_batches = TrainedSamples()
    build_runner(
        tmp_path / 'reference',
        max_epochs=2,
        hooks=[PreemptionHook(), reference_batches]).train()

    work_dir = tmp_path / 'run'
    before = signal.getsignal(signum)
    first = TrainedSamples()
    # 4 iterations an epoch: the signal comes during batch 2 of epoch 2
    runner = build_runner(
        work_dir,
        max_epochs=2,
        hooks=[PreemptionHook(),
               SignalHook(6, signum), first])
    with pytest.raises(SystemExit) as stop:
        runner.train()
    assert stop.value.code == PREEMPTED_EXIT_CODE == 75
    assert signal.getsignal(signum) == before  # handler given back
    saved = work_dir / 'preempted_iter_6.pth'
    assert (work_dir / 'last_checkpoint').read_text() == str(saved)
    assert find_resumable_checkpoint(str(work_dir)) == str(saved)

    rest = TrainedSamples()
    build_runner(
        work_dir, max_epochs=2, resume=True, hooks=[PreemptionHook(),
                                                    rest]).train()
    # neither repeated nor skipped: the same batches, in the same order
    assert len(first.batches) == 6 and len(rest.batches) == 2
    trained = first.batches + rest.batches
    for i, (got,
            expected) in enumerate(zip(trained, reference_batches.batches)):
        assert torch.equal(got, expected), f'batch {i}'
    expected = weights(tmp_path / 'reference' / 'epoch_2.pth')
    got = weights(work_dir / 'epoch_2.pth')
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key
    assert not saved.exists()  # removed once epoch_2.pth was saved


def test_invalid_arguments():
    with pytest.raises(ValueError, match='SIGTERM'):
        PreemptionHook(signals=('SIGKILL', ))
    with pytest.raises(ValueError, match='exit_code'):
        PreemptionHook(exit_code=0)
