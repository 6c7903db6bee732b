# Copyright (c) mmrsa contributors. All rights reserved.
"""One place per job: reading checkpoint/score files, writing files
atomically and reading configs each happen in exactly one module."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p for folder in ('mmrsa', 'tools', 'demo')
    for p in (ROOT / folder).rglob('*.py'))

# (what, the one module allowed to do it, how a call looks)
JOBS = [
    ('reading checkpoint and score files', 'mmrsa/fileio/checkpoint.py',
     {('torch', 'load'), ('pickle', 'load'), ('pickle', 'loads'),
      ('pickle', 'Unpickler'), ('pickle', '_Unpickler')}),
    ('writing files atomically', 'mmrsa/fileio/atomic.py', {('os', 'replace'),
                                                            ('os', 'rename'),
                                                            ('tempfile',
                                                             'mkstemp'),
                                                            ('os', 'fsync')}),
    ('reading configs', 'mmrsa/apis/model.py', {('Config', 'fromfile')}),
]
PRIVATE_LOADERS = {'_load_checkpoint', 'load_state_dict_from_url'}


def _calls(tree: ast.AST):
    """``(base, attribute)`` of every ``base.attribute`` reference."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(
                node.value, ast.Name):
            yield node.value.id, node.attr, node.lineno


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                yield node.module or '', alias.name, node.lineno


def test_sources_are_found():
    assert len(SOURCES) > 40
    assert ROOT / 'mmrsa/fileio/checkpoint.py' in SOURCES


@pytest.mark.parametrize('what, owner, calls', JOBS, ids=[j[0] for j in JOBS])
def test_each_job_has_one_module(what, owner, calls):
    offenders = []
    for path in SOURCES:
        rel = path.relative_to(ROOT).as_posix()
        if rel == owner:
            continue
        tree = ast.parse(path.read_text(encoding='utf-8'))
        for base, attr, line in _calls(tree):
            if (base, attr) in calls:
                offenders.append(f'{rel}:{line} {base}.{attr}')
        for module, name, line in _imports(tree):
            if (module.split('.')[-1], name) in calls:
                offenders.append(f'{rel}:{line} from {module} import {name}')
    assert not offenders, (f'{what} belongs to {owner} only; found '
                           f'elsewhere: {offenders}')


def test_no_private_mmengine_loader_outside_the_loader():
    offenders = []
    for path in SOURCES:
        rel = path.relative_to(ROOT).as_posix()
        if rel == 'mmrsa/fileio/checkpoint.py':
            continue
        tree = ast.parse(path.read_text(encoding='utf-8'))
        for module, name, line in _imports(tree):
            if name in PRIVATE_LOADERS:
                offenders.append(f'{rel}:{line} {module}.{name}')
        for base, attr, line in _calls(tree):
            if attr in PRIVATE_LOADERS:
                offenders.append(f'{rel}:{line} {base}.{attr}')
    assert not offenders, offenders


def test_the_checker_sees_a_violation(tmp_path):
    """The AST walk finds the calls it looks for (the test can fail)."""
    tree = ast.parse('import torch, os\nx = torch.load(p)\nos.replace(a, b)'
                     '\nfrom mmengine.runner.checkpoint import '
                     '_load_checkpoint\n')
    found = {(b, a) for b, a, _ in _calls(tree)}
    assert ('torch', 'load') in found and ('os', 'replace') in found
    assert any(n == '_load_checkpoint' for _, n, _ in _imports(tree))
