# Copyright (c) mmrsa contributors. All rights reserved.
import os
import os.path as osp
import re
import shutil
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from typing import List

HERE = osp.dirname(osp.abspath(__file__))

#: What MIM (``mim search/train/test``) and an installed package read from
#: ``mmrsa/.mim``: the same three entries MMAction2 ships there.
MIM_FILES = ('configs', 'tools', 'model-index.yml')


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


def add_mim_extension(package_dir: str) -> List[str]:
    """Copy configs, tools and the root model-index.yml into
    ``<package_dir>/.mim``, where MIM and ``mmengine`` look for them.

    MMAction2's ``setup.py`` does the same by copying into its source tree
    (or symlinking, for ``setup.py develop``). Here the copy goes into the
    build directory only, so the checkout stays clean and a wheel never picks
    up a stale copy: whatever ``configs/`` and ``tools/`` hold at build time
    is what the wheel holds. Compiled Python files are left out.

    Args:
        package_dir (str): The built ``mmrsa`` package folder.

    Returns:
        list[str]: The files written, for ``build_py.get_outputs``.
    """
    mim_dir = osp.join(package_dir, '.mim')
    if osp.isdir(mim_dir):
        shutil.rmtree(mim_dir)
    os.makedirs(mim_dir)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.pyo')
    for name in MIM_FILES:
        src = osp.join(HERE, name)
        dst = osp.join(mim_dir, name)
        if osp.isdir(src):
            shutil.copytree(src, dst, ignore=ignore)
        elif osp.isfile(src):
            shutil.copy2(src, dst)
        else:
            raise FileNotFoundError(
                f'{src} is missing: a wheel without it would not work with '
                'MIM. Build from a full checkout or sdist.')
    return [
        osp.join(root, f) for root, _, files in os.walk(mim_dir) for f in files
    ]


class BuildPyWithMim(build_py):
    """``build_py`` that also adds ``mmrsa/.mim`` (see
    :func:`add_mim_extension`). Editable installs import the checkout itself
    and get nothing copied."""

    def run(self) -> None:
        super().run()
        if getattr(self, 'editable_mode', False):
            self._mim_outputs = []
            return
        self._mim_outputs = add_mim_extension(
            osp.join(self.build_lib, 'mmrsa'))

    def get_outputs(self, include_bytecode: bool = True) -> List[str]:
        return (super().get_outputs(include_bytecode) +
                getattr(self, '_mim_outputs', []))


class BuildNativeOptional(build_ext):
    """``build_ext`` for the optional native CPU products
    (``mmrsa/csrc/rsa_products.c``).

    The library is plain C (OpenMP, no Python or torch API), loaded with
    ``ctypes`` by :mod:`mmrsa.models.common.rsa_native`; where it cannot be
    built (no C compiler, another platform) the build says so and goes on,
    and the RSA layers run their pure-PyTorch path.
    """

    def get_export_symbols(self, ext: Extension) -> List[str]:
        # a C library, not a Python module: nothing named PyInit_* to export
        return []

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:  # compiler missing or failing
            print(f'warning: the optional native RSA products were not '
                  f'built ({error}); RSA runs its pure-PyTorch path. '
                  f'Install a C compiler with OpenMP (gcc) and reinstall '
                  f'to build them.')


def native_extensions() -> List[Extension]:
    """The native CPU products, on Linux and macOS with GCC-style flags."""
    if os.name != 'posix' or os.environ.get('MMRSA_NATIVE', '1') == '0':
        return []
    return [
        Extension(
            'mmrsa._rsa_products',
            sources=[
                'mmrsa/csrc/rsa_products.c', 'mmrsa/csrc/channel_conv.c'
            ],
            extra_compile_args=['-O3', '-fopenmp', '-std=gnu11'],
            extra_link_args=['-fopenmp'],
            libraries=['m'],
            optional=True)
    ]


setup(
    name='mmrsa',
    version=get_version(),
    description='Relational Self-Attention (RSA) and RSANet for MMAction2',
    long_description=readme(),
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(
        exclude=('tests', 'tests.*', 'configs', 'tools', 'demo')),
    python_requires='>=3.9',
    # ranges: what the code needs; the tested pins are in
    # requirements/constraints.txt (`pip install -c ...`, as tools/run.sh does)
    install_requires=parse_requirements('requirements/runtime.txt'),
    extras_require={
        # mmcv-lite is opt-in: a full mmcv already installed must not be
        # overwritten by it.
        'lite': ['mmcv-lite>=2.0.0,<2.2.0'],
        'mim': parse_requirements('requirements/mminstall.txt'),
        'tests': parse_requirements('requirements/tests.txt'),
    },
    ext_modules=native_extensions(),
    # the C source is built, not shipped (MANIFEST.in puts it in the sdist)
    exclude_package_data={'mmrsa': ['csrc/*']},
    cmdclass={
        'build_py': BuildPyWithMim,
        'build_ext': BuildNativeOptional
    },
    zip_safe=False,
)
