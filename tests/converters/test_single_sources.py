# Copyright (c) mmrsa contributors. All rights reserved.
"""The converter and the kernel tool keep no copy of a job that has its one
place (STYLE habit 11).

- RSA math, the L2 normalisation included, lives in
  ``mmrsa/models/common``: the converter's oracle and the kernel pictures
  call :mod:`mmrsa.models.common.rsa_reference`.
- Reading a checkpoint is :mod:`mmrsa.fileio.checkpoint`'s job (no
  ``torch.load`` / ``pickle.load`` of their own).
- A config becomes a model through :mod:`mmrsa.apis.model` (no
  ``Config.fromfile``, ``MODELS.build`` or ``init_default_scope`` of their
  own).
"""
import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ('mmrsa/converters', 'mmrsa/visualization')
MODULES = sorted(
    str(path.relative_to(REPO_ROOT)) for package in PACKAGES
    for path in (REPO_ROOT / package).rglob('*.py'))

#: Names whose call would be a normalisation written again (``x.norm()``,
#: ``torch.sqrt(...)``, ``F.normalize``, ``l2_normalize``, ...).
NORMALISATION_CALLS = {
    'normalize', 'l2_normalize', '_l2_normalize', 'sqrt', 'rsqrt', 'norm',
    'vector_norm', 'matrix_norm'
}
#: ``owner.name`` calls that belong to the one loader / the one model path.
FORBIDDEN_CALLS = {
    ('torch', 'load'),
    ('serialization', 'load'),
    ('pickle', 'load'),
    ('pickle', 'loads'),
    ('Config', 'fromfile'),
    ('MODELS', 'build'),
}
FORBIDDEN_NAMES = {'init_default_scope', 'load_checkpoint'}


def _calls(tree: ast.AST):
    """``(owner, name)`` of every call: ``a.b.c(...)`` -> ``('b', 'c')``,
    ``f(...)`` -> ``(None, 'f')``."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = func.value
            owner = (
                owner.attr if isinstance(owner, ast.Attribute) else
                owner.id if isinstance(owner, ast.Name) else None)
            yield owner, func.attr, node.lineno
        elif isinstance(func, ast.Name):
            yield None, func.id, node.lineno


def violations(source: str, name: str = '<source>') -> list:
    """What ``source`` does that has its one place elsewhere."""
    tree = ast.parse(source, name)
    found = [
        f'line {node.lineno}: defines {node.name}' for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
            'l2' in node.name.lower() or 'normali' in node.name.lower())
    ]
    found += [
        f'line {line}: calls {owner + "." if owner else ""}{name}(...)'
        for owner, name, line in _calls(tree)
        if name in NORMALISATION_CALLS or (
            owner, name) in FORBIDDEN_CALLS or name in FORBIDDEN_NAMES
    ]
    return found


def test_the_packages_are_scanned():
    assert 'mmrsa/converters/official/oracle.py' in MODULES
    assert 'mmrsa/visualization/kernels.py' in MODULES


@pytest.mark.parametrize('module', MODULES)
def test_no_own_normalisation_loader_or_model_building(module):
    found = violations((REPO_ROOT / module).read_text(), module)
    assert not found, (f'{module} does what has its one place elsewhere '
                       f'(mmrsa.models.common.rsa_reference, '
                       f'mmrsa.fileio.checkpoint, mmrsa.apis.model): '
                       f'{found}')


def test_the_scan_finds_what_it_looks_for():
    """The check above catches the copies it is meant to catch (the
    converter's own L2 norm and loaders of before, among them)."""
    lines = [
        'def _l2(x, dim):',
        '    return x / (x.pow(2).sum(dim, keepdim=True) + 1e-6).sqrt()',
        'y = F.normalize(x, dim=1)',
        'y = x * torch.rsqrt((x * x).sum(1))',
        'ckpt = torch.load(path, weights_only=True)',
        'ckpt = pickle.loads(data)',
        'cfg = Config.fromfile(path)',
        'init_default_scope("mmaction")',
        'model = MODELS.build(cfg.model)',
    ]
    found = violations('\n'.join(lines))
    assert sorted({int(f.split(':')[0][len('line '):])
                   for f in found}) == list(range(1,
                                                  len(lines) + 1)), found
    assert not violations('y = F.batch_norm(x, mean, var)\n'
                          'z = write_atomic(path, save)')
