# Copyright (c) mmrsa contributors. All rights reserved.
"""Helpers of the end-to-end reliability tests of tests/engine: real
``tools/train.py`` runs of the demo config on the tiny SynthMotion set
(the ``synth_dir`` and ``reference_run`` fixtures of tests/conftest.py)."""
import os
import shutil
import textwrap
from pathlib import Path
from typing import Dict, Optional

from run_helpers import DEMO_CONFIG, REPO_ROOT, SMALL_RUN, run_tool

TRAIN = REPO_ROOT / 'tools' / 'train.py'


def train(cwd: Path,
          work_dir: Path,
          *extra: str,
          config: str = DEMO_CONFIG,
          options=(),
          env: Optional[Dict[str, str]] = None):
    """``tools/train.py`` of ``config`` (seed 0, deterministic) on the
    small run, with ``options`` after the small-run overrides."""
    return run_tool([
        TRAIN, config, '--work-dir', work_dir, '--seed', '0',
        '--deterministic', *extra, '--cfg-options', *SMALL_RUN, *options
    ],
                    cwd=cwd,
                    env=env)


def helper_config(folder: Path, name: str, module_text: str,
                  hook: str) -> tuple:
    """A config inheriting the demo one, with the hook ``hook`` (a dict
    literal) of the module ``module_text`` added; returns the config and
    the environment that finds the module."""
    (folder / f'{name}.py').write_text(textwrap.dedent(module_text))
    config = folder / f'{name}_config.py'
    config.write_text(f'_base_ = {DEMO_CONFIG!r}\n'
                      f"custom_imports = dict(imports=['mmrsa', {name!r}], "
                      'allow_failed_imports=False)\n'
                      f'custom_hooks = _base_.custom_hooks + [{hook}]\n')
    env = dict(PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(folder)]))
    return str(config), env


def read_checkpoint(path: Path) -> dict:
    from mmrsa.fileio.checkpoint import safe_torch_load
    return safe_torch_load(str(path), map_location='cpu')


def copy_run(work_dir: Path, to: Path) -> Path:
    """A copy of a run's work dir whose ``last_checkpoint`` names the copy's
    files."""
    shutil.copytree(work_dir, to)
    last = to / 'last_checkpoint'
    if last.exists():
        last.write_text(last.read_text().replace(str(work_dir), str(to)))
    return to
