# Copyright (c) mmrsa contributors. All rights reserved.
"""Benchmark the RSA layer and RSANet-R50 against their convolutional peers.

The measurements are :mod:`mmrsa.analysis.benchmark`'s; this tool parses the
options, prints the tables and, for ``--compare-impl``, reads the layer from
git. Three sections, chosen with ``--sections`` (all three by default):

- ``layer``: one RSA layer against the 1x3x3 convolution it replaces, at the
  RSANet-R50 stage shapes (forward + backward, activation memory).
- ``model``: RSANet-R50 against MMAction2's TSN-R50 and TSM-R50, each a
  ``Recognizer2D`` with the same 174-class head and 8-frame clips: train
  step (forward with loss, backward), inference, activation memory, and
  RSANet-R50 with gradient checkpointing (``with_cp=True``) beside it.
- ``scaling``: one RSA layer against its context size M (the paper's Table 1
  claims cost linear in M) and against the number of positions.

Everything is measured side by side in one process: after warm-up, the
candidates run in alternating order for ``--repeats`` rounds and the median
time of each is reported, with ratios between candidates (ratios are far
less noisy than absolute times on a shared machine).

Memory is reported as the bytes of tensors autograd keeps for the backward
pass (the activation memory of training, counted with
``torch.autograd.graph.saved_tensors_hooks``); on CUDA also the peak
allocation (``torch.cuda.max_memory_allocated``).

Examples::

    python tools/analysis_tools/benchmark_rsa.py               # all sections
    python tools/analysis_tools/benchmark_rsa.py --quick       # fewer repeats
    python tools/analysis_tools/benchmark_rsa.py --sections model --batch 1 2
    python tools/analysis_tools/benchmark_rsa.py --sections scaling  # M, N
    python tools/analysis_tools/benchmark_rsa.py --reference  # + literal Eq. 8
    python tools/analysis_tools/benchmark_rsa.py --compare-impl HEAD  # A/B
    python tools/analysis_tools/benchmark_rsa.py --device cuda --amp \\
        --batch 8 --sections model layer                  # GPU figures
    python tools/analysis_tools/benchmark_rsa.py --sections layer \\
        --paths cpu_bmm plain    # the layer's implementations side by side

The layer section runs with torch alone: where MMEngine, MMCV or MMAction2
is missing (a GPU machine with torch only), mmrsa's packages are entered as
bare packages of this checkout, so that their torch-only modules import
without ``mmrsa/__init__.py`` (which registers into MMAction2); the model
and scaling sections need the OpenMMLab stack. On CUDA with Triton the layer
section also times the opt-in ``fused`` Triton kernel beside the automatic
choice, ``plain`` (grouped ``conv3d`` + ``bmm``).

``--compare-impl REV`` loads the layer (``rsa.py`` and, where they exist,
``rsa_ops.py``, ``rsa_triton.py``, ``rsa_native.py`` with its library built
by that revision's ``setup.py``) as committed at git revision ``REV`` and
times it beside the working tree's, with the same weights, in training
(``rev ms``) and in inference (``inf rev``), to measure a change of the
layer.
"""
import argparse
import contextlib
import functools
import importlib
import importlib.util
import io
import math
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import warnings
from pathlib import Path
from typing import (Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple)

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # mmrsa from this checkout
    sys.path.insert(0, str(REPO_ROOT))

#: The packages whose ``__init__`` needs the OpenMMLab stack.
PURE_PACKAGES = ('mmrsa', 'mmrsa.utils', 'mmrsa.models', 'mmrsa.models.common',
                 'mmrsa.analysis')

if any(
        importlib.util.find_spec(name) is None
        for name in ('mmengine', 'mmcv', 'mmaction')):
    for name in PURE_PACKAGES:
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(REPO_ROOT.joinpath(*name.split('.')))]
            sys.modules[name] = package

import torch  # noqa: E402


