# Copyright (c) mmrsa contributors. All rights reserved.
"""A pre-empted tools/train.py run (SIGTERM during batch 1 of epoch 2 of the
demo config) saves ``preempted_iter_3.pth``, logs it and exits with code 75;
``--resume`` trains batch 2 of epoch 2 only and ends with the weights of the
run that was not interrupted, bit for bit."""
import pytest
import torch
from train_helpers import copy_run, helper_config, read_checkpoint, train

# Sends a signal to its own process during the given iteration (1-based),
# as Slurm would at a pre-emption.
SIGNAL_HOOK = '''
import os
import signal

from mmengine.hooks import Hook

from mmaction.registry import HOOKS


@HOOKS.register_module()
class SignalAtIterationHook(Hook):

    def __init__(self, iteration, signal_name):
        self.iteration, self.signal_name = iteration, signal_name

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.iteration:
            os.kill(os.getpid(), getattr(signal, self.signal_name))
'''


@pytest.fixture(scope='module')
def preempted_run(synth_dir, tmp_path_factory):
    """The work dir of a run that got SIGTERM during iteration 3."""
    helpers = tmp_path_factory.mktemp('preempt')
    config, env = helper_config(
        helpers, 'signal_hook', SIGNAL_HOOK,
        "dict(type='SignalAtIterationHook', iteration=3, "
        "signal_name='SIGTERM')")
    work_dir = helpers / 'run'
    result = train(synth_dir, work_dir, config=config, env=env)
    assert result.returncode == 75, result.stderr[-3000:]
    saved = work_dir / 'preempted_iter_3.pth'
    assert (f'Pre-empted by SIGTERM at iteration 3 (epoch 2, batch 1 of this '
            f'run): saved {saved}; exiting with code 75.') in result.stdout
    return work_dir


@pytest.mark.slow  # one run, about 15-30 s
def test_preempted_run_saves_a_resumable_checkpoint(preempted_run):
    saved = preempted_run / 'preempted_iter_3.pth'
    meta = read_checkpoint(saved)['meta']
    assert (meta['epoch'], meta['iter'], meta['preempted']) == (1, 3,
                                                                'SIGTERM')
    assert (preempted_run / 'last_checkpoint').read_text() == str(saved)
    assert sorted(p.name for p in preempted_run.glob('*.pth')) == [
        'epoch_1.pth', 'preempted_iter_3.pth'
    ]


@pytest.mark.slow  # with the pre-empted run, about 30 s
def test_resume_neither_repeats_nor_skips_data(synth_dir, preempted_run,
                                               reference_run, tmp_path):
    work_dir = copy_run(preempted_run, tmp_path / 'run')
    result = train(synth_dir, work_dir, '--resume')
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert ('Auto resumed from the latest checkpoint '
            f'{work_dir / "preempted_iter_3.pth"}.') in out
    assert 'resumed epoch: 1, iter: 3' in out
    assert 'Restored the random state of the checkpoint.' in out
    assert ('Resuming epoch 2 after its batch 1 of 2: the 1 batches trained '
            'before the pre-emption are skipped.') in out
    # one training iteration, the last of epoch 2
    assert out.count('Epoch(train)') == 1
    assert 'Epoch(train) [2][1/1]' in out

    expected = read_checkpoint(reference_run / 'epoch_2.pth')
    got = read_checkpoint(work_dir / 'epoch_2.pth')
    assert (got['meta']['epoch'], got['meta']['iter']) == (2, 4)
    for key, value in expected['state_dict'].items():
        assert torch.equal(value, got['state_dict'][key]), key
    for index, state in expected['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(value, got['optimizer']['state'][index][name])
    # the pre-empted file is gone once epoch_2.pth is saved
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['epoch_2.pth']
