# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/analysis_tools/benchmark_rsa.py: every section end to end, tiny;
the tool's tables, and the measuring module it calls
(:mod:`mmrsa.analysis.benchmark`), which returns numbers and prints none.

Times are not asserted (they are noise at these sizes); the tables' rows,
the ratio columns, the FLOP counts and the memory measures are.
"""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from run_helpers import import_tool, run_tool, tool_env

from mmrsa.analysis import benchmark
from mmrsa.models.common import rsa_native

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL_DIR = REPO_ROOT / 'tools' / 'analysis_tools'
# one timed round, no warm-up, no pause: the tables, not the numbers
FAST = ['--repeats', '1', '--warmup', '0', '--pause', '0']

tool = import_tool('tools/analysis_tools/benchmark_rsa.py')


def _main(argv):
    """The benchmark with its tables on standard output, as the script
    runs it."""
    return tool.main(argv, echo=print)


@pytest.fixture(autouse=True)
def keep_threads():
    """The tool sets torch's thread count when asked; restore it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _row(out: str, start: str) -> list:
    """The whitespace-split fields of the first table row starting with
    ``start``, separators dropped."""
    for line in out.splitlines():
        if line.startswith(start):
            return [f for f in line[len(start):].split() if f != '|']
    raise AssertionError(f'no row {start!r} in:\n{out}')


# --------------------------------------------------------------------- #
# options
# --------------------------------------------------------------------- #
def test_sections_default_to_all_in_order():
    assert tool.parse_args([]).sections == ['layer', 'model', 'scaling']
    args = tool.parse_args(['--sections', 'scaling', 'layer'])
    assert args.sections == ['layer', 'scaling']


def test_scaling_shape_is_the_first_given_shape():
    assert tool.parse_args([]).scaling_shape == (128, 28)
    assert tool.parse_args([]).shapes == list(benchmark.STAGE_SHAPES)
    args = tool.parse_args(['--shapes', '32@14', '64@7'])
    assert args.scaling_shape == (32, 14)
    assert args.shapes == [(32, 14), (64, 7)]


def test_quick_sets_few_rounds():
    args = tool.parse_args(['--quick'])
    assert (args.repeats, args.warmup) == (3, 1)


@pytest.mark.parametrize('argv', [
    ['--sections', 'kernel'],
    ['--shapes', '64x56'],
    ['--input-size', '16'],
    ['--repeats', '0'],
    ['--batch', '0'],
])
def test_bad_options_exit(argv, capsys):
    with pytest.raises(SystemExit):
        tool.parse_args(argv)
    assert 'error' in capsys.readouterr().err


def test_saved_bytes_can_leave_out_the_weights():
    conv = torch.nn.Conv2d(4, 4, 3, bias=False)
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    both = benchmark.saved_bytes(lambda: conv(x).sum())
    acts = benchmark.saved_bytes(
        lambda: conv(x).sum(), exclude=conv.parameters())
    assert both - acts == conv.weight.numel() * 4
    assert acts == x.numel() * 4


def test_saved_bytes_leaves_out_autocast_copies_of_the_weights():
    conv = torch.nn.Conv2d(4, 4, 3, bias=False)
    x = torch.randn(1, 4, 8, 8, requires_grad=True)

    def step():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            return conv(x).float().sum()

    both = benchmark.saved_bytes(step)
    acts = benchmark.saved_bytes(step, exclude=conv.parameters())
    # conv saves bf16 copies of its input and of its weight
    assert both == (x.numel() + conv.weight.numel()) * 2
    assert acts == x.numel() * 2


