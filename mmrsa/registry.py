# Copyright (c) mmrsa contributors. All rights reserved.
"""The ``mmrsa`` scope: ``mmrsa::`` config paths and their registries.

MMEngine reads ``PACKAGE::PATH`` (``mmengine.hub.get_config``,
``_base_ = 'PACKAGE::...'`` in a config) only for the packages named in
``mmengine.config.utils.MODULE2PACKAGE`` (module name -> pip package name),
a table that lists the OpenMMLab projects and is meant to be extended.
:func:`register_config_scope` adds ``mmrsa -> mmrsa`` to it; then, for an
installed wheel (which carries ``mmrsa/.mim/configs`` and
``mmrsa/.mim/model-index.yml``), both work as they do for ``mmaction::``::

    import mmrsa.registry  # or anything that imports it
    from mmengine.hub import get_config
    cfg = get_config('mmrsa::recognition/rsanet/rsanet_r50_8x1_ssv1.py')

MMEngine marks every typed dict inherited through ``mmrsa::`` with
``_scope_='mmrsa'`` and builds it from the registry of that scope, importing
``mmrsa.registry`` to find it. The registries below are that scope: children
of MMAction2's, empty themselves (mmrsa registers its modules into
MMAction2's registries), so a type is found in MMAction2's registry or
MMEngine's above it, exactly as under ``mmaction``.

An editable install has no ``mmrsa/.mim`` (the wheel build copies it), so
``mmrsa::`` needs a wheel install, as MIM does.
"""
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import Registry

from mmaction import registry as mmaction_registry

__all__ = [
    'SCOPE', 'register_config_scope', 'RUNNERS', 'RUNNER_CONSTRUCTORS',
    'LOOPS', 'HOOKS', 'LOG_PROCESSORS', 'OPTIMIZERS', 'OPTIM_WRAPPERS',
    'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS', 'DATASETS',
    'DATA_SAMPLERS', 'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS',
    'WEIGHT_INITIALIZERS', 'TASK_UTILS', 'METRICS', 'EVALUATOR', 'VISUALIZERS',
    'VISBACKENDS', 'INFERENCERS', 'FUNCTION'
]

#: the scope name: the module name of ``mmrsa::`` and of ``_scope_``
SCOPE = 'mmrsa'
#: what a registry of the scope imports before its first look-up
_LOCATIONS = ['mmrsa']


def register_config_scope() -> None:
    """Let MMEngine resolve ``mmrsa::`` config paths (idempotent)."""
    MODULE2PACKAGE.setdefault(SCOPE, 'mmrsa')


def _child(parent: Registry) -> Registry:
    return Registry(
        parent.name, parent=parent, scope=SCOPE, locations=_LOCATIONS)


RUNNERS = _child(mmaction_registry.RUNNERS)
RUNNER_CONSTRUCTORS = _child(mmaction_registry.RUNNER_CONSTRUCTORS)
LOOPS = _child(mmaction_registry.LOOPS)
HOOKS = _child(mmaction_registry.HOOKS)
LOG_PROCESSORS = _child(mmaction_registry.LOG_PROCESSORS)
OPTIMIZERS = _child(mmaction_registry.OPTIMIZERS)
OPTIM_WRAPPERS = _child(mmaction_registry.OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child(
    mmaction_registry.OPTIM_WRAPPER_CONSTRUCTORS)
PARAM_SCHEDULERS = _child(mmaction_registry.PARAM_SCHEDULERS)
DATASETS = _child(mmaction_registry.DATASETS)
DATA_SAMPLERS = _child(mmaction_registry.DATA_SAMPLERS)
TRANSFORMS = _child(mmaction_registry.TRANSFORMS)
MODELS = _child(mmaction_registry.MODELS)
MODEL_WRAPPERS = _child(mmaction_registry.MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = _child(mmaction_registry.WEIGHT_INITIALIZERS)
TASK_UTILS = _child(mmaction_registry.TASK_UTILS)
METRICS = _child(mmaction_registry.METRICS)
EVALUATOR = _child(mmaction_registry.EVALUATOR)
VISUALIZERS = _child(mmaction_registry.VISUALIZERS)
VISBACKENDS = _child(mmaction_registry.VISBACKENDS)
INFERENCERS = _child(mmaction_registry.INFERENCERS)
FUNCTION = _child(mmaction_registry.FUNCTION)

register_config_scope()
