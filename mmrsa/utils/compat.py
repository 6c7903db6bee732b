# Copyright (c) mmrsa contributors. All rights reserved.
"""Runtime fixes for the pinned OpenMMLab stack.

``import mmrsa`` calls :func:`apply_compat_fixes` before anything imports
``mmaction.models``. Every fix is a named function that

* acts only when the problem is present (a no-op on a stack that is fine),
* is idempotent (calling it again changes nothing),
* returns ``True`` when it changed something and ``False`` otherwise.

The stack these fixes were measured on: torch 2.13.0 (CPU), mmengine 0.10.7,
mmcv-lite 2.1.0, mmaction2 1.2.0 and numpy 2.4.
"""
import contextlib
import functools
import importlib.util
import logging
import os
import sys
import types
from typing import Callable, Dict, Iterable, Iterator

import numpy as np

__all__ = [
    'DRN_MODULE', 'DRN_MISSING_MESSAGE', 'patch_missing_drn',
    'patch_numpy_aliases', 'patch_cpu_distributed', 'patch_cpu_ddp',
    'patch_bf16_head_loss', 'patch_tsm_optim_params', 'apply_compat_fixes'
]

DRN_MODULE = 'mmaction.models.localizers.drn'
DRN_MISSING_MESSAGE = (
    'DRN is not available: the installed mmaction2 package lacks '
    '`mmaction/models/localizers/drn` (upstream issue '
    'open-mmlab/mmaction2#2714), so mmrsa put a placeholder in its place. '
    'Install mmaction2 from a source checkout to use DRN.')

PLACEHOLDER_DOC = 'Placeholder inserted by mmrsa.'
# Marks a function of mmengine.dist.utils that this module already wrapped.
_PATCH_FLAG = '_mmrsa_cpu_safe'
# The mmengine functions that call ``torch.cuda.set_device`` unconditionally
# on the CUDA/CPU branch before ``init_process_group``.
_DIST_INIT_FUNCTIONS = ('_init_dist_pytorch', '_init_dist_mpi',
                        '_init_dist_slurm')


def _drn_source_exists(search_locations: Iterable[str]) -> bool:
    """Whether ``models/localizers/drn/drn.py`` exists under any location."""
    for root in search_locations:
        folder = os.path.join(root, 'models', 'localizers', 'drn')
        if os.path.isfile(os.path.join(folder, 'drn.py')):
            return True
    return False


def _make_drn_placeholder() -> type:
    """Build the placeholder ``DRN`` class that refuses to be built."""
    from torch import nn

    class DRN(nn.Module):
        """Placeholder for mmaction2's DRN localizer, which is not installed.

        Raises:
            ImportError: always, naming the upstream issue.
        """

        def __init__(self, *args, **kwargs) -> None:
            raise ImportError(DRN_MISSING_MESSAGE)

    DRN.__module__ = DRN_MODULE + '.drn'
    DRN.__qualname__ = 'DRN'
    return DRN


