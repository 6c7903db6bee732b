# Copyright (c) mmrsa contributors. All rights reserved.
"""Stop (or skip) a training step whose loss or gradients are not finite.

A learning rate that is far too high, an fp16 overflow or one corrupt clip
makes the loss or the gradient ``inf`` / ``nan``; the optimizer step then
writes ``nan`` into every weight, MMEngine goes on training (and logging
``loss: nan``), saves an all-``nan`` ``epoch_N.pth`` and, with
``max_keep_ckpts``, deletes the last finite checkpoint; the run exits 0.

:class:`NonFiniteCheckHook` looks at the gradients just before each
optimizer step (``torch.optim.Optimizer.register_step_pre_hook``, after
gradient clipping): when their total norm is not finite, the gradients are
dropped (set to ``None``), so the step leaves every parameter and its
optimizer state as they were. After the iteration, with the loss and the
model's floating-point buffers (BatchNorm running statistics) checked too:

* ``action='stop'`` (default): the run ends with
  :class:`NonFiniteTrainingError`, whose message names the iteration, the
  epoch and batch, and the value (``tools/train.py`` prints it and exits
  1). Nothing of this iteration is saved;
* ``action='skip'``: a warning names the iteration and training goes on; the
  model's floating-point buffers (BatchNorm running statistics, updated by
  the forward pass) are put back as they were before the iteration. After
  ``max_consecutive_skips`` skipped steps in a row the run stops as above.
  The buffers of a skipped step are restored, its weights are those of the
  step before only when the gradients were the non-finite part.

In validation and testing the hook counts the predictions whose scores
(``pred_score``) hold ``inf`` / ``nan`` and logs a warning after the
epoch (``tools/test.py`` adds the hook when the config has none).

A step the gradient scaler of ``AmpOptimWrapper`` skips (fp16 overflow) never
reaches the optimizer, and is not counted here.

:class:`~mmrsa.engine.hooks.AtomicCheckpointHook` refuses to save a model
with non-finite weights or buffers (:class:`NonFiniteWeightsError`): a
non-finite checkpoint never replaces, nor makes the hook remove, a finite
one, with or without this hook.

Opt in from a config::

    custom_hooks = [dict(type='NonFiniteCheckHook')]  # or action='skip'
"""
import logging
from typing import Dict, List, Mapping, Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.runner import EpochBasedTrainLoop

from mmaction.registry import HOOKS

__all__ = [
    'NonFiniteTrainingError', 'NonFiniteWeightsError', 'non_finite_tensors',
    'describe_non_finite', 'NonFiniteCheckHook'
]

ACTIONS = ('stop', 'skip')


class NonFiniteTrainingError(RuntimeError):
    """The loss or the gradients of a training step are not finite."""


class NonFiniteWeightsError(RuntimeError):
    """A model (or checkpoint) to be saved holds ``inf`` or ``nan``."""


def non_finite_tensors(tensors: Mapping[str, object]) -> List[str]:
    """The names of the floating-point (or complex) tensors of ``tensors``
    that hold ``inf`` or ``nan``."""
    bad = []
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and (
                value.is_floating_point() or value.is_complex()) and \
                not bool(torch.isfinite(value).all()):
            bad.append(name)
    return bad


def describe_non_finite(names: List[str], limit: int = 5) -> str:
    """``'3 tensors (a, b, c)'``, at most ``limit`` names listed."""
    shown = ', '.join(names[:limit])
    more = f', and {len(names) - limit} more' if len(names) > limit else ''
    noun = 'tensor' if len(names) == 1 else 'tensors'
    return f'{len(names)} {noun} ({shown}{more})'


