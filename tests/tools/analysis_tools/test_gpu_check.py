# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/analysis_tools/gpu_check.py, the parts that run without CUDA.

Its measurements need a GPU; here, in subprocesses (CUDA hidden): it refuses
cleanly without CUDA, parses its options, lays out the seven RSANet-R50
layers as the package does, loads the layer without MMEngine/MMCV/MMAction2,
and its accuracy and timing sections run end to end on tiny CPU shapes
(``plain`` path).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

from mmrsa.analysis.benchmark import STAGE_SHAPES
from mmrsa.models.backbones.rsanet import PAPER_RSA_BLOCKS

REPO_ROOT = Path(__file__).resolve().parents[3]
TOOL = REPO_ROOT / 'tools' / 'analysis_tools' / 'gpu_check.py'
STACK = ('mmengine', 'mmcv', 'mmaction', 'mmrsa')

#: Loads the tool as a module (its ``main`` does not run) and prints, as
#: JSON, what the test checks.
PURE_PARTS = f'''
import importlib.util, json, sys
import torch
torch.set_num_threads(1)
spec = importlib.util.spec_from_file_location('gpu_check', {str(TOOL)!r})
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)
mods = tool.load_layer_modules()
tool.load_atomic()
loaded = [name for name in {STACK!r} if name in sys.modules]
quick = tool.parse_args(['--quick', '--out', 'x.json'])
full = tool.parse_args([])
lines = []
shapes = [(16, 5, ['a', 'b'])]
accuracy = tool.accuracy_section(mods, shapes, lines.append, device='cpu',
                                 frames=2, dtypes=('float32',),
                                 paths=('plain',))
layers = tool.timing_section(mods, shapes, lines.append, repeats=1, warmup=0,
                             clips=1, frames=2, device='cpu',
                             dtypes=('float32',), paths=('plain',),
                             sync=lambda: None, measure_peak=False)
summary = list(tool.summary(dict(accuracy=accuracy, layers=layers)))
tool.missing_stack = lambda: ['mmaction']
model = tool.model_section(lines.append, repeats=1, warmup=0, device='cpu')
print(json.dumps(dict(
    loaded=loaded, table=tool.layer_table(),
    shapes=tool.distinct_shapes(tool.layer_table()),
    quick=[quick.warmup, quick.repeats, quick.out, quick.force],
    full=[full.warmup, full.repeats, full.out],
    accuracy=accuracy, layers=layers, summary=summary, model=model,
    lines=lines)))
'''


def run(*args: str, code: str = None) -> subprocess.CompletedProcess:
    command = [sys.executable] + (['-c', code] if code else [str(TOOL)])
    return subprocess.run(
        command + list(args),
        cwd=REPO_ROOT,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=''),
        capture_output=True,
        text=True,
        timeout=600)


def test_refuses_without_cuda(tmp_path):
    out = tmp_path / 'results.json'
    result = run('--quick', '--out', str(out))
    assert result.returncode == 2, result.stderr
    assert 'no CUDA device' in result.stderr
    assert 'measured nothing' in result.stderr
    assert result.stdout == '' and not out.exists()


def test_options():
    result = run('--help')
    assert result.returncode == 0
    for option in ('--quick', '--out', '--force'):
        assert option in result.stdout
    result = run('--repeats', '3')
    assert result.returncode == 2
    assert 'unrecognized arguments: --repeats' in result.stderr


def test_pure_parts_without_the_openmmlab_stack():
    result = run(code=PURE_PARTS)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    # the layer and the file writer load from their files, alone
    assert got['loaded'] == []
    assert got['quick'] == [1, 3, 'x.json', False]
    assert got['full'] == [2, 10, None]
    # the seven RSA layers of RSANet-R50 at 224^2, as the package has them
    names = [
        f'layer{stage + 1}.{block}'
        for stage, blocks in enumerate(PAPER_RSA_BLOCKS) for block in blocks
    ]
    assert [row['name'] for row in got['table']] == names
    assert [[c, s] for c, s, _ in got['shapes']
            ] == [list(shape) for shape in STAGE_SHAPES]
    assert [len(n) for _, _, n in got['shapes']] == [1, 2, 3, 1]
    # the sections ran on the CPU: plain float32 against float64
    literal, plain = got['accuracy']
    assert literal['dtype'] == 'float64' and literal['literal_rel'] < 1e-12
    assert plain['path'] == 'plain' and plain['dtype'] == 'float32'
    assert plain['out_rel'] < 1e-5 and plain['grad_rel'] < 1e-5
    shape_row, total = got['layers']
    assert shape_row['layers'] == ['a', 'b'] and not shape_row['errors']
    assert total['total'] and total['layers'] == 2
    assert total['ms']['plain'] == 2 * shape_row['ms']['plain']
    assert got['summary'][0].startswith('float32   worst relative error: '
                                        'plain ')
    # the model part says why it did not run
    assert 'skipped' in got['model']
    assert any(
        line.startswith('skipped: MMAction2 is not importable here')
        for line in got['lines'])
