# Copyright (c) mmrsa contributors. All rights reserved.
"""Save a resumable checkpoint when the job is pre-empted, and resume it
without repeating or skipping data.

Slurm sends ``SIGTERM`` when it pre-empts a job or reaches its time limit
(``SIGKILL`` follows after ``KillWait``, 30 s by default), and a signal of
the user's choice ahead of time with ``sbatch --signal=USR1@90``. A run
without a handler dies at once and loses the work since its last
``epoch_N.pth``, possibly hours.

:class:`PreemptionHook` catches ``SIGTERM`` and ``SIGUSR1`` (by default)
while the run trains; the handler only records the signal. At the end of
the iteration in progress (``after_train_iter``), or after a validation
that was running, every process saves
``preempted_iter_<N>.pth`` (``N`` iterations done; weights, optimizer,
schedulers, message hub, the random state of
:class:`~mmrsa.engine.hooks.RandomStateHook`), points ``last_checkpoint`` at
it, logs ``Pre-empted by SIGTERM at iteration N ...: saved ...`` and exits
with code :data:`PREEMPTED_EXIT_CODE` (75, ``EX_TEMPFAIL``), which
``tools/slurm_train.sh`` answers with ``scontrol requeue``. In a
distributed run the processes agree on the iteration (one ``all_reduce`` of
a flag per iteration).

``--resume`` (:class:`~mmrsa.engine.runner.ResumableRunner`) takes that
file. MMEngine's ``EpochBasedTrainLoop`` would restart the epoch from its
first batch; the hook instead makes the sampler skip the batches of the
epoch that were trained on before the signal, so the epoch goes on with its
next batch. How exact that is:

* the data: exact. The resumed run trains on the same samples, in the same
  batches and order, as the uninterrupted run (the sampler's order depends
  on ``seed + epoch`` only: MMEngine's ``DefaultSampler``, and any sampler
  whose order does not depend on the global random state);
* with ``RandomStateHook``, ``randomness=dict(seed=..., deterministic=True)``
  and ``num_workers=0``: bit-identical weights at the end of the epoch (and
  after it) on CPU;
* with data-loading workers, their random augmentations of the rest of the
  epoch differ from the uninterrupted run's (new workers, seeded at the
  epoch's start, have not drawn the skipped batches' numbers);
* the log numbers the remaining batches of the resumed epoch from 1
  (``Epoch(train) [2][1/1]`` for the second of two batches); the iteration
  counter is exact.

A model whose weights hold ``inf`` / ``nan`` is not saved: the run ends
with :class:`~mmrsa.engine.hooks.NonFiniteWeightsError` (exit code 1, no
requeue).

``IterBasedTrainLoop`` resumes at the saved iteration by itself (MMEngine
replays the data loader up to it). The file is removed once the resumed run
saves a newer checkpoint through its checkpoint hook, or is pre-empted again.

A signal is handled between Python operations: a long forward pass or a
validation finishes first. Leave enough time (``--signal=USR1@90``).

Opt in from a config::

    custom_hooks = [dict(type='PreemptionHook')]
"""
import logging
import os
import os.path as osp
import signal
import threading
from itertools import islice
from typing import Iterator, Optional, Sequence, Tuple

import torch
from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data import Sampler

from mmaction.registry import HOOKS
from mmrsa.fileio.atomic import write_bytes_atomic
from .non_finite_check_hook import (NonFiniteWeightsError, _model,
                                    describe_non_finite, non_finite_tensors)

__all__ = ['PREEMPTED_EXIT_CODE', 'PreemptionHook']

#: The exit code of a pre-empted run (``EX_TEMPFAIL``: try again later).
PREEMPTED_EXIT_CODE = 75

#: Signals that may stand for a pre-emption.
SIGNAL_CHOICES = ('SIGTERM', 'SIGUSR1', 'SIGUSR2', 'SIGINT', 'SIGHUP')

#: The name of the checkpoint of a pre-empted run (``{}``: the iterations
#: done); auto-resume looks for it (mmrsa.engine.runner).
PREEMPTED_FILENAME_TMPL = 'preempted_iter_{}.pth'