def patch_missing_drn() -> bool:
    """Put placeholder modules where mmaction2's missing DRN package belongs.

    Upstream symptom, on ``import mmaction.models`` with the mmaction2 1.2.0
    wheel (open-mmlab/mmaction2#2714)::

        ModuleNotFoundError: No module named 'mmaction.models.localizers.drn'

    ``mmaction/models/localizers/__init__.py`` runs
    ``from .drn.drn import DRN``, but the wheel and the sdist ship without
    that folder. This inserts ``mmaction.models.localizers.drn`` and
    ``mmaction.models.localizers.drn.drn`` into ``sys.modules``; the latter
    defines a ``DRN`` module (also registered in mmaction's ``MODELS``) that
    raises a clear ``ImportError`` when built. Everything else in
    ``mmaction.models`` then imports as usual.

    The folder is looked up on disk through the ``mmaction`` package's path:
    asking ``importlib.util.find_spec`` about the submodule itself would
    import ``mmaction.models`` and hit the very error being fixed.

    Returns:
        bool: ``True`` if placeholders were inserted, ``False`` when DRN is
        installed, already present in ``sys.modules``, or mmaction2 is not
        installed.
    """
    if DRN_MODULE in sys.modules:
        return False
    spec = importlib.util.find_spec('mmaction')
    if spec is None or not spec.submodule_search_locations:
        return False
    if _drn_source_exists(spec.submodule_search_locations):
        return False

    drn_class = _make_drn_placeholder()
    package = types.ModuleType(DRN_MODULE, PLACEHOLDER_DOC)
    package.__path__ = []  # a package, so that ``.drn.drn`` resolves
    package.__package__ = DRN_MODULE
    module = types.ModuleType(DRN_MODULE + '.drn', PLACEHOLDER_DOC)
    module.__package__ = DRN_MODULE
    module.DRN = drn_class
    module.__all__ = ['DRN']
    package.drn = module
    sys.modules[DRN_MODULE] = package
    sys.modules[module.__name__] = module

    # mmaction registers the real class when its module runs; do the same so
    # that ``MODELS.build(dict(type='DRN'))`` reaches the clear error above.
    # ``module_dict`` is read directly: ``MODELS.get`` would import
    # ``mmaction.models`` from the registry's locations.
    from mmaction.registry import MODELS
    if 'DRN' not in MODELS.module_dict:
        MODELS.register_module(name='DRN', module=drn_class)
    return True


def _in1d(ar1,
          ar2,
          assume_unique: bool = False,
          invert: bool = False,
          *,
          kind=None) -> np.ndarray:
    """``np.in1d`` as numpy < 2.4 defined it: ``np.isin`` on ``ar1`` flat."""
    return np.isin(
        np.asarray(ar1).ravel(),
        ar2,
        assume_unique=assume_unique,
        invert=invert,
        kind=kind)


def patch_numpy_aliases() -> bool:
    """Restore the numpy names that a few mmaction2 utilities still use.

    Upstream symptoms with numpy 2 (pose transforms, proposal AUC, the
    multimodal retrieval metric)::

        AttributeError: `np.Inf` was removed in the NumPy 2.0 release. ...
        AttributeError: module 'numpy' has no attribute 'trapz'
        AttributeError: module 'numpy' has no attribute 'in1d'

    Adds ``np.Inf`` (``np.inf``), ``np.trapz`` (``np.trapezoid``) and
    ``np.in1d`` (``np.isin`` on the flattened first argument) only where the
    name is missing from numpy's namespace; existing names are left alone.

    Returns:
        bool: ``True`` if at least one alias was added.
    """
    namespace = vars(np)
    aliases: Dict[str, Callable[[], object]] = {
        'Inf': lambda: np.inf,
        'trapz': lambda: namespace['trapezoid'],
        'in1d': lambda: _in1d,
    }
    changed = False
    for name, target in aliases.items():
        if name in namespace:
            continue
        if name == 'trapz' and 'trapezoid' not in namespace:
            continue
        setattr(np, name, target())
        changed = True
    return changed


def _cuda_less() -> bool:
    """Whether mmengine runs on CPU (or MPS), i.e. CUDA cannot be used."""
    import mmengine.device
    return mmengine.device.get_device() in ('cpu', 'mps')


@contextlib.contextmanager
def _skip_cuda_set_device() -> Iterator[None]:
    """Make ``torch.cuda.set_device`` a no-op inside the ``with`` block."""
    import torch
    original = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = original


def _cpu_safe(init_fn: Callable) -> Callable:
    """Wrap an mmengine ``_init_dist_*`` function for CUDA-less machines."""

    @functools.wraps(init_fn)
    def wrapper(backend, *args, **kwargs):
        if not _cuda_less():
            return init_fn(backend, *args, **kwargs)
        if backend == 'nccl':
            from mmengine.logging import print_log
            print_log(
                'CUDA is not available: using the gloo backend instead of '
                'nccl for torch.distributed.',
                logger='current',
                level=logging.WARNING)
            backend = 'gloo'
        with _skip_cuda_set_device():
            return init_fn(backend, *args, **kwargs)

    setattr(wrapper, _PATCH_FLAG, True)
    return wrapper


