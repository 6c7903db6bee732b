# Copyright (c) mmrsa contributors. All rights reserved.
import os.path as osp
import re
from typing import List

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def readme() -> str:
    with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
        return f.read()


def get_version() -> str:
    """Read ``__version__`` from mmrsa/version.py without importing mmrsa."""
    with open(osp.join(HERE, 'mmrsa', 'version.py'), encoding='utf-8') as f:
        match = re.search(r"^__version__ = '([^']+)'", f.read(), re.M)
    if match is None:
        raise RuntimeError('__version__ not found in mmrsa/version.py')
    return match.group(1)


def parse_requirements(fname: str) -> List[str]:
    """Requirement lines of ``fname``, following ``-r`` includes.

    Comments (whole-line or trailing) and blank lines are dropped.
    """
    path = osp.join(HERE, fname)
    requirements = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            if line.startswith('-r '):
                included = osp.join(osp.dirname(fname), line[3:].strip())
                requirements.extend(parse_requirements(included))
            else:
                requirements.append(line)
    return requirements


setup(
    name='mmrsa',
    version=get_version(),
    description='Relational Self-Attention (RSA) and RSANet for MMAction2',
    long_description=readme(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    python_requires='>=3.9',
    install_requires=parse_requirements('requirements/runtime.txt'),
    extras_require={
        # mmcv-lite is opt-in: a full mmcv already installed must not be
        # overwritten by it.
        'lite': ['mmcv-lite==2.1.0'],
        'mim': parse_requirements('requirements/mminstall.txt'),
        'tests': parse_requirements('requirements/tests.txt'),
    },
    zip_safe=False,
)