# --------------------------------------------------------------------- #
# sections
# --------------------------------------------------------------------- #
def test_layer_section_alone(capsys):
    results = _main(FAST + [
        '--sections', 'layer', '--shapes', '16@8', '--frames', '4',
        '--threads', '1'
    ])
    out = capsys.readouterr().out
    assert set(results) == {'layer'}
    assert 'whole model' not in out and 'context size M' not in out
    (result, ) = results['layer']
    assert (result['batch'], result['channels'], result['size']) == (1, 16, 8)
    # the train step also without the native products, where they run
    native = {'rsa_torch'} if rsa_native.native_available() else set()
    assert set(result['ms']) == {'conv', 'rsa'} | native
    assert set(result['saved_mb']) == {'conv', 'rsa'}
    fields = _row(out, '   16@8  T4 ')
    assert fields[0] == '1'  # N
    assert float(fields[3]) == pytest.approx(
        result['ms']['rsa'] / result['ms']['conv'], abs=0.01)  # RSA/conv
    if native:
        assert float(fields[4]) == pytest.approx(
            result['ms']['rsa_torch'], abs=0.06)
        assert float(fields[5]) == pytest.approx(
            result['ms']['rsa_torch'] / result['ms']['conv'], abs=0.01)
    # the 1x3x3 convolution keeps its input and its weights for backward
    conv_bytes = 16 * 4 * 8 * 8 * 4 + 16 * 16 * 3 * 3 * 4
    assert result['saved_mb']['conv'] == conv_bytes / 2**20


def test_model_section(capsys):
    results = _main(FAST + [
        '--sections', 'model', '--input-size', '32', '--batch', '1',
        '--threads', '1'
    ])
    out = capsys.readouterr().out
    assert set(results) == {'model'}
    assert 'one clip = 8 frames x 3 x 32 x 32' in out
    assert '174-class head' in out
    # MMEngine's initialisation log is silenced: the output is the table
    assert 'RSANet:' not in out and 'init' not in out.lower()

    names = ['RSANet-R50', 'RSANet-R50 cp', 'TSN-R50', 'TSM-R50']
    native = rsa_native.native_available()
    if native:  # RSANet-R50 also with its products in PyTorch
        names.append(benchmark.TORCH_PRODUCTS)
    rows = {r['model']: r for r in results['model']}
    assert list(rows) == names
    assert all(r['batch'] == 1 for r in rows.values())
    assert all(r['train_ms'] > 0 and r['saved_mb'] > 0 for r in rows.values())
    assert rows['RSANet-R50 cp']['infer_ms'] is None
    # gradient checkpointing keeps far fewer activations for backward
    assert rows['RSANet-R50 cp']['saved_mb'] < (0.5 *
                                                rows['RSANet-R50']['saved_mb'])

    for name in names:
        fields = _row(out, f'{name:<14}  1 ')
        train, train_tsn, train_tsm = map(float, fields[0:3])
        assert train_tsn == pytest.approx(
            rows[name]['train_ms'] / rows['TSN-R50']['train_ms'], abs=0.01)
        assert train_tsm == pytest.approx(
            rows[name]['train_ms'] / rows['TSM-R50']['train_ms'], abs=0.01)
        saved, saved_tsn, saved_tsm = map(float, fields[6:9])
        assert saved == pytest.approx(rows[name]['saved_mb'], abs=0.1)
        assert saved_tsn == pytest.approx(
            rows[name]['saved_mb'] / rows['TSN-R50']['saved_mb'], abs=0.01)
    assert _row(out, f'{"TSN-R50":<14}  1 ')[1] == '1.00'  # TSN / TSN
    assert _row(out, f'{"TSM-R50":<14}  1 ')[2] == '1.00'  # TSM / TSM
    assert _row(out, f'{"RSANet-R50 cp":<14}  1 ')[3:6] == ['-'] * 3
    assert re.search(
        r'N=1: with_cp=True takes x\d+\.\d\d the train time '
        r'and x0\.\d\d the saved-for-backward activation bytes', out)
    if native:
        torch_products = rows[benchmark.TORCH_PRODUCTS]
        assert torch_products['infer_ms'] > 0
        assert f'{benchmark.TORCH_PRODUCTS!r} = RSANet-R50 with' in out
        speed = (rows['RSANet-R50']['train_ms'] / torch_products['train_ms'])
        assert (f'N=1: with the native per-position products RSANet-R50 '
                f'takes x{speed:.2f} the train time') in out


