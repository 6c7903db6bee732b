# Copyright (c) mmrsa contributors. All rights reserved.
"""mmrsa/registry.py: the ``mmrsa`` scope MMEngine uses for ``mmrsa::``
configs. (``get_config('mmrsa::...')`` on an installed wheel:
tests/test_setup.py.)"""
import pytest
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import HOOKS as ROOT_HOOKS
from mmengine.registry import TRANSFORMS as ROOT_TRANSFORMS
from mmengine.registry import DefaultScope

import mmaction.registry as mmaction_registry
import mmrsa.registry as mmrsa_registry


def test_config_scope_is_registered_once():
    assert MODULE2PACKAGE['mmrsa'] == 'mmrsa'
    before = dict(MODULE2PACKAGE)
    mmrsa_registry.register_config_scope()
    assert MODULE2PACKAGE == before


@pytest.mark.parametrize('name', [
    n for n in mmrsa_registry.__all__
    if n not in ('SCOPE', 'register_config_scope')
])
def test_registries_are_children_of_mmactions(name):
    ours, theirs = getattr(mmrsa_registry,
                           name), getattr(mmaction_registry, name)
    assert ours.scope == 'mmrsa' and ours.parent is theirs
    assert ours.name == theirs.name
    assert theirs.children['mmrsa'] is ours
    assert len(ours) == 0  # mmrsa registers into MMAction2's registries


@pytest.mark.parametrize(
    'cfg,cls',
    [
        (dict(type='VideoOrFramesInit'), 'VideoOrFramesInit'),  # mmrsa's
        (dict(type='Resize', scale=(-1, 36)), 'Resize'),  # MMAction2's
        (dict(type='mmaction.CenterCrop', crop_size=32), 'CenterCrop'),
    ])
def test_scoped_transforms_build_from_the_root(cfg, cls):
    """What a pipeline inherited through ``mmrsa::`` holds: typed dicts with
    ``_scope_='mmrsa'``, built by MMEngine's ``Compose`` from the root."""
    with DefaultScope.overwrite_default_scope('mmaction'):
        built = ROOT_TRANSFORMS.build(dict(cfg, _scope_='mmrsa'))
    assert type(built).__name__ == cls


def test_scoped_hooks_build():
    with DefaultScope.overwrite_default_scope('mmaction'):
        hook = ROOT_HOOKS.build(
            dict(type='NonFiniteCheckHook', _scope_='mmrsa'))
        runtime = ROOT_HOOKS.build(dict(type='IterTimerHook', _scope_='mmrsa'))
    assert type(hook).__name__ == 'NonFiniteCheckHook'
    assert type(runtime).__name__ == 'IterTimerHook'  # MMEngine's


def test_an_unknown_type_still_fails():
    with DefaultScope.overwrite_default_scope('mmaction'):
        with pytest.raises(KeyError, match='NoSuchTransform'):
            ROOT_TRANSFORMS.build(
                dict(type='NoSuchTransform', _scope_='mmrsa'))