def patch_cpu_distributed() -> bool:
    """Let mmengine start ``torch.distributed`` on a machine without CUDA.

    Upstream symptoms under ``torchrun`` (``launcher='pytorch'``) on CPU::

        AttributeError: module 'torch._C' has no attribute '_cuda_setDevice'
        RuntimeError: Distributed package doesn't have NCCL built in

    ``mmengine.dist.utils._init_dist_pytorch`` (and the ``_mpi`` and
    ``_slurm`` variants) call ``torch.cuda.set_device(local_rank)`` before
    ``init_process_group``, and ``Runner`` passes ``backend='nccl'`` unless
    the config's ``env_cfg.dist_cfg`` says otherwise. The wrapped functions,
    when mmengine finds no accelerator, skip ``torch.cuda.set_device`` for
    the duration of the call and replace ``nccl`` by ``gloo``. Any other
    backend is passed on unchanged.

    Returns:
        bool: ``True`` if functions were wrapped; ``False`` when an
        accelerator is present (nothing to fix) or they are already wrapped.
    """
    if not _cuda_less():
        return False
    from mmengine.dist import utils as dist_utils
    changed = False
    for name in _DIST_INIT_FUNCTIONS:
        init_fn = getattr(dist_utils, name, None)
        if init_fn is None or getattr(init_fn, _PATCH_FLAG, False):
            continue
        setattr(dist_utils, name, _cpu_safe(init_fn))
        changed = True
    return changed


def _cpu_safe_ddp_init(init_fn: Callable) -> Callable:
    """Wrap ``MMDistributedDataParallel.__init__`` for CUDA-less machines."""

    @functools.wraps(init_fn)
    def wrapper(self, module, *args, **kwargs):
        if _cuda_less():
            import torch
            from mmengine.logging import print_log
            from mmengine.model import revert_sync_batchnorm
            sync_bn = (torch.nn.SyncBatchNorm, )
            if any(isinstance(m, sync_bn) for m in module.modules()):
                print_log(
                    'CUDA is not available: SyncBatchNorm layers are '
                    'reverted to BatchNorm (statistics per process).',
                    logger='current',
                    level=logging.WARNING)
                module = revert_sync_batchnorm(module)
            on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
            if on_cpu and kwargs.get('device_ids') is not None:
                kwargs['device_ids'] = None
                kwargs['output_device'] = None
        return init_fn(self, module, *args, **kwargs)

    setattr(wrapper, _PATCH_FLAG, True)
    return wrapper


def patch_cpu_ddp() -> bool:
    """Let mmengine wrap a CPU model in ``MMDistributedDataParallel``.

    Upstream symptoms of a distributed run (``launcher='pytorch'``) on CPU
    with the model wrapper a config gets by default::

        ValueError: DistributedDataParallel device_ids and output_device
        arguments only work with single-device/multiple-device GPU modules
        or CPU modules, but got device_ids [0], output_device None, and
        module parameters {device(type='cpu')}.
        ValueError: SyncBatchNorm layers only work with GPU modules

    ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` whatever the
    device, and a config's ``norm_cfg=dict(type='SyncBN')`` (or
    ``sync_bn='torch'``) gives layers that only run on GPUs. When mmengine
    finds no accelerator, the wrapped ``__init__`` drops the device ids of a
    module whose parameters are all on the CPU and reverts its SyncBN layers
    to BN (with a warning), as mmengine does itself for non-distributed
    runs. With an accelerator nothing changes.

    Returns:
        bool: ``True`` if the constructor was wrapped; ``False`` when an
        accelerator is present or it is already wrapped.
    """
    if not _cuda_less():
        return False
    from mmengine.model.wrappers import distributed
    wrapper_cls = distributed.MMDistributedDataParallel
    init_fn = wrapper_cls.__dict__['__init__']
    if getattr(init_fn, _PATCH_FLAG, False):
        return False
    wrapper_cls.__init__ = _cpu_safe_ddp_init(init_fn)
    return True


