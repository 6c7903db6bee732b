# Copyright (c) mmrsa contributors. All rights reserved.
"""``import mmrsa`` only plugs in: it registers modules and applies the
listed stack fixes, and leaves MMEngine's and MMAction2's own functions in
place, so a config that does not opt into mmrsa's checks behaves exactly as
without the import. No file under tools/ or tests/ loads another by path."""
import ast
import json
import subprocess
import sys
from pathlib import Path

from run_helpers import REPO_ROOT, tool_env

#: Library functions that a plugin must not rebind.
UNTOUCHED = [
    ('mmengine.runner', 'Runner', 'build_model'),
    ('mmengine.runner.checkpoint', 'CheckpointLoader', 'load_checkpoint'),
    ('mmaction.datasets', 'RawframeDataset', 'load_data_list'),
    ('mmaction.datasets', 'VideoDataset', 'load_data_list'),
    ('mmaction.datasets', 'BaseActionDataset', 'prepare_data'),
]

#: What MMAction2 1.2.0 needs before ``import mmaction.models`` on any stack
#: (upstream open-mmlab/mmaction2#2714), written here without mmrsa so that
#: the "without the plugin" side imports nothing of it.
_DRN_PRELUDE = '''
import sys, types, torch
for name in ('mmaction.models.localizers.drn',
             'mmaction.models.localizers.drn.drn'):
    module = types.ModuleType(name)
    module.__path__ = []
    module.DRN = type('DRN', (torch.nn.Module, ), {})
    sys.modules[name] = module
'''

_IDENTITY = _DRN_PRELUDE + '''
import importlib, json, sys
spec = json.loads(sys.argv[1])
def grab():
    out = {}
    for module, cls, name in spec:
        owner = getattr(importlib.import_module(module), cls)
        value = getattr(owner, name)
        value = getattr(value, '__func__', value)
        out[f'{cls}.{name}'] = (value.__module__, value.__qualname__,
                                id(value))
    return out
before = grab()
assert 'mmrsa' not in sys.modules
import mmrsa  # noqa
after = grab()
print(json.dumps(dict(before=before, after=after)))
'''


def test_library_functions_are_the_libraries_own():
    """Identity check: the same function objects before and after."""
    result = subprocess.run(
        [sys.executable, '-c', _IDENTITY,
         json.dumps(UNTOUCHED)],
        capture_output=True,
        text=True,
        env=tool_env(),
        cwd=REPO_ROOT,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['before'] == report['after']
    for name, (module, _, _) in report['after'].items():
        assert module.startswith(('mmengine', 'mmaction')), (name, module)


def _tsm_run(tmp_path: Path, imports: list) -> dict:
    """Train a tiny TSM (MMAction2's own model) for one iteration and
    return its loss, weights checksum and the datasets/hooks it used."""
    config = tmp_path / f'tsm_{len(imports)}.py'
    config.write_text(f'''
custom_imports = dict(imports={imports!r}, allow_failed_imports=False)
''')
    code = _DRN_PRELUDE + f'''
import json, torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
cfg = Config.fromfile({str(config)!r})
assert ('mmrsa' in sys.modules) == {bool(imports)}
init_default_scope('mmaction')
from mmaction.registry import MODELS
torch.manual_seed(0)
model = MODELS.build(dict(
    type='Recognizer2D',
    backbone=dict(type='ResNetTSM', depth=18, num_segments=4,
                  pretrained=None, pretrained2d=False, norm_eval=False),
    cls_head=dict(type='TSMHead', num_classes=3, in_channels=512,
                  num_segments=4, average_clips='prob'),
    data_preprocessor=dict(type='ActionDataPreprocessor',
                           format_shape='NCHW')))
path = {str(tmp_path / 'tsm.pth')!r}
torch.save(dict(state_dict=model.state_dict()), path)
from mmengine.runner import load_checkpoint
load_checkpoint(model, path, map_location='cpu')
from mmaction.structures import ActionDataSample
inputs = [torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(i))
          for i in range(2)]
samples = [ActionDataSample().set_gt_label(i) for i in range(2)]
data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
losses = model(**data, mode='loss')
loss = sum(v for k, v in losses.items() if 'loss' in k)
loss.backward()
print(json.dumps(dict(loss=loss.item(),
                      grad=sum(p.grad.abs().sum().item()
                               for p in model.parameters()
                               if p.grad is not None))))
'''
    result = subprocess.run([sys.executable, '-c', code],
                            capture_output=True,
                            text=True,
                            env=tool_env(),
                            cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tsm_config_behaves_the_same_with_the_import(tmp_path):
    """A plain TSM model built, saved, loaded and trained one step: same
    loss and gradients with ``custom_imports=['mmrsa']`` as without."""
    without = _tsm_run(tmp_path, [])
    with_plugin = _tsm_run(tmp_path, ['mmrsa'])
    assert without == with_plugin


def _loads_by_path(path: Path) -> bool:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in (
                'spec_from_file_location', 'run_path', 'SourceFileLoader'):
            return True
    return False


def test_no_tool_or_test_loads_another_file_by_path():
    files = sorted((REPO_ROOT / 'tools').rglob('*.py')) + sorted(
        (REPO_ROOT / 'tests').rglob('*.py')) + sorted(
            (REPO_ROOT / 'demo').rglob('*.py'))
    # running one of MMAction2's packaged scripts is that tool's job
    allowed = {'tools/mmaction_tool.py'}
    offenders = [
        str(p.relative_to(REPO_ROOT)) for p in files
        if _loads_by_path(p) and str(p.relative_to(REPO_ROOT)) not in allowed
    ]
    assert offenders == []
