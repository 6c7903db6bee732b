# Copyright (c) mmrsa contributors. All rights reserved.
"""Packaging: what a wheel carries, what an installed wheel serves, and the
agreement of the requirement files.

The wheel is built with ``pip wheel --no-deps`` (no index, no build
isolation: nothing is downloaded) from a copy of the sources in a temporary
folder, so the checkout gets no ``build/`` or ``*.egg-info``. It is installed
with ``pip install --target`` into a folder outside the checkout; every
check of the installed package runs in a subprocess whose working directory
is outside the checkout and whose ``sys.path`` starts with that folder.
"""
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[1]
MIM = 'mmrsa/.mim/'
#: Root entries never copied for a build: environments, outputs, caches.
SKIP_AT_ROOT = {'.git', '.venv', 'build', 'dist', 'work_dirs', 'data'}
SKIP_ANYWHERE = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info',
                                       '.pytest_cache', '*.so')
TIMEOUT = 600


def _pip(*args: str, cwd: Path) -> None:
    env = dict(os.environ, PIP_NO_INPUT='1', PIP_DISABLE_PIP_VERSION_CHECK='1')
    subprocess.run([sys.executable, '-m', 'pip', *args, '--quiet'],
                   cwd=cwd,
                   env=env,
                   check=True,
                   timeout=TIMEOUT)


def _files(root: Path) -> set:
    """Relative paths of the files under ``root``, caches left out."""
    return {
        str(p.relative_to(root))
        for p in root.rglob('*')
        if p.is_file() and '__pycache__' not in p.parts and p.suffix not in (
            '.pyc', '.pyo')
    }


@pytest.fixture(scope='module')
def source(tmp_path_factory) -> Path:
    """A copy of the checkout, as a fresh clone would hold it."""
    src = tmp_path_factory.mktemp('src') / 'mmrsa'
    src.mkdir()
    for entry in REPO_ROOT.iterdir():
        if entry.name in SKIP_AT_ROOT or entry.name.endswith('.egg-info'):
            continue
        if entry.is_dir():
            shutil.copytree(entry, src / entry.name, ignore=SKIP_ANYWHERE)
        else:
            shutil.copy2(entry, src / entry.name)
    return src