@contextlib.contextmanager
def stack_notices_ignored() -> Iterator[None]:
    """Warning filters in force for the block only: MMCV-lite's notice on
    import (nothing here needs the op) and MMEngine's ``pkg_resources``
    deprecation (when the model section builds)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            'ignore',
            message='Fail to import ``MultiScaleDeformableAttention``')
        warnings.filterwarnings(
            'ignore', message='pkg_resources is deprecated')
        yield


with stack_notices_ignored():  # mmrsa registers into MMAction2 on import
    from mmrsa.analysis import benchmark  # noqa: E402
    from mmrsa.models.common.rsa import PATHS  # noqa: E402

DESCRIPTION = ('Benchmark the RSA layer and RSANet-R50 against their '
               'convolutional peers')

Echo = Callable[[str], None]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument(
        '--sections',
        nargs='+',
        choices=benchmark.SECTIONS,
        default=list(benchmark.SECTIONS),
        help='what to measure (default: all, in this order)')
    scaling_shape = benchmark.SCALING_SHAPE
    parser.add_argument(
        '--shapes',
        nargs='+',
        default=None,
        metavar='C@S',
        help='layer shapes as channels@size, e.g. 64@56 128@28 (default: '
        'the four RSANet-R50 stages); the first one is also the shape of the '
        'scaling section (default there: '
        f'{scaling_shape[0]}@{scaling_shape[1]})')
    parser.add_argument(
        '--frames',
        type=int,
        default=8,
        help='T of the layer and scaling sections (the model '
        'section uses the 8 frames of its config)')
    parser.add_argument(
        '--batch',
        type=int,
        nargs='+',
        default=[1],
        help='batch sizes N (clips); the scaling section '
        'uses the first')
    parser.add_argument(
        '--input-size',
        type=int,
        default=224,
        metavar='PIXELS',
        help='frame size of the model section (smaller for quick checks)')
    parser.add_argument(
        '--repeats',
        type=int,
        default=5,
        help='alternating timed rounds (median reported)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument(
        '--pause',
        type=float,
        default=0.2,
        metavar='SECONDS',
        help='idle time before each timed call, so that one candidate does '
        'not run in the wake of another (on a busy machine a layer that '
        'runs thousands of tiny ops can slow the next one down for a while)')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='torch CPU threads (default: torch default)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='autocast (bf16 on CPU, fp16 on CUDA)')
    parser.add_argument(
        '--reference',
        action='store_true',
        help='also time the literal Eq. 8 implementation')
    parser.add_argument(
        '--compare-impl',
        metavar='REV',
        default=None,
        help='also time the RSA layer as committed at git revision REV '
        '(e.g. HEAD), with the same weights')
    parser.add_argument(
        '--paths',
        nargs='+',
        choices=PATHS,
        default=None,
        metavar='PATH',
        help='layer section: also time the RSA layer forced through these '
        f'implementations ({", ".join(PATHS)}; see '
        'mmrsa.models.common.rsa.select_path) beside its automatic choice '
        '(default: "fused", the opt-in Triton kernel, where it can run '
        '(CUDA with Triton); otherwise none)')
    parser.add_argument(
        '--malloc',
        choices=('keep', 'default'),
        default='keep',
        help='CPU: "keep" keeps freed memory for reuse, for the whole '
        'process (glibc mallopt, as tools/train.py does; see '
        'mmrsa.utils.allocator); "default" leaves glibc as it is, and every '
        'step page-faults fresh memory')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='1 warm-up round and 3 timed rounds')
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
    if args.repeats < 1:
        parser.error('--repeats must be >= 1')
    if args.pause < 0:
        parser.error('--pause must be >= 0')
    if args.input_size < 32:
        parser.error('--input-size must be >= 32 (ResNet-50 downsamples 32x)')
    if args.frames < 1 or min(args.batch) < 1:
        parser.error('--frames and --batch must be >= 1')
    try:
        torch.device(args.device)
    except RuntimeError:
        parser.error(f'--device takes a torch device (cpu, cuda, cuda:1), '
                     f'got {args.device!r}')
    args.sections = [
        name for name in benchmark.SECTIONS if name in args.sections
    ]
    shapes = []
    for item in args.shapes or [f'{c}@{s}' for c, s in benchmark.STAGE_SHAPES]:
        try:
            c, s = (int(v) for v in item.split('@'))
        except ValueError:
            parser.error(f'--shapes takes channels@size (e.g. 64@56), got '
                         f'{item!r}')
        shapes.append((c, s))
    args.scaling_shape = shapes[0] if args.shapes else scaling_shape
    args.shapes = shapes
    return args


def _git_show(rev: str, path: str) -> Optional[str]:
    """The text of ``path`` at git revision ``rev``, or None."""
    result = subprocess.run(['git', 'show', f'{rev}:{path}'],
                            capture_output=True,
                            text=True,
                            cwd=REPO_ROOT)
    return result.stdout if result.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def _committed_library(commit: str) -> Tuple[Optional[Path], str]:
    """The native library of ``commit`` (a full hash), built once per
    process by that commit's own ``setup.py`` (its flags) in a temporary
    checkout: its path, or None and why it was not built."""
    tree = Path(tempfile.mkdtemp(prefix='rsa_rev_tree_'))
    archive = subprocess.run(['git', 'archive', '--format=tar', commit],
                             capture_output=True,
                             cwd=REPO_ROOT)
    # the 'data' filter where this Python has it (3.9.17+, 3.11.4+)
    safe = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, **safe)
    built = subprocess.run(
        [sys.executable, 'setup.py', '-q', 'build_ext', '--inplace'],
        capture_output=True,
        text=True,
        cwd=tree)
    libraries = sorted((tree / 'mmrsa').glob('_rsa_products*'))
    if not libraries:  # setup.py warns and goes on without a compiler
        return None, (built.stdout + built.stderr).strip()[-300:]
    return libraries[0], ''


def load_committed_rsa(rev: str) -> type:
    """The ``RSA`` class of ``mmrsa/models/common`` at git revision ``rev``.

    ``rsa.py``, and ``rsa_ops.py``, ``rsa_triton.py`` and ``rsa_native.py``
    when the revision has them, are written to a temporary package laid out
    as ``mmrsa`` (``rsa_rev_*/models/common``, a new name per call) and
    imported from there. The revision's native library, where it has one, is
    built by that revision's ``setup.py`` (once per process and commit) and
    copied into the package; without a compiler that revision's layers run
    their PyTorch path, as an install would.
    """
    root = Path(tempfile.mkdtemp(prefix='rsa_rev_'))
    package = root / root.name  # a name of its own, e.g. rsa_rev_a1b2c3
    common = package / 'models' / 'common'
    common.mkdir(parents=True)
    for folder in (package, common.parent, common):
        (folder / '__init__.py').write_text('')
    for name in ('rsa.py', 'rsa_ops.py', 'rsa_triton.py', 'rsa_native.py'):
        text = _git_show(rev, f'mmrsa/models/common/{name}')
        if text is not None:
            (common / name).write_text(text)
        elif name == 'rsa.py':
            sys.exit(f'--compare-impl: cannot read mmrsa/models/common/rsa.py '
                     f'at {rev!r}')
    if _git_show(rev, 'mmrsa/csrc/rsa_products.c') is not None:
        commit = subprocess.run(['git', 'rev-parse', '--verify', rev],
                                capture_output=True,
                                text=True,
                                cwd=REPO_ROOT).stdout.strip()
        library, why = _committed_library(commit)
        if library is not None:
            shutil.copy(library, package / library.name)
        else:
            print(f'--compare-impl: the native library of {rev!r} was not '
                  f'built ({why}); its layers run their PyTorch path')
    sys.path.insert(0, str(root))
    return importlib.import_module(f'{root.name}.models.common.rsa').RSA


# ---------------------------------------------------------------------- #
# tables
# ---------------------------------------------------------------------- #
def ratio(a: Optional[float], b: Optional[float], width: int) -> str:
    """``a / b`` right-aligned in ``width``; ``-`` when either is missing."""
    if a is None or b is None:
        return f'{"-":>{width}}'
    return f'{a / b:{width}.2f}'


def table_lines(title: Sequence[str], header: str,
                rows: Sequence[str]) -> List[str]:
    """A section's lines: a blank line, title lines, header, rule, rows."""
    return ['', *title, header, '-' * len(header), *rows]


