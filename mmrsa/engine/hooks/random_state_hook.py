# Copyright (c) mmrsa contributors. All rights reserved.
"""Resume a run with the random state of the run that was interrupted.

With ``randomness=dict(seed=0, deterministic=True)`` two runs are identical,
but a run resumed from ``epoch_1.pth`` is not the run that went on: the
resumed process starts from a fresh seed, so its augmentations, dropout and
data order differ from epoch 2 on. Four sources of randomness are involved:

* the generators of the training process: ``torch`` (CPU and CUDA),
  ``numpy``, Python's ``random`` (transforms, dropout, stochastic depth);
* the sampler's seed (the data order is ``seed + epoch``; a run resumed
  without ``--seed`` gets another seed) and the data loader's generator;
* validation, which draws from the same generators between the checkpoint
  and the next epoch in the uninterrupted run, but not in the resumed one;
* data-loading workers: MMEngine seeds them with
  ``seed + worker_id + num_workers * rank`` whatever the epoch, and
  persistent workers carry their state from one epoch to the next, which a
  resumed run's new workers cannot have.

:class:`RandomStateHook` saves the first two in every checkpoint (per
process), restores them when a run resumes, runs validation on a copy of the
state (validation then leaves the training randomness as it found it) and
seeds each epoch's workers from ``(seed, epoch, rank, worker_id)``, starting
persistent workers anew at each epoch for that. On CPU, with a seed and
``deterministic=True``, 2 epochs straight and 1 epoch + ``--resume`` end
with bit-identical weights. What it saves is tensors and plain numbers: the
checkpoint still loads with ``torch.load(weights_only=True)``.

Opt in from a config::

    custom_hooks = [dict(type='RandomStateHook')]

Iteration-based loops (``IterBasedTrainLoop``) get the saved state back
too, but MMEngine replays the data of the finished iterations on resume,
which draws from the generators of the training process when
``num_workers=0``: there the resumed run is reproducible, not identical.
"""
import logging
import random
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import BaseLoop, EpochBasedTrainLoop
from torch.utils.data import DataLoader

from mmaction.registry import HOOKS

__all__ = [
    'capture_random_state', 'restore_random_state', 'EpochWorkerSeed',
    'RandomStateHook'
]

#: The checkpoint key the hook saves the random state under.
CHECKPOINT_KEY = 'random_state'