@pytest.fixture(scope='module')
def wheel(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('wheel')
    _pip(
        'wheel',
        str(source),
        '--no-deps',
        '--no-build-isolation',
        '--no-index',
        '-w',
        str(out),
        cwd=out)
    wheels = list(out.glob('mmrsa-*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope='module')
def site(wheel, tmp_path_factory) -> Path:
    """The wheel installed into a folder outside the checkout."""
    target = tmp_path_factory.mktemp('site')
    assert REPO_ROOT not in target.parents
    _pip(
        'install',
        '--no-deps',
        '--no-index',
        '--target',
        str(target),
        str(wheel),
        cwd=target)
    return target


def _run_installed(site: Path, args, cwd: Path,
                   **kwargs) -> subprocess.CompletedProcess:
    """``python ARGS`` with ``site`` first on ``sys.path``, from ``cwd``."""
    env = dict(os.environ, PYTHONPATH=str(site))
    result = subprocess.run([sys.executable, *args],
                            cwd=cwd,
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=TIMEOUT,
                            **kwargs)
    assert result.returncode == 0, \
        result.stdout[-3000:] + result.stderr[-5000:]
    return result


# ---------------------------------------------------------------------- #
# the wheel
# ---------------------------------------------------------------------- #
def test_wheel_carries_configs_tools_and_model_index(wheel, source):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        model_index = zf.read(MIM + 'model-index.yml').decode()
    mim = {n[len(MIM):] for n in names if n.startswith(MIM)}
    expected = {'model-index.yml'}
    for folder in ('configs', 'tools'):
        expected |= {f'{folder}/{f}' for f in _files(source / folder)}
    assert mim == expected
    for needed in ('configs/recognition/rsanet/metafile.yml',
                   'configs/recognition/rsanet/rsanet_r50_16x1_ssv1.py',
                   'tools/train.py', 'tools/test.py'):
        assert needed in mim, needed
    assert model_index == (source / 'model-index.yml').read_text()
    assert yaml.safe_load(model_index) == {
        'Import': ['configs/recognition/rsanet/metafile.yml']
    }
    # the package itself, and nothing of tests/ or demo/
    modules = {n for n in names if n.endswith('.py') and not n.startswith(MIM)}
    assert modules == {
        f'mmrsa/{f}'
        for f in _files(source / 'mmrsa') if f.endswith('.py')
    }
    # the native CPU products: built where a compiler exists; their C source
    # goes into the sdist only
    native = [n for n in names if n.startswith('mmrsa/_rsa_products')]
    if shutil.which('cc') or shutil.which('gcc'):
        assert len(native) == 1 and native[0].endswith('.so'), native
    assert not [n for n in names if n.startswith('mmrsa/csrc/')]
    print(f'{len(mim)} files under {MIM}')


def test_build_goes_on_without_a_compiler(source, tmp_path):
    """The native RSA products are optional: with a compiler that fails
    (here CC=false), building says why and what to do, and succeeds."""
    env = dict(os.environ, CC='false', LDSHARED='false')
    result = subprocess.run([
        sys.executable, 'setup.py', 'build_ext', '--build-lib',
        str(tmp_path / 'lib'), '--build-temp',
        str(tmp_path / 'temp')
    ],
                            cwd=source,
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert 'the optional native RSA products were not built' in output
    assert 'Install a C compiler with OpenMP' in output
    assert not list((tmp_path / 'lib').rglob('_rsa_products*'))


def test_sdist_builds_the_same_wheel(wheel, source, tmp_path):
    """MANIFEST.in puts everything a wheel build reads into the sdist."""
    work = tmp_path / 'src'
    shutil.copytree(source, work)
    subprocess.run(
        [sys.executable, 'setup.py', '-q', 'sdist', '-d',
         str(tmp_path)],
        cwd=work,
        check=True,
        capture_output=True,
        timeout=TIMEOUT)
    sdist = next(tmp_path.glob('mmrsa-*.tar.gz'))
    with tarfile.open(sdist) as tf:
        members = {
            m.name.split('/', 1)[1]
            for m in tf.getmembers() if '/' in m.name
        }
    for needed in ('setup.py', 'README.md', 'CHANGELOG.md', 'LICENSE',
                   'model-index.yml', 'requirements/runtime.txt',
                   'requirements/tests.txt', 'requirements/constraints.txt',
                   'tools/train.py',
                   'configs/recognition/rsanet/metafile.yml'):
        assert needed in members, needed
    out = tmp_path / 'from_sdist'
    out.mkdir()
    _pip(
        'wheel',
        str(sdist),
        '--no-deps',
        '--no-build-isolation',
        '--no-index',
        '-w',
        str(out),
        cwd=out)
    with zipfile.ZipFile(next(out.glob('mmrsa-*.whl'))) as zf:
        from_sdist = sorted(zf.namelist())
    with zipfile.ZipFile(wheel) as zf:
        from_tree = sorted(zf.namelist())
    assert from_sdist == from_tree


# ---------------------------------------------------------------------- #
# the installed wheel
# ---------------------------------------------------------------------- #
BUILD_FROM_MIM = r'''
import json, os.path as osp, sys
from pathlib import Path

import mmrsa
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.utils import get_installed_path
from mmaction.registry import MODELS

configs = Path(osp.dirname(mmrsa.__file__), '.mim', 'configs')
types = {}
for path in sorted(configs.rglob('*.py')):
    if '_base_' in path.parts:
        continue
    cfg = Config.fromfile(str(path))
    types[str(path.relative_to(configs))] = cfg.model.backbone.type
init_default_scope('mmaction')
cfg = Config.fromfile(
    str(configs / 'recognition/rsanet/rsanet_r18_8x1_synthmotion.py'))
model = MODELS.build(cfg.model).eval()
with torch.no_grad():
    scores = model(torch.randn(1, 8, 3, 32, 32), mode='tensor', stage='head')
print(json.dumps(dict(file=mmrsa.__file__,
                      installed=get_installed_path('mmrsa'),
                      types=types, shape=list(scores.shape))))
'''


def test_installed_wheel_builds_its_configs(site, source, tmp_path):
    result = _run_installed(site, ['-c', BUILD_FROM_MIM], cwd=tmp_path)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # the installed copy, where MIM and MMEngine look for .mim
    assert Path(report['file']) == site / 'mmrsa' / '__init__.py'
    assert Path(report['installed']) == site / 'mmrsa'
    shipped = {
        str(p.relative_to(source / 'configs'))
        for p in (source / 'configs').rglob('*.py') if '_base_' not in p.parts
    }
    assert set(report['types']) == shipped
    rsanet = [k for k in shipped if Path(k).name.startswith('rsanet_')]
    assert rsanet and all(report['types'][k] == 'RSANet' for k in rsanet)
    assert report['shape'] == [1, 10]


def test_mim_search_lists_every_model(site, source, tmp_path):
    result = _run_installed(
        site, ['-m', 'mim', 'search', 'mmrsa'], cwd=tmp_path)
    listed = re.findall(r'^config id: (\S+)$', result.stdout, re.M)
    metafile = yaml.safe_load(
        (source / 'configs/recognition/rsanet/metafile.yml').read_text())
    assert sorted(listed) == sorted(m['Name'] for m in metafile['Models'])
    # the converted checkpoints say where their results come from
    rows = dict(
        re.findall(r'^config id: (\S+)\n(.*?)(?=^-{10,}|\Z)', result.stdout,
                   re.M | re.S))
    for name in ('rsanet_r50_16x1_ssv1', 'rsanet_r50_16x1_ssv2'):
        assert re.search(r'^results_from\s+official', rows[name], re.M), \
            rows[name]


@pytest.mark.slow
def test_mim_train_then_test(site, tmp_path):
    """``mim train/test mmrsa CONFIG`` find the config and the scripts in
    the installed package and run a few iterations on a generated set."""
    from mmrsa.datasets.synthmotion import generate_synthmotion
    data = tmp_path / 'data'
    generate_synthmotion(
        str(data), formats=('rawframes', ), num_train=4, num_val=4)
    opts = ['train_cfg.max_epochs=1', 'default_hooks.logger.interval=1']
    for loader, split in (('train', 'train'), ('val', 'val'), ('test', 'val')):
        opts += [
            f'{loader}_dataloader.dataset.ann_file='
            f'{data}/synthmotion_{split}_list_rawframes.txt',
            f'{loader}_dataloader.dataset.data_prefix.img={data}/rawframes',
            f'{loader}_dataloader.batch_size=4',
            f'{loader}_dataloader.num_workers=0',
            f'{loader}_dataloader.persistent_workers=False',
        ]
    config = 'rsanet_r18_8x1_synthmotion.py'  # found in .mim/configs
    work = tmp_path / 'work'
    train = _run_installed(
        site, [
            '-m', 'mim', 'train', 'mmrsa', config, '--work-dir',
            str(work), '--cfg-options', *opts
        ],
        cwd=tmp_path)
    shipped = site / 'mmrsa/.mim/configs/recognition/rsanet' / config
    assert f'will use {shipped}' in train.stdout
    assert f'{site}/mmrsa/.mim/tools/train.py' in train.stdout
    checkpoint = work / 'epoch_1.pth'
    assert checkpoint.is_file()

    dump = tmp_path / 'pred.pkl'
    test = _run_installed(
        site, [
            '-m', 'mim', 'test', 'mmrsa', config, '--checkpoint',
            str(checkpoint), '--work-dir',
            str(work), '--dump',
            str(dump), '--cfg-options', *opts
        ],
        cwd=tmp_path)
    assert f'{site}/mmrsa/.mim/tools/test.py' in test.stdout
    with open(dump, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 4
    assert predictions[0]['pred_score'].shape == (10, )


# ---------------------------------------------------------------------- #
# requirement files
# ---------------------------------------------------------------------- #
def _constraints() -> dict:
    pins = {}
    path = REPO_ROOT / 'requirements' / 'constraints.txt'
    for line in path.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec, ) = req.specifier
            assert spec.operator == '==', line
            pins[_canonical(req.name)] = spec.version
    return pins


def _canonical(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def _requires_dist(wheel: Path) -> list:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith('/METADATA'))
        text = zf.read(meta).decode()
    return [
        Requirement(line.split(':', 1)[1].strip())
        for line in text.splitlines() if line.startswith('Requires-Dist:')
    ]


def test_constraints_pin_every_requirement_within_its_range(wheel):
    """setup.py (runtime.txt, the tests and lite extras) gives ranges; the
    constraints file pins a version inside each range. The `mim` extra
    (full mmcv, read by `mim install`) is the alternative to `lite` and is
    not part of the tested environment."""
    pins = _constraints()
    checked = set()
    for req in _requires_dist(wheel):
        extras = [
            e for e in ('tests', 'lite', 'mim')
            if req.marker and req.marker.evaluate({'extra': e})
        ]
        if extras == ['mim']:
            continue
        name = _canonical(req.name)
        assert name in pins, f'{req} has no pin in constraints.txt'
        assert req.specifier.contains(pins[name], prereleases=True), \
            f'{name}=={pins[name]} is outside {req}'
        checked.add(name)
    assert {'torch', 'mmaction2', 'mmengine', 'mmcv-lite',
            'openmim'} <= checked
    # opencv-python and opencv-contrib-python share cv2/
    assert pins['opencv-python'] == pins['opencv-contrib-python']


#: Runtime requirements that no module of mmrsa imports, and why they stay.
NOT_IMPORTED = {
    'importlib-metadata': 'undeclared dependency of mmaction2 1.2.0',
    'setuptools': 'pkg_resources, read by mmaction:: configs and MIM',
}
#: Distribution name -> module name, where they differ.
MODULE_OF = {'mmaction2': 'mmaction', 'scikit-learn': 'sklearn'}


def test_every_runtime_requirement_is_used(wheel):
    imported = set()
    pattern = re.compile(r'^\s*(?:from|import)\s+(\w+)', re.M)
    for path in (REPO_ROOT / 'mmrsa').rglob('*.py'):
        imported |= set(pattern.findall(path.read_text()))
    runtime = [r for r in _requires_dist(wheel) if r.marker is None]
    assert runtime
    for req in runtime:
        name = _canonical(req.name)
        if name in NOT_IMPORTED:
            continue
        module = MODULE_OF.get(name, name.replace('-', '_'))
        assert module in imported, f'{req}: nothing in mmrsa/ imports {module}'
    assert 'einops' not in {_canonical(r.name) for r in runtime}


# ---------------------------------------------------------------------- #
# mmrsa:: config paths (mmrsa/registry.py) on the installed wheel
# ---------------------------------------------------------------------- #
MMRSA_SCOPE = r'''
import json, sys
from mmengine.config import Config
from mmengine.hub import get_config
name = 'mmrsa::recognition/rsanet/rsanet_r50_8x1_ssv1.py'
try:
    get_config(name)
    before = 'loaded'
except AssertionError as e:  # MMEngine's table does not list mmrsa
    before = str(e)
import mmrsa.registry  # noqa: F401  (adds mmrsa to that table)
cfg = get_config(name)
base = get_config('mmrsa::recognition/rsanet/_base_/default_runtime.py')
child = Config.fromfile(sys.argv[1])
from mmengine.dataset import Compose
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
init_default_scope(child.default_scope)
from mmaction.registry import HOOKS, MODELS
model = MODELS.build(child.model)
pipeline = Compose(child.test_pipeline)
print(json.dumps(dict(
    before=before, file=cfg.filename, backbone=cfg.model.backbone.type,
    base=base.filename, model=type(model.backbone).__name__,
    num_classes=model.cls_head.num_classes,
    scopes=sorted({t.get('_scope_') for t in child.test_pipeline}),
    pipeline=[type(t).__name__ for t in pipeline.transforms],
    hooks=[type(HOOKS.build(h)).__name__ for h in child.custom_hooks],
    optim=type(build_optim_wrapper(model, child.optim_wrapper)).__name__)))
'''


def test_mmrsa_scope_works_like_mmaction_on_the_wheel(site, tmp_path):
    """``mmengine.hub.get_config('mmrsa::...')`` and ``_base_ =
    'mmrsa::...'`` on the installed wheel, once ``mmrsa.registry`` is
    imported; what the child config inherits builds."""
    child = tmp_path / 'child.py'
    child.write_text(
        "_base_ = 'mmrsa::recognition/rsanet/rsanet_r18_8x1_synthmotion.py'\n"
        'model = dict(cls_head=dict(num_classes=7))\n')
    result = _run_installed(
        site, ['-c', MMRSA_SCOPE, str(child)], cwd=tmp_path)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['before'] == 'mmengine does not support to load mmrsa ' \
        'config.'
    mim = site / 'mmrsa' / '.mim' / 'configs' / 'recognition' / 'rsanet'
    assert Path(report['file']) == mim / 'rsanet_r50_8x1_ssv1.py'
    assert report['backbone'] == 'RSANet'
    assert Path(report['base']) == mim / '_base_' / 'default_runtime.py'
    assert report['model'] == 'RSANet' and report['num_classes'] == 7
    assert report['scopes'] == ['mmrsa']  # MMEngine's mark on inherited
    assert report['pipeline'][:3] == [
        'VideoOrFramesInit', 'SampleFrames', 'VideoOrFramesDecode'
    ]
    assert 'ClipCheckHook' in report['hooks']
    assert report['optim'] == 'OptimWrapper'