def layer_header(paths: Sequence[str],
                 *,
                 reference: bool,
                 compare: bool,
                 cuda: bool,
                 native: bool = False) -> str:
    """The header of the layer table (columns as :func:`layer_row`)."""
    header = (f'{"layer":>12} {"N":>2} | {"conv ms":>8} {"RSA ms":>8} '
              f'{"RSA/conv":>8}')
    if native:
        header += f' {"no native":>9} {"/conv":>5}'
    if reference:
        header += f' {"ref ms":>8} {"ref/RSA":>7}'
    if compare:
        header += f' {"rev ms":>8} {"rev/RSA":>7}'
    for path in paths:
        header += f' {path + " ms":>12} {"/RSA":>5}'
    header += f' | {"inf conv":>8} {"inf RSA":>8} {"/conv":>5}'
    if native:
        header += f' {"no native":>9} {"/conv":>5}'
    if compare:
        header += f' {"inf rev":>8} {"rev/RSA":>7}'
    header += f' | {"conv MB":>7} {"RSA MB":>7}'
    if reference:
        header += f' {"ref MB":>7}'
    if compare:
        header += f' {"rev MB":>7}'
    for path in paths:
        header += f' {path + " MB":>12}'
    if cuda:
        header += f' {"RSA peak MB":>11}'
    header += f' | {"RSA path":<10}'
    return header