def capture_random_state(loader: Optional[Any] = None) -> Dict[str, Any]:
    """The random state of this process (and of ``loader``'s sampler and
    generator) as tensors and plain numbers."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, mt_state, gauss_next = random.getstate()
    state = dict(
        torch=torch.get_rng_state(),
        cuda=(torch.cuda.get_rng_state_all() if torch.cuda.is_available()
              and torch.cuda.is_initialized() else []),
        numpy=dict(
            kind=str(kind),
            keys=torch.from_numpy(keys.astype(np.int64)),
            pos=int(pos),
            has_gauss=int(has_gauss),
            cached_gaussian=float(cached_gaussian)),
        python=dict(
            version=int(version),
            state=torch.tensor(mt_state, dtype=torch.int64),
            gauss_next=gauss_next),
        sampler_seed=None,
        loader_generator=None)
    sampler = getattr(loader, 'sampler', None)
    if isinstance(getattr(sampler, 'seed', None), int):
        state['sampler_seed'] = int(sampler.seed)
    generator = getattr(loader, 'generator', None)
    if isinstance(generator, torch.Generator):
        state['loader_generator'] = generator.get_state()
    return state


def restore_random_state(state: Dict[str, Any],
                         loader: Optional[Any] = None) -> None:
    """Put back what :func:`capture_random_state` returned."""
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda') or []
    if cuda and torch.cuda.is_available() \
            and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    numpy_state = state['numpy']
    np.random.set_state(
        (numpy_state['kind'], numpy_state['keys'].numpy().astype(np.uint32),
         numpy_state['pos'], numpy_state['has_gauss'],
         numpy_state['cached_gaussian']))
    python = state['python']
    random.setstate((python['version'], tuple(python['state'].tolist()),
                     python['gauss_next']))
    sampler = getattr(loader, 'sampler', None)
    if state.get('sampler_seed') is not None and hasattr(sampler, 'seed'):
        sampler.seed = state['sampler_seed']
    generator = getattr(loader, 'generator', None)
    if state.get('loader_generator') is not None and isinstance(
            generator, torch.Generator):
        generator.set_state(state['loader_generator'])


class EpochWorkerSeed:
    """``worker_init_fn`` seeding a data-loading worker from ``(seed,
    epoch, rank, worker_id)``, after the loader's own ``worker_init_fn``.

    Args:
        seed (int): The run's seed.
        epoch (int): The epoch the worker loads data for.
        rank (int): The process's rank.
        init_fn (callable, optional): The ``worker_init_fn`` the loader had,
            called first. Defaults to None.
    """

    def __init__(self,
                 seed: int,
                 epoch: int,
                 rank: int,
                 init_fn: Optional[Callable[[int], None]] = None) -> None:
        self.seed, self.epoch, self.rank = int(seed), int(epoch), int(rank)
        self.init_fn = init_fn

    def worker_seed(self, worker_id: int) -> int:
        """A 32-bit seed mixing the run's seed, epoch, rank and worker."""
        sequence = np.random.SeedSequence(
            [self.seed % 2**32, self.epoch, self.rank, worker_id])
        return int(sequence.generate_state(1)[0])

    def __call__(self, worker_id: int) -> None:
        if self.init_fn is not None:
            self.init_fn(worker_id)
        seed = self.worker_seed(worker_id)
        np.random.seed(seed)
        random.seed(seed)
        torch.manual_seed(seed)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the random state in checkpoints and restore it on resume.

    See the module docstring for what is saved and why. In a distributed run
    every process's state is saved (gathered when a checkpoint is due) and
    each process gets its own back; when the number of processes changed,
    only the sampler's seed is restored, with a warning.

    Args:
        reseed_workers (bool): Seed the training data workers of every
            epoch from ``(seed, epoch, rank, worker_id)``, restarting
            persistent workers at each epoch. Defaults to True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, reseed_workers: bool = True) -> None:
        self.reseed_workers = reseed_workers
        self._resumed: Optional[dict] = None  # saved state, not applied yet
        self._for_checkpoint: Optional[List[dict]] = None  # per rank
        self._before_val: Optional[dict] = None  # training state during val
        self._told_restart = False

    @staticmethod
    def _train_loader(runner) -> Optional[Any]:
        # `runner.train_loop` would build the loop (and its data) in a
        # validation-only run
        loop = getattr(runner, '_train_loop', None)
        return getattr(loop, 'dataloader', None) if isinstance(
            loop, BaseLoop) else None

    # -- saving ---------------------------------------------------------- #
    def _gather(self, runner) -> List[dict]:
        local = capture_random_state(self._train_loader(runner))
        if get_world_size() == 1:
            return [local]
        return all_gather_object(local)

    @staticmethod
    def _checkpoint_due(runner, by_epoch: bool) -> bool:
        """Whether a CheckpointHook saves after this epoch (iteration),
        by its own rule."""
        for hook in runner.hooks:
            if not isinstance(hook, CheckpointHook) or \
                    hook.by_epoch != by_epoch:
                continue
            if by_epoch:
                every = hook.every_n_epochs(runner, hook.interval,
                                            hook.save_begin)
                last = hook.is_last_train_epoch(runner)
            else:
                every = hook.every_n_train_iters(runner, hook.interval,
                                                 hook.save_begin)
                last = hook.is_last_train_iter(runner)
            if every or (hook.save_last and last):
                return True
        return False

    def _gather_if_due(self, runner, by_epoch: bool) -> None:
        # Every process's state is gathered (by all of them, a collective)
        # before CheckpointHook, whose saving runs on rank 0 only.
        if get_world_size() > 1:
            self._for_checkpoint = self._gather(runner) if \
                self._checkpoint_due(runner, by_epoch) else None

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None) -> None:
        self._gather_if_due(runner, by_epoch=False)

    def after_train_epoch(self, runner) -> None:
        self._gather_if_due(runner, by_epoch=True)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._before_val is not None:
            # a best checkpoint saved during validation: the training state
            states = self._before_val['ranks']
        elif self._for_checkpoint is not None:
            states = self._for_checkpoint
        else:
            # this process's state only (rank 0 runs this alone: no
            # collective); a resume with several processes then restores the
            # sampler's seed only
            states = [capture_random_state(self._train_loader(runner))]
        self._for_checkpoint = None
        checkpoint[CHECKPOINT_KEY] = dict(ranks=list(states))

    # -- validation leaves the training state as it was ------------------- #
    def before_val(self, runner) -> None:
        local = capture_random_state(self._train_loader(runner))
        ranks = [local] if get_world_size() == 1 else all_gather_object(local)
        self._before_val = dict(local=local, ranks=ranks)

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            restore_random_state(self._before_val['local'],
                                 self._train_loader(runner))
            self._before_val = None

    # -- restoring --------------------------------------------------------- #
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY)
        meta = checkpoint.get('meta')
        if isinstance(saved, dict) and isinstance(meta, dict):
            self._resumed = dict(
                state=saved, epoch=meta.get('epoch'), iter=meta.get('iter'))

    def before_train_epoch(self, runner) -> None:
        if self._resumed is not None:
            resumed, self._resumed = self._resumed, None
            # after load_from (not a resume) the counters start at 0
            if (runner.epoch, runner.iter) == (resumed['epoch'],
                                               resumed['iter']):
                self._restore(runner, resumed['state']['ranks'])
        if self.reseed_workers and isinstance(runner.train_loop,
                                              EpochBasedTrainLoop):
            self._seed_workers(runner)

    def _restore(self, runner, ranks: List[dict]) -> None:
        loader = self._train_loader(runner)
        world_size, rank = get_world_size(), get_rank()
        if len(ranks) == world_size:
            restore_random_state(ranks[rank], loader)
            print_log(
                'Restored the random state of the checkpoint.',
                logger='current')
            return
        seed = ranks[0].get('sampler_seed')
        sampler = getattr(loader, 'sampler', None)
        if seed is not None and hasattr(sampler, 'seed'):
            sampler.seed = seed
        print_log(
            f'The checkpoint holds the random state of {len(ranks)} '
            f'processes and this run has {world_size}: only the data order '
            f'(sampler seed) is restored.',
            logger='current',
            level=logging.WARNING)

    def _seed_workers(self, runner) -> None:
        loader = self._train_loader(runner)
        if not isinstance(loader, DataLoader) or loader.num_workers == 0:
            return
        init_fn = loader.worker_init_fn  # the loader's own, kept first
        if isinstance(init_fn, EpochWorkerSeed):
            init_fn = init_fn.init_fn
        loader.worker_init_fn = EpochWorkerSeed(runner.seed, runner.epoch,
                                                get_rank(), init_fn)
        if loader.persistent_workers and not self._told_restart:
            print_log(
                'RandomStateHook starts the persistent training data '
                'workers anew at every epoch, seeded from (seed, epoch, '
                'rank, worker_id).',
                logger='current')
            self._told_restart = True
        # Persistent workers were seeded when they started: start them anew
        # (DataLoader keeps them in `_iterator` between epochs).
        iterator = getattr(loader, '_iterator', None)
        if iterator is not None:
            shutdown = getattr(iterator, '_shutdown_workers', None)
            if shutdown is not None:
                shutdown()
            loader._iterator = None