class _SkipFirst(Sampler):
    """Yields ``sampler``'s indices after the first ``count``."""

    def __init__(self, sampler: Sampler, count: int) -> None:
        self.sampler, self.count = sampler, count

    def __iter__(self) -> Iterator:
        return islice(iter(self.sampler), self.count, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.count, 0)


def _log(message: str, level: int = logging.INFO) -> None:
    print_log(message, logger='current', level=level)


@HOOKS.register_module()
class PreemptionHook(Hook):
    """Save ``preempted_iter_<N>.pth`` and exit with code 75 on a
    pre-emption signal; resume from it exactly (see the module docstring).

    Args:
        signals (Sequence[str]): The signals that stand for a pre-emption,
            among :data:`SIGNAL_CHOICES`. Defaults to
            ``('SIGTERM', 'SIGUSR1')``.
        exit_code (int): The exit code after saving. Defaults to
            :data:`PREEMPTED_EXIT_CODE`.
    """

    priority = 'LOWEST'  # after the optimizer step, the schedulers, logging

    def __init__(self,
                 signals: Sequence[str] = ('SIGTERM', 'SIGUSR1'),
                 exit_code: int = PREEMPTED_EXIT_CODE) -> None:
        if isinstance(signals, str):
            signals = (signals, )
        for name in signals:
            if name not in SIGNAL_CHOICES or not hasattr(signal, name):
                raise ValueError(f'signals must be among {SIGNAL_CHOICES} '
                                 f'(on this platform), got {name!r}')
        if not isinstance(exit_code, int) or not 0 < exit_code < 256:
            raise ValueError(f'exit_code must be an int in 1..255, got '
                             f'{exit_code!r}')
        self.signals = tuple(signals)
        self.exit_code = exit_code
        self.received: Optional[str] = None
        self._previous: dict = {}
        self._training = False
        self._resume_at: Optional[Tuple[int, int]] = None
        self._resumed_file: Optional[str] = None
        self._last_ckpt_at_resume: Optional[str] = None
        self._skipping: Optional[tuple] = None

    # -- the signal ------------------------------------------------------- #
    def _handle(self, signum, frame) -> None:
        # only record it: the run saves at the end of the iteration
        self.received = signal.Signals(signum).name

    def before_train(self, runner) -> None:
        self._training = True
        if threading.current_thread() is not threading.main_thread():
            _log(
                'PreemptionHook: not in the main thread, no signal '
                'handler installed.', logging.WARNING)
            return
        for name in self.signals:
            number = getattr(signal, name)
            self._previous[number] = signal.signal(number, self._handle)

    def _restore_handlers(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}

    def after_train(self, runner) -> None:
        self._training = False
        self._restore_handlers()
        self._remove_resumed_file(runner)

    def _signalled(self) -> bool:
        flag = self.received is not None
        if get_world_size() > 1:  # one decision for all processes
            data = torch.tensor([int(flag)])
            all_reduce(data, op='max')
            flag = bool(data.item())
        return flag

    # -- saving and exiting ------------------------------------------------ #
    @staticmethod
    def _out_dir(runner) -> Tuple[str, Optional[dict]]:
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and hook.out_dir is not None:
                return hook.out_dir, hook.backend_args
        return runner.work_dir, None

    def _save_and_exit(self, runner, where: str, epoch: int,
                       iters: int) -> None:
        out_dir, backend_args = self._out_dir(runner)
        filename = PREEMPTED_FILENAME_TMPL.format(iters)
        name = self.received or 'a signal on another process'
        bad = non_finite_tensors(_model(runner).state_dict())
        if bad:  # never a non-finite checkpoint; no requeue either
            self._restore_handlers()
            raise NonFiniteWeightsError(
                f'Pre-empted by {name} at {where}, but the model holds '
                f'non-finite values in {describe_non_finite(bad)}: nothing '
                f'saved. Resume from the last checkpoint with a lower '
                f'learning rate.')
        runner.save_checkpoint(
            out_dir,
            filename,
            meta=dict(epoch=epoch, iter=iters, preempted=name),
            by_epoch=False,
            backend_args=backend_args)
        path = osp.join(out_dir, filename)
        if is_main_process():
            if '://' not in str(out_dir):
                write_bytes_atomic(
                    osp.join(runner.work_dir, 'last_checkpoint'),
                    path.encode())
            if self._resumed_file is not None and \
                    osp.realpath(self._resumed_file) != osp.realpath(path) \
                    and osp.isfile(self._resumed_file):
                os.remove(self._resumed_file)
        _log(
            f'Pre-empted by {name} at {where}: saved {path}; exiting with '
            f'code {self.exit_code}. Run again with --resume to continue '
            f'from there.', logging.WARNING)
        self._training = False
        self._restore_handlers()
        raise SystemExit(self.exit_code)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        if not self._signalled():
            return
        where = f'iteration {runner.iter + 1}'
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            where += (f' (epoch {runner.epoch + 1}, batch {batch_idx + 1} '
                      f'of this run)')
        self._save_and_exit(runner, where, runner.epoch, runner.iter + 1)

    def after_val(self, runner) -> None:
        if self._training and self._signalled():
            self._save_and_exit(runner,
                                f'the validation after epoch {runner.epoch}',
                                runner.epoch, runner.iter)

    # -- resuming ------------------------------------------------------- #
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta')
        if isinstance(meta, dict) and meta.get('preempted'):
            self._resume_at = (meta['epoch'], meta['iter'])
            self._resumed_file = None
            last = osp.join(runner.work_dir, 'last_checkpoint')
            if osp.isfile(last):
                with open(last) as f:
                    named = f.read().strip()
                if osp.basename(named) == PREEMPTED_FILENAME_TMPL.format(
                        meta['iter']):
                    self._resumed_file = named

    def before_train_epoch(self, runner) -> None:
        resume_at, self._resume_at = self._resume_at, None
        if resume_at is not None:  # the message hub is loaded by now
            self._last_ckpt_at_resume = runner.message_hub.get_info(
                'last_ckpt')
        if resume_at is None or (runner.epoch, runner.iter) != resume_at or \
                not isinstance(runner.train_loop, EpochBasedTrainLoop):
            return
        loader = runner.train_loop.dataloader
        done = runner.iter - runner.epoch * len(loader)
        if done <= 0:
            return
        batch_sampler = getattr(loader, 'batch_sampler', None)
        sampler = getattr(batch_sampler, 'sampler', None)
        batch_size = getattr(batch_sampler, 'batch_size', None)
        if sampler is None or not isinstance(batch_size, int):
            _log(
                f'PreemptionHook: the training loader has no batch sampler '
                f'with a sampler and a batch size; the {done} batches of '
                f'epoch {runner.epoch + 1} trained before the pre-emption '
                f'are trained again.', logging.WARNING)
            return
        batch_sampler.sampler = _SkipFirst(sampler, done * batch_size)
        # Starting the epoch's iterator draws a number (the workers' base
        # seed) from the loader's generator, the global one when it has
        # none. The uninterrupted run drew it before the batches that are
        # skipped, and the restored random state comes after them: for this
        # epoch, draw it from a private generator instead.
        private = loader.generator is None
        if private:
            loader.generator = torch.Generator()
        self._skipping = (batch_sampler, sampler, loader, private)
        _log(f'Resuming epoch {runner.epoch + 1} after its batch {done} of '
             f'{len(loader) + done}: the {done} batches trained before the '
             f'pre-emption are skipped.')

    def after_train_epoch(self, runner) -> None:
        if self._skipping is not None:
            batch_sampler, sampler, loader, private = self._skipping
            batch_sampler.sampler = sampler
            if private:
                loader.generator = None
            self._skipping = None
        self._remove_resumed_file(runner)

    def _remove_resumed_file(self, runner) -> None:
        """Remove the pre-empted checkpoint this run resumed from once the
        checkpoint hook saved a newer one."""
        path = self._resumed_file
        if path is None or not is_main_process():
            return
        last_ckpt = runner.message_hub.get_info('last_ckpt')
        if last_ckpt is None or last_ckpt == self._last_ckpt_at_resume:
            return
        if osp.realpath(str(last_ckpt)) != osp.realpath(path) and \
                osp.isfile(path):
            os.remove(path)
            _log(f'Removed {path}: {last_ckpt} is newer.')
        self._resumed_file = None