def layer_title(paths: Sequence[str],
                *,
                frames: int,
                compare_rev: Optional[str] = None) -> List[str]:
    """The lines above the layer table."""
    title = []
    if compare_rev:
        title.append(f'rev = the RSA layer at git revision {compare_rev}')
    title.append(
        f'one layer vs the 1x3x3 convolution it replaces, forward + '
        f'backward, T={frames} (MB: saved for backward); RSA path = '
        f'its automatic implementation here' +
        (f', beside it forced through {", ".join(paths)}' if paths else ''))
    title.append('inf = inference under torch.no_grad; RSA: its automatic '
                 'path; no native: the same, with the per-position products '
                 'in PyTorch (where the native ones are built)')
    return title


def layer_row(result: Dict[str, Any],
              paths: Sequence[str],
              *,
              reference: bool,
              compare: bool,
              cuda: bool,
              native: bool = False) -> str:
    """One row of the layer table from a result of
    :func:`mmrsa.analysis.benchmark.iter_layer_section`."""
    times, mem = result['ms'], result['saved_mb']
    row = (f'{result["channels"]:>5}@{result["size"]:<3}'
           f'T{result["frames"]:<2} {result["batch"]:>2} | '
           f'{times["conv"]:8.1f} {times["rsa"]:8.1f} '
           f'{times["rsa"] / times["conv"]:8.2f}')
    if native:
        row += (f' {times["rsa_torch"]:9.1f} '
                f'{times["rsa_torch"] / times["conv"]:5.2f}')
    if reference:
        row += f' {times["ref"]:8.1f} {times["ref"] / times["rsa"]:7.2f}'
    if compare:
        row += f' {times["rev"]:8.1f} {times["rev"] / times["rsa"]:7.2f}'
    for path in paths:
        row += f' {times[path]:12.1f} {times[path] / times["rsa"]:5.2f}'
    infer = result['infer_ms']
    row += (f' | {infer["conv"]:8.1f} {infer["rsa"]:8.1f} '
            f'{infer["rsa"] / infer["conv"]:5.2f}')
    if native:
        row += (f' {infer["rsa_torch"]:9.1f} '
                f'{infer["rsa_torch"] / infer["conv"]:5.2f}')
    if compare:
        row += f' {infer["rev"]:8.1f} {infer["rev"] / infer["rsa"]:7.2f}'
    row += f' | {mem["conv"]:7.1f} {mem["rsa"]:7.1f}'
    if reference:
        row += f' {mem["ref"]:7.1f}'
    if compare:
        row += f' {mem["rev"]:7.1f}'
    for path in paths:
        row += f' {mem[path]:12.1f}'
    if cuda:
        row += f' {result["peak_mb"]:11.1f}'
    row += f' | {result["path"]:<10}'
    return row