def test_model_section_amp(capsys):
    results = _main(FAST + [
        '--sections', 'model', '--input-size', '32', '--amp', '--threads', '1'
    ])
    out = capsys.readouterr().out
    assert 'AMP=on (torch.bfloat16)' in out
    rows = {r['model']: r for r in results['model']}
    # the RSA transform runs in float32 under CPU autocast: with the
    # native products where they are built, also timed without them
    native = rsa_native.native_available()
    assert len(rows) == 4 + native
    assert ('RSANet no nat.' in rows) == native
    assert all(r['train_ms'] > 0 and r['saved_mb'] > 0 for r in rows.values())
    assert rows['RSANet-R50 cp']['saved_mb'] < rows['RSANet-R50']['saved_mb']


def test_model_section_shares_weights_between_cp_twins():
    models, num_frames, num_classes = benchmark.build_recognizers()
    assert (num_frames, num_classes) == (8, 174)
    assert set(models) == {'RSANet-R50', 'RSANet-R50 cp', 'TSN-R50', 'TSM-R50'}
    plain, cp = models['RSANet-R50'], models['RSANet-R50 cp']
    assert cp.backbone.with_cp and not plain.backbone.with_cp
    for (name, a), b in zip(plain.state_dict().items(),
                            cp.state_dict().values()):
        assert torch.equal(a, b), name
    assert type(models['TSN-R50'].backbone).__name__ == 'ResNet'
    assert type(models['TSM-R50'].backbone).__name__ == 'ResNetTSM'
    assert models['TSM-R50'].backbone.num_segments == 8
    assert all(m.training for m in models.values())  # as MODELS.build
    heads = {type(m.cls_head).__name__ for m in models.values()}
    assert heads == {'TSMHead'}
    assert all(m.cls_head.num_classes == 174 for m in models.values())


def test_scaling_section(capsys):
    results = _main(FAST + [
        '--sections', 'scaling', '--shapes', '16@8', '--frames', '4',
        '--threads', '1'
    ])
    out = capsys.readouterr().out
    assert set(results) == {'scaling'}
    assert 'RSA layer vs context size M: C=16, 8x8, T=4, N=1' in out
    assert 'RSA layer vs positions: C=16, T=4, N=1, M=5x7x7' in out

    kernels = results['scaling']['kernel']
    assert [r['kernel'] for r in kernels] == list(benchmark.SCALING_KERNELS)
    # RSA's FLOPs are affine in M (the M-sized convolutions H1, H2, G plus
    # M-independent products): equal increments per added context position
    sizes = [r['kernel'][0] * r['kernel'][1] * r['kernel'][2] for r in kernels]
    flops = [r['flops'] for r in kernels]
    slopes = [(f1 - f0) / (m1 - m0)
              for f0, f1, m0, m1 in zip(flops, flops[1:], sizes, sizes[1:])]
    assert max(slopes) == pytest.approx(min(slopes), rel=1e-6)
    assert slopes[0] > 0
    for kernel, m in zip(benchmark.SCALING_KERNELS, sizes):
        fields = _row(out, f'{"x".join(map(str, kernel)):>6} ')
        assert int(fields[0]) == m
    first = _row(out, ' 3x3x3 ')
    assert first[2] == '1.00' and first[4] == '1.00' and first[5] == '1.00'
    last = _row(out, ' 5x9x9 ')
    assert float(last[2]) == pytest.approx(flops[-1] / flops[0], abs=0.01)

    positions = results['scaling']['positions']
    assert [r['size'] for r in positions] == [4, 8, 16]
    assert [r['positions'] for r in positions] == [64, 256, 1024]
    # every op of the layer is per position: FLOPs exactly proportional
    assert [r['flops'] / positions[0]['flops']
            for r in positions] == [1, 4, 16]
    assert _row(out, '  16x16 ')[0] == '1024'
    assert _row(out, '  16x16 ')[2] == '16.00'


# --------------------------------------------------------------------- #
# the GPU command and the RSA paths, in their CPU variant
# --------------------------------------------------------------------- #
GPU_COMMAND = [
    '--device', 'cuda', '--amp', '--batch', '8', '--sections', 'model', 'layer'
]


