# Copyright (c) mmrsa contributors. All rights reserved.
"""Checkpoints that survive a crash at any moment of their writing.

MMEngine's ``CheckpointHook`` writes ``epoch_N.pth`` in place, then
``last_checkpoint`` in place, and with ``max_keep_ckpts`` removes the oldest
checkpoint *before* writing the new one. A crash (a pre-empted job, an
out-of-memory kill, a full disk) in between leaves a truncated
``epoch_N.pth``, a ``last_checkpoint`` naming a file that is gone, or, with
``max_keep_ckpts=1``, no good checkpoint at all.

:class:`AtomicCheckpointHook` is that hook with three changes:

* every file it writes (checkpoints, best checkpoints, ``last_checkpoint``)
  goes to a temporary name in the same folder, is flushed to disk and renamed
  over the destination (:class:`AtomicLocalBackend`), so a file of that name
  is always complete;
* ``last_checkpoint`` is written after the checkpoint it names;
* checkpoints that fall out of ``max_keep_ckpts`` are removed only after
  both, so the newest good checkpoint is never the one removed;
* a model whose weights or buffers hold ``inf`` / ``nan`` is not saved: the
  run stops with :class:`~mmrsa.engine.hooks.NonFiniteWeightsError` naming
  the tensors, before any file is written or removed, so a non-finite
  checkpoint never replaces the last finite one (a best checkpoint is not
  updated either, with a warning). ``check_finite=False`` switches this off.

Opt in from a config (every argument is ``CheckpointHook``'s)::

    default_hooks = dict(
        checkpoint=dict(type='AtomicCheckpointHook', interval=1,
                        max_keep_ckpts=1))

Remote folders (``out_dir='s3://...'``, or ``backend_args`` given) are
written by their own backend, as ``CheckpointHook`` does; the removal order
is the one above for them too.
"""
import logging
import os.path as osp
from typing import List

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log

from mmaction.registry import HOOKS
from mmrsa.fileio.atomic import write_bytes_atomic
from .non_finite_check_hook import (NonFiniteWeightsError, _model,
                                    describe_non_finite, non_finite_tensors)

__all__ = ['ATOMIC_BACKEND', 'AtomicLocalBackend', 'AtomicCheckpointHook']

#: The name :class:`AtomicLocalBackend` is registered under
#: (``backend_args=dict(backend=ATOMIC_BACKEND)``).
ATOMIC_BACKEND = 'mmrsa_atomic_local'


class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose ``put`` and ``put_text`` replace a file
    atomically: the data go to a temporary file in the destination's folder,
    which is flushed to disk and renamed over the destination
    (:func:`mmrsa.fileio.atomic.write_atomic`). Readers never
    see a partial file; a crash leaves the previous version or the new one.
    """

    def put(self, obj: bytes, filepath) -> None:
        write_bytes_atomic(str(filepath), bytes(obj))

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        write_bytes_atomic(str(filepath), obj.encode(encoding))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that never leaves a partial checkpoint and never
    removes the last good one (see the module docstring).

    Takes ``CheckpointHook``'s arguments. Unless ``backend_args`` or
    ``file_client_args`` is given or ``out_dir`` is a URL, files are written
    by :class:`AtomicLocalBackend`.

    Args:
        check_finite (bool): Refuse to save a model holding ``inf`` or
            ``nan``. Defaults to True.
    """

    def __init__(self, *args, check_finite: bool = True, **kwargs) -> None:
        self.check_finite = check_finite
        out_dir = kwargs.get('out_dir')
        if (kwargs.get('backend_args') is None
                and kwargs.get('file_client_args') is None
                and (out_dir is None or '://' not in str(out_dir))):
            kwargs['backend_args'] = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, **kwargs)

    def _non_finite(self, runner) -> List[str]:
        if not self.check_finite:
            return []
        return non_finite_tensors(_model(runner).state_dict())

    def _save_best_checkpoint(self, runner, metrics) -> None:
        bad = self._non_finite(runner)
        if bad:
            print_log(
                f'Not updating the best checkpoint: the model holds '
                f'non-finite values in {describe_non_finite(bad)}.',
                logger='current',
                level=logging.WARNING)
            return
        super()._save_best_checkpoint(runner, metrics)

    def _save_checkpoint_with_step(self, runner, step: int,
                                   meta: dict) -> None:
        bad = self._non_finite(runner)
        if bad:
            kept = runner.message_hub.get_info('last_ckpt') or self.last_ckpt
            kept = (f'the last one, {kept}, is kept'
                    if kept else 'none was saved before')
            raise NonFiniteWeightsError(
                f'Not saving {self.filename_tmpl.format(step)}: the model '
                f'holds non-finite values (inf/nan) in '
                f'{describe_non_finite(bad)}. No checkpoint was written or '
                f'removed ({kept}). Training diverged: '
                f'lower the learning rate or clip gradients, add '
                f'NonFiniteCheckHook to stop at the first bad step, and '
                f'resume from the last checkpoint.')
        # The ids kept are updated before saving, as CheckpointHook does, so
        # that the checkpoint's message hub lists itself; the files that fall
        # out are removed after the new checkpoint and last_checkpoint.
        outdated: List[int] = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            while len(self.keep_ckpt_ids) >= self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)

        if not is_main_process():
            return
        AtomicLocalBackend().put_text(
            str(self.last_ckpt), osp.join(runner.work_dir, 'last_checkpoint'))
        for old_step in outdated:
            path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(old_step))
            if path == self.last_ckpt:
                continue
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                # checkpoints saved by DeepSpeed are folders
                self.file_backend.rmtree(path)