def model_table(results: Sequence[Dict[str, Any]], *, input_size: int,
                cuda: bool) -> List[str]:
    """The model table and its per-batch summaries, from the rows of
    :func:`mmrsa.analysis.benchmark.model_section`."""
    first = results[0]
    title = [
        f'whole model: Recognizer2D (backbone + {first["num_classes"]}-class '
        f'head), one clip = {first["frames"]} frames x 3 x {input_size} x '
        f'{input_size}',
        'train = forward with loss + backward; infer = eval forward under '
        'no_grad; cp = with_cp=True (gradient checkpointing)',
        'act. MB = activation bytes autograd saves for backward in the '
        'train forward (weights and their autocast copies not counted)' +
        ('; peak MB = CUDA peak of a train step above what was allocated '
         'before it' if cuda else ''),
    ]
    if any(r['model'] == benchmark.TORCH_PRODUCTS for r in results):
        title.insert(
            2, f'{benchmark.TORCH_PRODUCTS!r} = RSANet-R50 with its '
            f'per-position products in PyTorch (the native ones switched '
            f'off)')
    header = (f'{"model":<14} {"N":>2} | {"train ms":>9} {"/TSN":>5} '
              f'{"/TSM":>5} | {"infer ms":>9} {"/TSN":>5} {"/TSM":>5} | '
              f'{"act. MB":>9} {"/TSN":>5} {"/TSM":>5}')
    if cuda:
        header += f' | {"peak MB":>8} {"/TSN":>5} {"/TSM":>5}'
    rows, summaries = [], []
    batches = list(dict.fromkeys(r['batch'] for r in results))
    for batch in batches:
        by_name = {r['model']: r for r in results if r['batch'] == batch}
        tsn, tsm = by_name['TSN-R50'], by_name['TSM-R50']
        for name, r in by_name.items():
            row = (f'{name:<14} {batch:>2} | {r["train_ms"]:9.1f} '
                   f'{ratio(r["train_ms"], tsn["train_ms"], 5)} '
                   f'{ratio(r["train_ms"], tsm["train_ms"], 5)} | ')
            row += (f'{"-":>9}'
                    if r['infer_ms'] is None else f'{r["infer_ms"]:9.1f}')
            row += (f' {ratio(r["infer_ms"], tsn["infer_ms"], 5)} '
                    f'{ratio(r["infer_ms"], tsm["infer_ms"], 5)} | '
                    f'{r["saved_mb"]:9.1f} '
                    f'{ratio(r["saved_mb"], tsn["saved_mb"], 5)} '
                    f'{ratio(r["saved_mb"], tsm["saved_mb"], 5)}')
            if cuda:
                row += (f' | {r["peak_mb"]:8.1f} '
                        f'{ratio(r["peak_mb"], tsn["peak_mb"], 5)} '
                        f'{ratio(r["peak_mb"], tsm["peak_mb"], 5)}')
            rows.append(row)
        plain, cp = by_name['RSANet-R50'], by_name['RSANet-R50 cp']
        summary = (f'N={batch}: with_cp=True takes x'
                   f'{cp["train_ms"] / plain["train_ms"]:.2f} the train '
                   f'time and x{cp["saved_mb"] / plain["saved_mb"]:.2f} '
                   f'the saved-for-backward activation bytes of RSANet-R50')
        if cuda:
            summary += (f' (CUDA peak x'
                        f'{cp["peak_mb"] / plain["peak_mb"]:.2f})')
        summaries.append(summary)
        torch_products = by_name.get(benchmark.TORCH_PRODUCTS)
        if torch_products is not None:
            summaries.append(
                f'N={batch}: with the native per-position products '
                f'RSANet-R50 takes x'
                f'{plain["train_ms"] / torch_products["train_ms"]:.2f} the '
                f'train time and x'
                f'{plain["infer_ms"] / torch_products["infer_ms"]:.2f} the '
                f'inference time it takes without them '
                f'({benchmark.TORCH_PRODUCTS!r})')
    return table_lines(title, header, rows + [''] + summaries)