def test_gpu_command_arguments():
    args = tool.parse_args(GPU_COMMAND)
    assert args.sections == ['layer', 'model']  # run in this order
    assert (args.device, args.amp, args.batch) == ('cuda', True, [8])
    assert args.paths is None  # chosen per device: plain beside fused
    cpu = tool.parse_args(GPU_COMMAND[2:] + ['--device', 'cpu'])
    assert (cpu.device, cpu.amp, cpu.batch) == ('cpu', True, [8])


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is here')
def test_gpu_command_without_cuda_says_so():
    with pytest.raises(SystemExit, match='CUDA is not available'):
        _main(GPU_COMMAND)


@pytest.mark.parametrize('argv,message', [
    (['--device', 'gpu0'], '--device takes a torch device'),
    (['--paths', 'bmm'], 'invalid choice'),
])
def test_bad_device_or_path_exit(argv, message, capsys):
    with pytest.raises(SystemExit):
        tool.parse_args(argv)
    assert message in capsys.readouterr().err


def test_fused_path_needs_triton_on_cuda(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    with pytest.raises(SystemExit, match='--paths fused needs Triton'):
        _main(FAST + ['--sections', 'layer', '--paths', 'fused'])


def test_layer_section_amp_with_forced_paths(capsys):
    """The CPU variant of the GPU command's layer section: autocast,
    batch > 1, and the layer forced through the other paths beside its
    automatic one."""
    results = _main(FAST + [
        '--sections', 'layer', '--device', 'cpu', '--amp', '--batch', '2',
        '--shapes', '16@8', '256@4', '--frames', '2', '--threads', '1',
        '--paths', 'cpu_bmm', 'plain'
    ])
    out = capsys.readouterr().out
    assert 'AMP=on (torch.bfloat16)' in out
    assert 'forced through cpu_bmm, plain' in out
    small, large = results['layer']
    # Cq = 2 and 32 under bf16 autocast: the layer's float32 transform, as
    # it runs under the bench's autocast (the native products, or without
    # them the loops for Cq = 2 and bmm for Cq = 32), also without native
    # products where they are built
    native = rsa_native.native_available()
    want = ('cpu_native', ) * 2 if native else ('cpu_loops', 'cpu_bmm')
    assert (small['path'], large['path']) == want
    for result in results['layer']:
        assert result['batch'] == 2
        assert set(result['ms']) == {'conv', 'rsa', 'cpu_bmm', 'plain'
                                     } | ({'rsa_torch'} if native else set())
        assert all(ms > 0 for ms in result['ms'].values())
        assert set(result['saved_mb']) == {'conv', 'rsa', 'cpu_bmm', 'plain'}
    fields = _row(out, '   16@8  T2 ')
    assert fields[0] == '2'  # N
    ms = small['ms']
    i = 6 if native else 4  # after 'no native /conv' where it is shown
    if native:
        assert float(fields[4]) == pytest.approx(ms['rsa_torch'], abs=0.06)
    assert float(fields[i]) == pytest.approx(ms['cpu_bmm'], abs=0.06)
    assert float(fields[i + 1]) == pytest.approx(
        ms['cpu_bmm'] / ms['rsa'], abs=0.01)
    assert float(fields[i + 3]) == pytest.approx(
        ms['plain'] / ms['rsa'], abs=0.01)
    assert fields[-1] == small['path']
    assert _row(out, '  256@4  T2 ')[-1] == large['path']


def _torch_alone(tmp_path: Path) -> dict:
    """Environment of a Python that finds no MMEngine, MMCV or MMAction2
    (as on a GPU machine with torch alone)."""
    (tmp_path / 'sitecustomize.py').write_text(
        'import sys\n'
        'for name in ("mmengine", "mmcv", "mmaction"):\n'
        '    sys.modules[name] = None  # import fails, find_spec is None\n')
    return dict(PYTHONPATH=str(tmp_path))


def test_layer_section_runs_with_torch_alone(tmp_path):
    script = REPO_ROOT / 'tools' / 'analysis_tools' / 'benchmark_rsa.py'
    result = run_tool([
        script, *FAST, '--sections', 'layer', '--device', 'cpu', '--amp',
        '--batch', '2', '--shapes', '16@8', '--frames', '2', '--threads', '1',
        '--paths', 'plain', '--reference'
    ],
                      cwd=tmp_path,
                      env=_torch_alone(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'AMP=on (torch.bfloat16)' in result.stdout
    fields = _row(result.stdout, '   16@8  T2 ')
    # autocast: the layer's float32 transform
    auto = 'cpu_native' if rsa_native.native_available() else 'cpu_loops'
    assert fields[0] == '2' and fields[-1] == auto

    # the model section needs the stack, and says how to bring it
    result = run_tool([script, *GPU_COMMAND[2:], '--device', 'cpu'],
                      cwd=tmp_path,
                      env=_torch_alone(tmp_path))
    assert result.returncode == 1
    assert ('The model section needs mmengine, mmcv, mmaction'
            in result.stderr)
    assert '--find-links wheelhouse' in result.stderr
    assert 'one layer vs' not in result.stdout  # stopped before any work


# --------------------------------------------------------------------- #
# the package measures and returns; the tool parses, formats and prints
# --------------------------------------------------------------------- #
def test_importing_the_package_module_changes_no_warning_filters():
    code = ('import json, sys, warnings\n'
            '# what the module imports, and the filters their imports set\n'
            'import mmrsa, mmrsa.analysis, mmrsa.models.common.rsa\n'
            'import mmrsa.utils.memory\n'
            'fresh = "mmrsa.analysis.benchmark" not in sys.modules\n'
            'before = list(warnings.filters)\n'
            'import mmrsa.analysis.benchmark\n'
            'print(json.dumps([fresh, before == list(warnings.filters)]))\n')
    result = subprocess.run([sys.executable, '-c', code],
                            capture_output=True,
                            text=True,
                            env=tool_env(),
                            cwd=REPO_ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh, unchanged = json.loads(result.stdout.strip().splitlines()[-1])
    assert fresh, 'imported before the check: nothing was measured'
    assert unchanged


def test_the_package_module_parses_runs_git_and_prints_nothing():
    tree = ast.parse(Path(benchmark.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split('.')[0])
    assert not imported & {'argparse', 'subprocess'}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not names & {
        'argparse', 'subprocess', 'print', 'exit', 'filterwarnings',
        'simplefilter', 'system', 'popen'
    }
    strings = [
        n.value for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]
    assert not [s for s in strings if s == 'git' or s.startswith('git ')]


def test_ratio():
    assert tool.ratio(1.0, 4.0, 5) == ' 0.25'
    assert tool.ratio(None, 4.0, 5) == tool.ratio(1.0, None, 5) == '    -'


def test_layer_table_formats_a_measured_result():
    bench = benchmark.Bench('cpu', repeats=1, warmup=0)
    (result, ) = benchmark.layer_section(
        bench, [(16, 8)], frames=2, batches=[3])
    assert (result['batch'], result['channels'], result['size'],
            result['frames']) == (3, 16, 8, 2)
    assert set(result['ms']) == {'conv', 'rsa', 'rsa_torch'}
    assert set(result['saved_mb']) == {'conv', 'rsa'}
    assert result['peak_mb'] is None  # CUDA only
    # inference of both, and of RSA without the native products (built by
    # the install)
    assert set(result['infer_ms']) == {'conv', 'rsa', 'rsa_torch'}
    assert all(ms > 0 for ms in result['infer_ms'].values())
    columns = dict(reference=False, compare=False, cuda=True)
    header = tool.layer_header([], **columns)
    row = tool.layer_row(dict(result, peak_mb=12.34), [], **columns)  # CUDA
    assert 'RSA peak MB' in header and 'no native' not in header
    assert len(row) == len(header)
    fields = _row(row, '   16@8  T2 ')
    assert fields[0] == '3'  # N
    assert fields[-2:] == ['12.3', result['path']]
    infer = result['infer_ms']
    assert fields[4:7] == [
        f'{infer["conv"]:.1f}', f'{infer["rsa"]:.1f}',
        f'{infer["rsa"] / infer["conv"]:.2f}'
    ]
    columns = dict(reference=False, compare=False, cuda=False, native=True)
    header = tool.layer_header([], **columns)
    row = tool.layer_row(result, [], **columns)
    assert header.split('|')[1].split()[-4:] == [
        'RSA/conv', 'no', 'native', '/conv'
    ]
    assert header.split('|')[2].split() == [
        'inf', 'conv', 'inf', 'RSA', '/conv', 'no', 'native', '/conv'
    ]
    assert len(row) == len(header)
    ms = result['ms']
    assert _row(row, "   16@8  T2 ")[4:6] == [
        f'{ms["rsa_torch"]:.1f}', f'{ms["rsa_torch"] / ms["conv"]:.2f}'
    ]
    assert _row(row, "   16@8  T2 ")[9:11] == [
        f'{infer["rsa_torch"]:.1f}',
        f'{infer["rsa_torch"] / infer["conv"]:.2f}'
    ]
    # beside another RSA class (--compare-impl): its inference too
    from mmrsa.models.common import RSA
    (result, ) = benchmark.layer_section(
        bench, [(16, 8)], frames=2, batches=[1], compare=RSA)
    assert set(result['infer_ms']) == {'conv', 'rsa', 'rev', 'rsa_torch'}
    columns = dict(reference=False, compare=True, cuda=False, native=True)
    header = tool.layer_header([], **columns)
    row = tool.layer_row(result, [], **columns)
    assert header.split('|')[2].split() == [
        'inf', 'conv', 'inf', 'RSA', '/conv', 'no', 'native', '/conv', 'inf',
        'rev', 'rev/RSA'
    ]
    assert len(row) == len(header)
    infer = result['infer_ms']
    assert _row(row, "   16@8  T2 ")[13:15] == [
        f'{infer["rev"]:.1f}', f'{infer["rev"] / infer["rsa"]:.2f}'
    ]
    title = tool.layer_title(['plain'], frames=2, compare_rev='HEAD~1')
    assert title[0] == 'rev = the RSA layer at git revision HEAD~1'
    assert title[1].endswith(', beside it forced through plain')


def test_compare_impl_loads_the_committed_layer_and_library():
    """--compare-impl: the layer at a git revision, its native library
    built from that revision's source where a compiler exists, computes
    what the working tree's layer computes with the same weights; each call
    loads its own copy."""
    from mmrsa.models.common import RSA
    committed = tool.load_committed_rsa('HEAD')
    assert committed is not tool.load_committed_rsa('HEAD')
    native = sys.modules[committed.__module__.replace('.rsa', '.rsa_native')]
    assert native.native_available() == rsa_native.native_available(), (
        native.native_status())
    torch.manual_seed(0)
    layer = RSA(64).eval()
    old = committed(64).eval()
    old.load_state_dict(layer.state_dict())
    x = torch.randn(1, 64, 3, 6, 6)
    with torch.no_grad():
        want, got = layer(x), old(x)
    assert ((got - want).abs().max() / want.abs().max()).item() <= 1e-5
    with pytest.raises(SystemExit, match='cannot read'):
        tool.load_committed_rsa('no-such-revision')


def test_model_table_with_cuda_peaks():
    rows = [
        dict(
            model=name,
            batch=2,
            frames=8,
            num_classes=174,
            train_ms=train,
            infer_ms=infer,
            saved_mb=saved,
            peak_mb=peak) for name, train, infer, saved, peak in [
                ('RSANet-R50', 20., 10., 8., 40.),
                ('RSANet-R50 cp', 30., None, 2., 20.),
                ('TSN-R50', 10., 5., 4., 20.),
                ('TSM-R50', 10., 5., 4., 20.),
            ]
    ]
    lines = tool.model_table(rows, input_size=64, cuda=True)
    out = '\n'.join(lines)
    assert lines[0] == ''
    assert lines[1].endswith('174-class head), one clip = 8 frames x 3 x '
                             '64 x 64')
    assert 'peak MB = CUDA peak of a train step' in lines[3]
    assert _row(out, f'{"RSANet-R50":<14}  2 ') == [
        '20.0', '2.00', '2.00', '10.0', '2.00', '2.00', '8.0', '2.00', '2.00',
        '40.0', '2.00', '2.00'
    ]
    assert _row(out, f'{"RSANet-R50 cp":<14}  2 ')[3:6] == ['-'] * 3
    assert lines[-1] == (
        'N=2: with_cp=True takes x1.50 the train time and x0.25 the '
        'saved-for-backward activation bytes of RSANet-R50 (CUDA peak '
        'x0.50)')