def patch_bf16_head_loss() -> bool:
    """Let MMAction2 heads compute their loss from bfloat16 scores.

    Upstream symptom (``--amp`` on a CPU, i.e. bfloat16 autocast)::

        TypeError: Got unsupported ScalarType BFloat16

    ``BaseHead.loss_by_feat`` measures top-k accuracy through numpy, which has
    no bfloat16. The fix casts bfloat16 scores to float32 before the loss
    (the loss is computed in float32 under autocast anyway); other dtypes are
    passed through unchanged.

    Returns:
        bool: True if the method was wrapped by this call.
    """
    import torch

    from mmaction.models.heads.base import BaseHead
    original = BaseHead.loss_by_feat
    if getattr(original, '_mmrsa_bf16', False):
        return False

    @functools.wraps(original)
    def loss_by_feat(self, cls_scores, data_samples):
        if isinstance(cls_scores, torch.Tensor) \
                and cls_scores.dtype == torch.bfloat16:
            cls_scores = cls_scores.float()
        return original(self, cls_scores, data_samples)

    loss_by_feat._mmrsa_bf16 = True
    BaseHead.loss_by_feat = loss_by_feat
    return True


def _is_mmrsa_module(module) -> bool:
    return type(module).__module__.split('.')[0] == 'mmrsa'


def patch_tsm_optim_params() -> bool:
    """Let MMAction2's ``TSMOptimWrapperConstructor`` train every
    parameter of mmrsa's layers.

    Upstream behaviour: the constructor (TSM's, TSN's and TANet's recipes
    use it) collects the parameters of convolutions, linear and
    normalisation layers and of childless modules; a parameter held directly
    by a module that has children is left out of every group, with no
    message, and is never trained. RSA's ``P1`` and ``I`` are such
    parameters, so an RSA layer inside a TSM recipe (``RSAHybrid`` with
    ``ResNetTSM``) would silently train without its basic kernel and
    identity context.

    The wrapped ``add_params`` adds the trainable parameters of mmrsa
    modules that no group holds to one more group with the base learning
    rate and weight decay (the policy of the recipe's other weights), and
    logs their names once. Parameters of other modules are left as
    upstream leaves them.

    Returns:
        bool: True if the method was wrapped by this call.
    """
    from mmaction.engine.optimizers import TSMOptimWrapperConstructor
    original = TSMOptimWrapperConstructor.add_params
    if getattr(original, '_mmrsa_all_params', False):
        return False

    @functools.wraps(original)
    def add_params(self, params, model, **kwargs):
        original(self, params, model, **kwargs)
        grouped = {id(param) for group in params for param in group['params']}
        left_out, names = [], []
        for module_name, module in model.named_modules():
            if not _is_mmrsa_module(module):
                continue
            for name, param in module.named_parameters(recurse=False):
                if param.requires_grad and id(param) not in grouped:
                    grouped.add(id(param))
                    left_out.append(param)
                    names.append(f'{module_name}.{name}'.lstrip('.'))
        if not left_out:
            return
        params.append({
            'params': left_out,
            'lr': self.base_lr,
            'weight_decay': self.base_wd
        })
        from mmengine.logging import print_log
        print_log(
            f'mmrsa: {len(names)} parameters of RSA layers that '
            'TSMOptimWrapperConstructor leaves out of its groups are '
            'trained with the base lr and weight decay: '
            f'{", ".join(names[:4])}' + (', ...' if len(names) > 4 else ''),
            logger='current',
            level=logging.INFO)

    add_params._mmrsa_all_params = True
    TSMOptimWrapperConstructor.add_params = add_params
    return True


def apply_compat_fixes() -> Dict[str, bool]:
    """Apply every fix of this module, in an order that works.

    Returns:
        dict[str, bool]: For each fix, whether it changed anything.
    """
    return {
        'numpy_aliases': patch_numpy_aliases(),
        'missing_drn': patch_missing_drn(),
        'cpu_distributed': patch_cpu_distributed(),
        'cpu_ddp': patch_cpu_ddp(),
        'bf16_head_loss': patch_bf16_head_loss(),
        'tsm_optim_params': patch_tsm_optim_params(),
    }