def scaling_kernel_table(rows: Sequence[Dict[str, Any]], *, channels: int,
                         size: int, frames: int, batch: int) -> List[str]:
    """The context-size table, from the rows of
    :func:`mmrsa.analysis.benchmark.scaling_kernel_rows`."""
    base = rows[0]
    header = (f'{"M":>6} {"|M|":>4} | {"MFLOPs":>9} {"xFLOPs":>6} | '
              f'{"RSA ms":>8} {"xtime":>6} | {"time/FLOP":>9} | '
              f'{"saved MB":>8}')
    lines = []
    for r in rows:
        kernel = r['kernel']
        xflops = r['flops'] / base['flops']
        xtime = r['ms'] / base['ms']
        lines.append(f'{"x".join(map(str, kernel)):>6} '
                     f'{math.prod(kernel):>4} | {r["flops"] / 1e6:9.1f} '
                     f'{xflops:6.2f} | {r["ms"]:8.1f} {xtime:6.2f} | '
                     f'{xtime / xflops:9.2f} | {r["saved_mb"]:8.1f}')
    return table_lines([
        f'RSA layer vs context size M: C={channels}, {size}x{size}, '
        f'T={frames}, N={batch}, forward + backward',
        'MFLOPs: forward multiply-adds (mmrsa.models.utils.count_flops); '
        'x = relative to the first row; time/FLOP = xtime / xFLOPs'
    ], header, lines)


def scaling_position_table(rows: Sequence[Dict[str, Any]], *, channels: int,
                           frames: int, batch: int,
                           kernel: Sequence[int]) -> List[str]:
    """The positions table, from the rows of
    :func:`mmrsa.analysis.benchmark.scaling_position_rows`."""
    base = rows[0]
    header = (f'{"size":>7} {"THW":>7} | {"MFLOPs":>9} {"xFLOPs":>6} | '
              f'{"RSA ms":>8} {"xtime":>6} | {"us/pos":>7} {"xper-pos":>8} '
              f'| {"saved MB":>8}')
    per_pos_base = base['ms'] * 1e3 / (base['positions'] * batch)
    lines = []
    for r in rows:
        s = r['size']
        per_pos = r['ms'] * 1e3 / (r['positions'] * batch)
        lines.append(f'{f"{s}x{s}":>7} {r["positions"]:>7} | '
                     f'{r["flops"] / 1e6:9.1f} '
                     f'{r["flops"] / base["flops"]:6.2f} | '
                     f'{r["ms"]:8.1f} {r["ms"] / base["ms"]:6.2f} | '
                     f'{per_pos:7.2f} {per_pos / per_pos_base:8.2f} | '
                     f'{r["saved_mb"]:8.1f}')
    return table_lines([
        f'RSA layer vs positions: C={channels}, T={frames}, N={batch}, '
        f'M={"x".join(map(str, kernel))}, forward + backward',
        'us/pos: microseconds per position of one clip; x = relative to '
        'the first row'
    ], header, lines)


# ---------------------------------------------------------------------- #
# sections: measure (mmrsa.analysis.benchmark) and print
# ---------------------------------------------------------------------- #
def run_layer(bench: benchmark.Bench, args: argparse.Namespace,
              echo: Echo) -> List[Dict[str, Any]]:
    """The layer section, a row printed as soon as it is measured."""
    compare = (
        load_committed_rsa(args.compare_impl) if args.compare_impl else None)
    paths = benchmark.layer_paths(bench.device, args.paths)
    columns = dict(
        reference=args.reference,
        compare=compare is not None,
        cuda=bench.cuda,
        native=bench.native)
    for line in table_lines(
            layer_title(
                paths, frames=args.frames, compare_rev=args.compare_impl),
            layer_header(paths, **columns), []):
        echo(line)
    results = []
    for result in benchmark.iter_layer_section(
            bench,
            args.shapes,
            frames=args.frames,
            batches=args.batch,
            reference=args.reference,
            compare=compare,
            paths=paths):
        echo(layer_row(result, paths, **columns))
        results.append(result)
    return results