def _model(runner) -> torch.nn.Module:
    model = runner.model
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class NonFiniteCheckHook(Hook):
    """Stop the run, or skip the step, when the loss, the gradient norm or
    a buffer of the model is not finite (see the module docstring).

    Args:
        action (str): ``'stop'`` or ``'skip'``. Defaults to ``'stop'``.
        max_consecutive_skips (int): With ``action='skip'``, stop after this
            many skipped steps in a row. Defaults to 10.
        check_buffers (bool): Also check the model's floating-point buffers
            (BatchNorm running statistics, which activations that overflow
            make ``inf`` while loss and gradients stay finite) after every
            iteration. Defaults to True.
    """

    priority = 'LOW'  # after LoggerHook logs the iteration, before saving

    def __init__(self,
                 action: str = 'stop',
                 max_consecutive_skips: int = 10,
                 check_buffers: bool = True) -> None:
        if action not in ACTIONS:
            raise ValueError(
                f'action must be one of {ACTIONS}, got {action!r}')
        if not isinstance(max_consecutive_skips, int) or \
                max_consecutive_skips < 1:
            raise ValueError('max_consecutive_skips must be a positive '
                             f'int, got {max_consecutive_skips!r}')
        self.action = action
        self.check_buffers = check_buffers
        self.max_consecutive_skips = max_consecutive_skips
        self._handles: list = []
        self._dropped_norm: Optional[float] = None
        self._buffers: Optional[Dict[str, torch.Tensor]] = None
        self._skipped_in_a_row = 0
        self.skipped_iters: List[int] = []
        self._predictions = self._non_finite_predictions = 0

    # -- the optimizer step ----------------------------------------------- #
    def before_train(self, runner) -> None:
        wrappers = runner.optim_wrapper
        if isinstance(wrappers, OptimWrapperDict):
            wrappers = list(wrappers.values())
        else:
            wrappers = [wrappers]
        for wrapper in wrappers:
            self._handles.append(
                wrapper.optimizer.register_step_pre_hook(self._check_step))

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _check_step(self, optimizer, args, kwargs) -> None:
        """Drop the gradients of a step whose gradient norm is not
        finite: ``optimizer.step`` then leaves the parameters as they are."""
        params = [
            p for group in optimizer.param_groups for p in group['params']
            if p.grad is not None
        ]
        if not params:
            return
        norm = torch.nn.utils.get_total_norm([p.grad for p in params],
                                             error_if_nonfinite=False)
        if bool(torch.isfinite(norm)):
            return
        for p in params:
            p.grad = None
        self._dropped_norm = float(norm)

    # -- predictions ------------------------------------------------------ #
    def _count_scores(self, outputs) -> None:
        for output in outputs or ():
            scores = output.get('pred_score') if isinstance(
                output, dict) else getattr(output, 'pred_score', None)
            if not isinstance(scores, torch.Tensor):
                continue
            self._predictions += 1
            if not bool(torch.isfinite(scores).all()):
                self._non_finite_predictions += 1

    def _warn_scores(self, mode: str) -> None:
        bad, total = self._non_finite_predictions, self._predictions
        if bad:
            print_log(
                f'{bad} of {total} {mode} predictions hold non-finite scores '
                f'(nan/inf): the model\'s weights are probably non-finite '
                f'(a diverged run); its metrics mean nothing.',
                logger='current',
                level=logging.WARNING)

    def before_val_epoch(self, runner) -> None:
        self._predictions = self._non_finite_predictions = 0

    before_test_epoch = before_val_epoch

    def after_val_iter(self,
                       runner,
                       batch_idx,
                       data_batch=None,
                       outputs=None) -> None:
        self._count_scores(outputs)

    after_test_iter = after_val_iter

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._warn_scores('validation')

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._warn_scores('test')

    # -- around the iteration --------------------------------------------- #
    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch=None) -> None:
        self._dropped_norm = None
        if self.action == 'skip':
            self._buffers = {
                name: buffer.detach().clone()
                for name, buffer in _model(runner).named_buffers()
                if buffer.is_floating_point()
            }

    def _where(self, runner, batch_idx: int) -> str:
        where = f'iteration {runner.iter + 1}'
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop):
            where += (f' (epoch {runner.epoch + 1}, batch {batch_idx + 1}/'
                      f'{len(loop.dataloader)})')
        return where

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        problems = []
        loss = outputs.get('loss') if isinstance(outputs, dict) else None
        if loss is not None:
            loss = torch.as_tensor(loss).detach()
            if not bool(torch.isfinite(loss).all()):
                problems.append(f'loss ({loss.float().mean().item()})')
        if self._dropped_norm is not None:
            problems.append(f'gradient norm ({self._dropped_norm})')
        if self.check_buffers:
            buffers = {
                name: buffer
                for name, buffer in _model(runner).named_buffers()
                if buffer.is_floating_point()
            }
            finite = [torch.isfinite(b).all() for b in buffers.values()]
            if finite and not bool(torch.stack(finite).all()):
                names = non_finite_tensors(buffers)
                more = f' and {len(names) - 3} more' if len(names) > 3 \
                    else ''
                problems.append(f"buffers {', '.join(names[:3])}{more}")
        if not problems:
            self._skipped_in_a_row = 0
            self._buffers = None
            return
        what = ' and '.join(problems)
        where = self._where(runner, batch_idx)
        updated = self._dropped_norm is None  # the step went through
        self._dropped_norm = None
        if self.action == 'skip':
            self._skipped_in_a_row += 1
            self.skipped_iters.append(runner.iter + 1)
            if self._buffers is not None:
                model_buffers = dict(_model(runner).named_buffers())
                with torch.no_grad():
                    for name, saved in self._buffers.items():
                        model_buffers[name].copy_(saved)
                self._buffers = None
            if self._skipped_in_a_row <= self.max_consecutive_skips:
                print_log(
                    f'Non-finite {what} at {where}: step skipped '
                    f'({"the weights were updated; " if updated else ""}'
                    f'{self._skipped_in_a_row} in a row, at most '
                    f'{self.max_consecutive_skips}).',
                    logger='current',
                    level=logging.WARNING)
                return
            what += (f', {self._skipped_in_a_row} steps in a row (at most '
                     f'{self.max_consecutive_skips} are skipped)')
        state = ('the optimizer step went through'
                 if updated else 'the weights were left as before this step')
        raise NonFiniteTrainingError(
            f'Non-finite {what} at {where}: training stopped ({state}; '
            f'nothing of this iteration was saved). Lower the learning rate, '
            f'clip gradients (optim_wrapper.clip_grad), check the data of '
            f'this batch, then resume from the last checkpoint '
            f'(--resume).')
