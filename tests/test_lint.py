# Copyright (c) mmrsa contributors. All rights reserved.
"""Lint is part of CI: .ci/run lints before it tests, with OpenMMLab's
rules (setup.cfg), and those rules catch what they should."""
import configparser
import subprocess
import sys

from run_helpers import REPO_ROOT

PATHS = ('mmrsa', 'tools', 'tests', 'demo', 'configs')


def _commands(path):
    return [
        line.strip() for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith('#')
    ]


def test_ci_lints_before_it_tests():
    commands = _commands(REPO_ROOT / '.ci' / 'run')
    assert 'bash tools/run.sh lint' in commands
    assert commands.index('bash tools/run.sh lint') < commands.index(
        'bash tools/run.sh test')
    run_sh = (REPO_ROOT / 'tools' / 'run.sh').read_text()
    for tool in ('flake8', 'isort --check-only', 'yapf --diff'):
        assert f'-m {tool}' in run_sh
    for path in PATHS:
        assert path in run_sh


def test_rules_are_openmmlabs():
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / 'setup.cfg')
    assert cfg['flake8']['max-line-length'] == '79'
    assert cfg['isort']['line_length'] == '79'
    assert 'mmrsa' in cfg['isort']['known_first_party']
    assert cfg['yapf']['based_on_style'] == 'pep8'
    hooks = (REPO_ROOT / '.pre-commit-config.yaml').read_text()
    for hook in ('id: flake8', 'id: isort', 'id: yapf'):
        assert hook in hooks


def _run(tool, *args, cwd):
    return subprocess.run([sys.executable, '-m', tool, *args],
                          cwd=cwd,
                          capture_output=True,
                          text=True,
                          timeout=120)


def test_the_rules_catch_bad_code(tmp_path):
    (tmp_path / 'setup.cfg').write_text((REPO_ROOT / 'setup.cfg').read_text())
    bad = tmp_path / 'bad.py'
    bad.write_text('import sys\nimport os\nx = {  "a":1 }\n' + 'y = ' +
                   repr('a' * 90) + '\n')
    flake8 = _run('flake8', 'bad.py', cwd=tmp_path)
    assert flake8.returncode != 0
    for code in ('F401', 'E501', 'E201'):
        assert code in flake8.stdout
    assert _run(
        'isort', '--check-only', 'bad.py', cwd=tmp_path).returncode != 0
    assert _run('yapf', '--diff', 'bad.py', cwd=tmp_path).returncode != 0
    good = tmp_path / 'good.py'
    good.write_text('import os\nimport sys\n\nx = {\'a\': 1}\n'
                    'print(os.sep, sys.argv, x)\n')
    assert _run('flake8', 'good.py', cwd=tmp_path).returncode == 0
    assert _run(
        'isort', '--check-only', 'good.py', cwd=tmp_path).returncode == 0
    assert _run('yapf', '--diff', 'good.py', cwd=tmp_path).returncode == 0