def run_model(bench: benchmark.Bench, args: argparse.Namespace,
              echo: Echo) -> List[Dict[str, Any]]:
    results = benchmark.model_section(
        bench, args.batch, input_size=args.input_size)
    for line in model_table(
            results, input_size=args.input_size, cuda=bench.cuda):
        echo(line)
    return results


def run_scaling(bench: benchmark.Bench, args: argparse.Namespace,
                echo: Echo) -> Dict[str, List[Dict[str, Any]]]:
    channels, size = args.scaling_shape
    batch, frames = args.batch[0], args.frames
    kernel_rows = benchmark.scaling_kernel_rows(
        bench, args.scaling_shape, frames=frames, batch=batch)
    for line in scaling_kernel_table(
            kernel_rows, channels=channels, size=size, frames=frames,
            batch=batch):
        echo(line)
    position_rows = benchmark.scaling_position_rows(
        bench, args.scaling_shape, frames=frames, batch=batch)
    for line in scaling_position_table(
            position_rows,
            channels=channels,
            frames=frames,
            batch=batch,
            kernel=benchmark.POSITIONS_KERNEL):
        echo(line)
    return dict(kernel=kernel_rows, positions=position_rows)


def main(argv=None, echo: Optional[Echo] = None) -> Dict[str, Any]:
    """Run the selected sections, print their tables and return their
    measurements.

    Args:
        argv (list[str], optional): Command-line arguments.
        echo (callable, optional): Receives each line of the tables.
            Defaults to ``print`` (flushed).
    """
    echo = echo or functools.partial(print, flush=True)
    args = parse_args(argv)
    needs_stack = [name for name in args.sections if name != 'layer']
    missing = benchmark.missing_stack()
    if missing and needs_stack:
        sys.exit(
            f'The {" and ".join(needs_stack)} section'
            f'{"s need" if len(needs_stack) > 1 else " needs"} '
            f'{", ".join(missing)}, not installed here (the layer '
            f'section runs with torch alone). Install them, or, on a machine '
            f'without an index, install the wheels carried from one (pip '
            f'download --no-deps ... -d wheelhouse there; pip install '
            f'--no-index --find-links wheelhouse ... here: see '
            f'docs/benchmarks.md, "Benchmarks on a GPU machine").')
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = benchmark.Bench(
        args.device,
        amp=args.amp,
        repeats=args.repeats,
        warmup=args.warmup,
        pause=args.pause)
    malloc = 'default'
    if not bench.cuda and args.malloc == 'keep':
        from mmrsa.utils.allocator import keep_freed_memory
        malloc = 'keep freed memory' if keep_freed_memory() else 'default'
    if bench.cuda and not torch.cuda.is_available():
        sys.exit('--device cuda was given but CUDA is not available here.')
    from mmrsa.models.common.rsa_triton import fused_available
    fused = fused_available(bench.device)
    for path in args.paths or ():
        if path.startswith('cpu') and bench.device.type != 'cpu':
            sys.exit(f'--paths {path} runs on the CPU only, not on '
                     f'{bench.device}.')
        if path == 'fused' and not fused:
            sys.exit('--paths fused needs Triton and a CUDA device (or '
                     'TRITON_INTERPRET=1 on the CPU).')

    echo(f'torch {torch.__version__}, device {bench.device}'
         f'{" (" + torch.cuda.get_device_name() + ")" if bench.cuda else ""}'
         f', threads {torch.get_num_threads()}, '
         f'AMP={"on (" + str(bench.amp_dtype) + ")" if args.amp else "off"}'
         f', median of {args.repeats} alternating rounds after '
         f'{args.warmup} warm-up, {args.pause:g} s pause before each call' +
         ('' if bench.cuda else f', malloc: {malloc}') +
         f', fused RSA kernel: {"yes" if fused else "no"}')
    sections = dict(layer=run_layer, model=run_model, scaling=run_scaling)
    with stack_notices_ignored():
        return {
            name: sections[name](bench, args, echo)
            for name in args.sections
        }


if __name__ == '__main__':
    main()
