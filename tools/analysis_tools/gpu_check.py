# Copyright (c) mmrsa contributors. All rights reserved.
"""Check the RSA layer's CUDA implementations on a GPU, in one run.

The layer's CUDA default is ``plain`` (grouped ``conv3d`` + ``bmm``); the
fused Triton kernel (``fused``) is opt-in until a GPU measurement shows it
correct and faster (see :func:`mmrsa.models.common.rsa.select_path`). This
script is that measurement. On one GPU, in a few minutes, it prints:

1. accuracy: ``plain`` and ``fused`` in float32 (TF32 off), float16 and
   bfloat16 autocast against a float64 reference (the ``plain`` path in
   float64 on the GPU, itself checked against the literal Eq. 8) at the
   four RSANet-R50 stage shapes: max abs and relative errors of the output
   and of the input and parameter gradients;
2. layer times: forward + backward of ``plain`` and ``fused`` at the seven
   RSA layers of RSANet-R50 (8 clips x 8 frames of 224 x 224: 64 x 56^2,
   2 x 128 x 28^2, 3 x 256 x 14^2, 512 x 7^2), float32 and float16 /
   bfloat16 autocast, with the peak memory of one step and the total over
   the seven layers;
3. model: the train step (forward with loss + backward) of RSANet-R50
   (``plain`` and ``fused``) and TSM-R50 at 8 clips x 8 frames x 224^2
   under float16 AMP, time and peak memory; only where MMAction2 imports
   (else one line says it was skipped).

It needs torch (and Triton for ``fused``) only: the layer modules
(``mmrsa/models/common/rsa*.py``, which import only torch) are loaded from
their files as a private package, without ``mmrsa/__init__.py`` (which
registers into MMAction2). MMEngine, MMCV and MMAction2 are imported by the
model part only, where installed.

Examples::

    python tools/analysis_tools/gpu_check.py
    python tools/analysis_tools/gpu_check.py --quick --out gpu_check.json

Exit status: 0 when every case ran, 1 when one failed (its error is printed
and recorded), 2 without CUDA or for bad options. Cases that fail are
reported and the others still run; a kernel that corrupts the CUDA context
makes every later case fail, so read the first error.
"""
import argparse
import copy
import importlib
import importlib.util
import json
import math
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Private names under which the torch-only modules of this checkout are
#: loaded from their files (their packages' ``__init__`` import MMAction2).
LAYER_PACKAGE = '_mmrsa_gpu_check_layer'
FILEIO_PACKAGE = '_mmrsa_gpu_check_fileio'
UTILS_PACKAGE = '_mmrsa_gpu_check_utils'

#: The RSA blocks of RSANet-R50 per stage (``PAPER_RSA_BLOCKS`` of
#: ``mmrsa/models/backbones/rsanet.py``), the width of each stage's 3x3
#: convolution, and the stride of the stem + stage 1 (the map of stage ``s``
#: has ``input_size / (4 * 2**s)`` pixels a side).
RSANET_R50_BLOCKS = ((2, ), (1, 3), (1, 3, 5), (1, ))
STAGE_CHANNELS = (64, 128, 256, 512)
STEM_STRIDE = 4

#: The clips of RSANet-R50 as trained (``rsanet_r50_8x1_ssv1.py``).
FRAMES = 8
CLIPS = 8
INPUT_SIZE = 224

DTYPES = {
    'float32': torch.float32,
    'float16': torch.float16,
    'bfloat16': torch.bfloat16
}
PATHS = ('plain', 'fused')

Emit = Callable[[str], None]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Accuracy and speed of the RSA layer\'s CUDA paths '
        '(plain, fused Triton kernel) and of RSANet-R50 on one GPU.')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='1 warm-up and 3 timed rounds (default: 2 and '
        '10)')
    parser.add_argument(
        '--out',
        metavar='FILE',
        default=None,
        help='also write the results as JSON (rewritten '
        'after every section)')
    parser.add_argument(
        '--force', action='store_true', help='replace an existing --out FILE')
    args = parser.parse_args(argv)
    args.warmup, args.repeats = (1, 3) if args.quick else (2, 10)
    return args


# ---------------------------------------------------------------------- #
# what is measured
# ---------------------------------------------------------------------- #
def layer_table(input_size: int = INPUT_SIZE) -> List[Dict[str, Any]]:
    """The seven RSA layers of RSANet-R50: ``name`` (as
    ``RSANet.rsa_block_names``), ``channels`` and ``size`` (a side of the
    square map). All run at stride 1 (none is the first block of its
    stage)."""
    rows = []
    for stage, blocks in enumerate(RSANET_R50_BLOCKS):
        size = input_size // (STEM_STRIDE * 2**stage)
        for block in blocks:
            rows.append(
                dict(
                    name=f'layer{stage + 1}.{block}',
                    channels=STAGE_CHANNELS[stage],
                    size=size))
    return rows


def distinct_shapes(
        table: List[Dict[str, Any]]) -> List[Tuple[int, int, List[str]]]:
    """``(channels, size, layer names)`` per distinct shape of ``table``,
    in order."""
    shapes: Dict[Tuple[int, int], List[str]] = {}
    for row in table:
        shapes.setdefault((row['channels'], row['size']),
                          []).append(row['name'])
    return [(c, s, names) for (c, s), names in shapes.items()]


# ---------------------------------------------------------------------- #
# loading the torch-only modules of this checkout
# ---------------------------------------------------------------------- #
def _private_package(name: str, folder: Path) -> None:
    """Enter ``folder`` as an empty package ``name``: its modules import
    with their relative imports, its ``__init__`` is not run."""
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package


def load_layer_modules() -> types.SimpleNamespace:
    """``rsa``, ``rsa_triton`` and ``rsa_reference`` (None where it does not
    import) of ``mmrsa/models/common``, loaded from their files."""
    _private_package(LAYER_PACKAGE, REPO_ROOT / 'mmrsa' / 'models' / 'common')
    rsa = importlib.import_module(f'{LAYER_PACKAGE}.rsa')
    rsa_triton = importlib.import_module(f'{LAYER_PACKAGE}.rsa_triton')
    try:
        reference = importlib.import_module(f'{LAYER_PACKAGE}.rsa_reference')
    except Exception:  # the oracle is optional here
        reference = None
    return types.SimpleNamespace(
        rsa=rsa, rsa_triton=rsa_triton, rsa_reference=reference)


def load_atomic() -> types.ModuleType:
    """``mmrsa/fileio/atomic.py`` (standard library only), from its
    file."""
    _private_package(FILEIO_PACKAGE, REPO_ROOT / 'mmrsa' / 'fileio')
    return importlib.import_module(f'{FILEIO_PACKAGE}.atomic')


# ---------------------------------------------------------------------- #
# helpers
# ---------------------------------------------------------------------- #
def _sync() -> None:
    torch.cuda.synchronize()


def _error(error: BaseException) -> str:
    text = f'{type(error).__name__}: {error}'.strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


class DeviceLost(RuntimeError):
    """A failure left the CUDA context unusable: nothing more can run."""


def _check_device(device: str) -> None:
    """After a failed case: raise :class:`DeviceLost` when the device no
    longer runs anything (an illegal memory access poisons the context)."""
    if torch.device(device).type != 'cuda':
        return
    try:
        torch.cuda.synchronize()
        torch.ones(1, device=device).add_(1).item()
    except Exception as error:
        raise DeviceLost(_error(error)) from error


def _autocast(dtype: torch.dtype, device: str = 'cuda') -> torch.autocast:
    """Autocast to a half dtype; float32 runs without."""
    return torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)


class _NoTF32:
    """TF32 off for matmul and cuDNN inside the block (restored after)."""

    def __enter__(self) -> None:
        self.saved = (torch.backends.cuda.matmul.allow_tf32,
                      torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc) -> None:
        (torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = self.saved


def time_rounds(fns: Dict[str, Callable[[], None]],
                repeats: int,
                warmup: int,
                sync: Callable[[], None] = _sync) -> Dict[str, float]:
    """Median milliseconds per candidate, rounds alternating between the
    candidates: ``mmrsa/utils/timing.py``'s ``time_alternating``, loaded
    from its file (``mmrsa.utils`` itself imports MMAction2)."""
    _private_package(UTILS_PACKAGE, REPO_ROOT / 'mmrsa' / 'utils')
    timing = importlib.import_module(f'{UTILS_PACKAGE}.timing')
    return timing.time_alternating(fns, repeats, warmup, sync)


def peak_mib(fn: Callable[[], None]) -> float:
    """Peak CUDA allocation of ``fn()`` above what was allocated before."""
    _sync()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    _sync()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def environment(mods: types.SimpleNamespace) -> Dict[str, Any]:
    """Versions and the device."""
    props = torch.cuda.get_device_properties(0)
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    # the policy as the layers see it here (R50 sizes, relational layer)
    x = torch.zeros(1, device='cuda')
    select = mods.rsa.select_path
    return dict(
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
        triton=triton_version,
        device=props.name,
        capability=f'{props.major}.{props.minor}',
        memory_gib=round(props.total_memory / 2**30, 1),
        fused_available=mods.rsa_triton.fused_available(x.device),
        default_path=select(x, (8, 8, 8), True),
        path_when_fused_asked=select(x, (8, 8, 8), True, 'fused'))


# ---------------------------------------------------------------------- #
# 1. accuracy against float64
# ---------------------------------------------------------------------- #
def _grads(layer: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor,
           path: str, force_path: Callable, dtype: torch.dtype,
           device: str) -> List[torch.Tensor]:
    """Output, input gradient and parameter gradients through ``path``."""
    x = x.detach().requires_grad_()
    with force_path(path):
        with _autocast(dtype, device):
            out = layer(x)
        grads = torch.autograd.grad(out, [x] + list(layer.parameters()),
                                    grad_out.to(out.dtype))
    return [out] + list(grads)


def _errors(got: List[torch.Tensor],
            want: List[torch.Tensor]) -> Dict[str, float]:
    """Max abs error and max abs error / max abs reference, of the output
    and (worst over the tensors) of the gradients."""
    abs_err = [(g.double() - w).abs().max().item() for g, w in zip(got, want)]
    rel_err = [
        e / max(w.abs().max().item(), 1e-300) for e, w in zip(abs_err, want)
    ]
    return dict(
        out_abs=abs_err[0],
        out_rel=rel_err[0],
        grad_abs=max(abs_err[1:]),
        grad_rel=max(rel_err[1:]))


def accuracy_section(mods: types.SimpleNamespace,
                     shapes: List[Tuple[int, int, List[str]]],
                     emit: Emit,
                     *,
                     device: str = 'cuda',
                     frames: int = FRAMES,
                     dtypes: Tuple[str, ...] = tuple(DTYPES),
                     paths: Tuple[str, ...] = PATHS) -> List[Dict[str, Any]]:
    """One clip per stage shape (the layer as initialised for training),
    each dtype and path against the float64 ``plain`` layer; the float64
    reference itself against the literal Eq. 8 on a map of at most 14^2.
    Every ``plain`` case runs before the first ``fused`` one."""
    force_path, rsa = mods.rsa.force_path, mods.rsa
    rows = []
    emit('\n== 1. accuracy against float64 (1 clip x {} frames; float32 with '
         'TF32 off; half precision as autocast) =='.format(frames))
    cases = []
    for channels, size, _ in shapes:
        shape = f'{channels}x{size}^2'
        torch.manual_seed(0)
        layer = rsa.RSA(channels).to(device)
        exact = copy.deepcopy(layer).double()
        x = torch.randn(1, channels, frames, size, size, device=device)
        grad_out = torch.randn(
            1,
            channels,
            frames,
            size,
            size,
            device=device,
            dtype=torch.float64)
        want = _grads(exact, x.double(), grad_out, 'plain', force_path,
                      torch.float32, device)
        cases.append((channels, size, layer, x, grad_out, want))
        if mods.rsa_reference is None:
            emit(f'{shape:>12}  float64   plain vs literal Eq. 8: skipped '
                 f'(rsa_reference.py does not import)')
            continue
        side = min(size, 14)
        small = x[..., :side, :side].double()
        with torch.no_grad(), force_path('plain'):
            literal = mods.rsa_reference.rsa_reference(exact, small)
            plain = exact(small)
        err = ((plain - literal).abs().max() / literal.abs().max()).item()
        emit(f'{shape:>12}  float64   plain vs literal Eq. 8 (map {side}^2): '
             f'rel {err:.1e}')
        rows.append(
            dict(
                channels=channels,
                size=size,
                dtype='float64',
                path='plain',
                literal_rel=err))
    emit(f'{"shape":>12}  {"dtype":9} {"path":6} {"out abs":>9} '
         f'{"out rel":>9} {"grad abs":>9} {"grad rel":>9}')
    for path in paths:
        for channels, size, layer, x, grad_out, want in cases:
            shape = f'{channels}x{size}^2'
            for dtype_name in dtypes:
                row = dict(
                    channels=channels, size=size, dtype=dtype_name, path=path)
                try:
                    with _NoTF32():
                        got = _grads(layer, x, grad_out, path, force_path,
                                     DTYPES[dtype_name], device)
                    row.update(_errors(got, want))
                    emit(f'{shape:>12}  {dtype_name:9} {path:6} '
                         f'{row["out_abs"]:9.2e} {row["out_rel"]:9.2e} '
                         f'{row["grad_abs"]:9.2e} {row["grad_rel"]:9.2e}')
                except Exception as error:
                    row['error'] = _error(error)
                    emit(f'{shape:>12}  {dtype_name:9} {path:6} FAILED: '
                         f'{row["error"]}')
                    _check_device(device)
                rows.append(row)
    return rows


# ---------------------------------------------------------------------- #
# 2. layer times
# ---------------------------------------------------------------------- #
def _layer_step(layer: torch.nn.Module, x: torch.Tensor, path: str,
                force_path: Callable, dtype: torch.dtype,
                device: str) -> Callable[[], None]:
    """Forward + backward of ``layer`` through ``path``, no gradient
    left."""

    def run() -> None:
        with force_path(path):
            with _autocast(dtype, device):
                out = layer(x)
            out.float().sum().backward()
        x.grad = None
        layer.zero_grad(set_to_none=True)

    return run


def timing_section(mods: types.SimpleNamespace,
                   shapes: List[Tuple[int, int, List[str]]],
                   emit: Emit,
                   *,
                   repeats: int,
                   warmup: int,
                   clips: int = CLIPS,
                   frames: int = FRAMES,
                   device: str = 'cuda',
                   dtypes: Tuple[str, ...] = tuple(DTYPES),
                   paths: Tuple[str, ...] = PATHS,
                   sync: Callable[[], None] = _sync,
                   measure_peak: bool = True) -> List[Dict[str, Any]]:
    """Forward + backward ms (median) and peak MiB of one step per stage
    shape, dtype and path, and per dtype the total over the layers of
    ``shapes`` (each shape counted once per layer name)."""
    force_path, rsa = mods.rsa.force_path, mods.rsa
    rows = []
    emit(f'\n== 2. layer forward + backward ({clips} clips x {frames} '
         f'frames; float32 with torch\'s TF32 defaults) ==')
    head = ''.join(f'{p + " ms":>10}{p + " MiB":>11}' for p in paths)
    emit(f'{"shape":>12} {"layers":22} {"dtype":9}{head}'
         f'{"  fused/plain" if paths == PATHS else ""}')
    totals = {d: {p: 0.0 for p in paths} for d in dtypes}
    for channels, size, names in shapes:
        shape = f'{channels}x{size}^2'
        torch.manual_seed(0)
        layer = rsa.RSA(channels).to(device)
        x = torch.randn(
            clips,
            channels,
            frames,
            size,
            size,
            device=device,
            requires_grad=True)
        for dtype_name in dtypes:
            row: Dict[str, Any] = dict(
                channels=channels,
                size=size,
                layers=names,
                dtype=dtype_name,
                ms={},
                peak_mib={},
                errors={})
            steps = {}
            for path in paths:
                step = _layer_step(layer, x, path, force_path,
                                   DTYPES[dtype_name], device)
                try:
                    step()  # compiles the kernels of this dtype and shape
                    sync()
                    steps[path] = step
                except Exception as error:
                    row['errors'][path] = _error(error)
            if steps:
                row['ms'] = time_rounds(steps, repeats, warmup, sync)
                if measure_peak:
                    row['peak_mib'] = {
                        p: peak_mib(s)
                        for p, s in steps.items()
                    }
            if row['errors']:
                _check_device(device)
            cells = ''
            for path in paths:
                ms = row['ms'].get(path)
                mib = row['peak_mib'].get(path)
                cells += (f'{ms:10.2f}'
                          if ms is not None else f'{"FAILED":>10}')
                cells += f'{mib:11.0f}' if mib is not None else f'{"-":>11}'
                if ms is not None:
                    totals[dtype_name][path] += ms * len(names)
                else:
                    totals[dtype_name][path] = math.nan
            ratio = ''
            if paths == PATHS and len(row['ms']) == 2:
                row['fused_over_plain'] = row['ms']['fused'] / row['ms'][
                    'plain']
                ratio = f'{row["fused_over_plain"]:13.2f}'
            emit(f'{shape:>12} {",".join(names):22} {dtype_name:9}{cells}'
                 f'{ratio}')
            for path, text in row['errors'].items():
                emit(f'{"":>12} {path} FAILED: {text}')
            rows.append(row)
    num_layers = sum(len(names) for _, _, names in shapes)
    for dtype_name in dtypes:
        total = totals[dtype_name]
        cells = ''.join(f'{total[p]:10.2f}{"":11}' for p in paths)
        ratio = ''
        if paths == PATHS and all(math.isfinite(v) for v in total.values()):
            ratio = f'{total["fused"] / total["plain"]:13.2f}'
        emit(f'{"total":>12} {f"{num_layers} layers":22} {dtype_name:9}'
             f'{cells}{ratio}')
        rows.append(
            dict(
                total=True,
                layers=num_layers,
                dtype=dtype_name,
                ms={
                    p: (None if math.isnan(v) else v)
                    for p, v in total.items()
                }))
    return rows


# ---------------------------------------------------------------------- #
# 3. the R50 train step
# ---------------------------------------------------------------------- #
def missing_stack() -> List[str]:
    """What the model part needs beyond torch and is not installed."""
    return [
        name for name in ('mmengine', 'mmcv', 'mmaction')
        if importlib.util.find_spec(name) is None
    ]


def model_section(emit: Emit,
                  *,
                  repeats: int,
                  warmup: int,
                  clips: int = CLIPS,
                  input_size: int = INPUT_SIZE,
                  device: str = 'cuda',
                  amp_dtype: torch.dtype = torch.float16,
                  paths: Tuple[str, ...] = PATHS,
                  sync: Callable[[], None] = _sync,
                  measure_peak: bool = True) -> Dict[str, Any]:
    """Train step (forward with loss + backward, AMP) of RSANet-R50 through
    each path and of TSM-R50, built as ``benchmark_rsa.py`` builds them
    (:func:`mmrsa.analysis.benchmark.build_recognizers`)."""
    amp_name = str(amp_dtype).split('.')[-1]
    emit(f'\n== 3. train step, {clips} clips x {FRAMES} frames x '
         f'{input_size}^2, {amp_name} AMP ==')
    missing = missing_stack()
    if missing:
        emit(f'skipped: MMAction2 is not importable here (missing: '
             f'{", ".join(missing)}); the layer checks above need torch '
             f'alone.')
        return dict(skipped=f'missing {missing}')
    if str(REPO_ROOT) not in sys.path:  # mmrsa from this checkout
        sys.path.insert(0, str(REPO_ROOT))
    with warnings.catch_warnings():  # the stack's notices on import
        warnings.filterwarnings(
            'ignore',
            message='Fail to import ``MultiScaleDeformableAttention``')
        warnings.filterwarnings(
            'ignore', message='pkg_resources is deprecated')
        try:
            from mmaction.structures import ActionDataSample
            from mmrsa.analysis.benchmark import build_recognizers
            from mmrsa.models.common.rsa import force_path
        except Exception as error:
            emit(f'skipped: MMAction2 or mmrsa does not import '
                 f'({_error(error)}).')
            return dict(skipped=_error(error))
        models, frames, num_classes = build_recognizers()
    # TSM first and fused last: a kernel that breaks the device is last
    candidates = {'TSM-R50': (models['TSM-R50'], None)}
    for path in paths:
        candidates[f'RSANet-R50 {path}'] = (models['RSANet-R50'], path)
    del models
    torch.manual_seed(0)
    # [N, T, 3, H, W], as the data preprocessor hands clips to the model
    inputs = torch.randn(
        clips, frames, 3, input_size, input_size, device=device)
    samples = [
        ActionDataSample().set_gt_label(i % num_classes) for i in range(clips)
    ]

    def train_step(model: torch.nn.Module,
                   path: Optional[str]) -> Callable[[], None]:

        def run() -> None:
            with force_path(path):
                with torch.autocast(device, dtype=amp_dtype):
                    losses = model(inputs, samples, mode='loss')
                loss = sum(v for k, v in losses.items() if 'loss' in k)
                loss.backward()
            model.zero_grad(set_to_none=True)

        return run

    steps, errors = {}, {}
    for name, (model, path) in candidates.items():
        model.to(device).train()
        step = train_step(model, path)
        try:
            step()
            sync()
            steps[name] = step
        except Exception as error:
            errors[name] = _error(error)
            _check_device(device)
    ms = time_rounds(steps, repeats, warmup, sync) if steps else {}
    peak = ({k: peak_mib(s) for k, s in steps.items()} if measure_peak else {})
    base = ms.get('TSM-R50')
    emit(f'{"model":22}{"train ms":>10}{"x TSM":>8}{"peak MiB":>10}')
    for name in candidates:
        if name in errors:
            emit(f'{name:22} FAILED: {errors[name]}')
            continue
        times_tsm = f'{ms[name] / base:8.2f}' if base else f'{"-":>8}'
        mib = f'{peak[name]:10.0f}' if name in peak else f'{"-":>10}'
        emit(f'{name:22}{ms[name]:10.1f}{times_tsm}{mib}')
    return dict(
        clips=clips,
        frames=frames,
        input_size=input_size,
        amp=amp_name,
        ms=ms,
        peak_mib=peak,
        errors=errors)


# ---------------------------------------------------------------------- #
def summary(results: Dict[str, Any]) -> Iterator[str]:
    """Lines for the decision on the CUDA default: per dtype the worst
    relative error of each path, and the total layer time ratio."""
    for dtype_name in DTYPES:
        worst = {}
        for row in results.get('accuracy', []):
            if row['dtype'] == dtype_name and 'out_rel' in row:
                worst[row['path']] = max(
                    worst.get(row['path'], 0.0), row['out_rel'],
                    row['grad_rel'])
        cells = ', '.join(f'{p} {v:.1e}' for p, v in worst.items())
        total = next((r for r in results.get('layers', [])
                      if r.get('total') and r['dtype'] == dtype_name), None)
        speed = ''
        if total and None not in total['ms'].values() and len(
                total['ms']) == 2:
            speed = (f'; {total["layers"]} layers fused/plain time '
                     f'{total["ms"]["fused"] / total["ms"]["plain"]:.2f}')
        yield f'{dtype_name:9} worst relative error: {cells or "-"}{speed}'


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(
            'gpu_check: no CUDA device (torch.cuda.is_available() is '
            'False); this script measures the RSA layer on a GPU and '
            'measured nothing.',
            file=sys.stderr)
        return 2
    atomic = load_atomic() if args.out else None
    if args.out:
        try:
            atomic.refuse_existing(
                args.out, args.force, option='--force', what='results file')
        except FileExistsError as error:
            print(f'gpu_check: {error}', file=sys.stderr)
            return 2
    mods = load_layer_modules()
    results: Dict[str, Any] = dict(
        environment=environment(mods), quick=args.quick, section_errors={})

    def emit(line: str) -> None:
        print(line, flush=True)

    def save() -> None:
        if args.out:
            atomic.write_bytes_atomic(
                args.out,
                json.dumps(results, indent=1).encode() + b'\n')

    emit('RSA GPU check: ' +
         ', '.join(f'{k} {v}' for k, v in results['environment'].items()))
    if not results['environment']['fused_available']:
        emit('the fused kernel cannot run here (Triton missing or '
             'MMRSA_DISABLE_FUSED=1): its rows will fail.')
    shapes = distinct_shapes(layer_table())
    started = time.perf_counter()
    sections = (
        ('accuracy', lambda: accuracy_section(mods, shapes, emit)),
        ('layers', lambda: timing_section(
            mods, shapes, emit, repeats=args.repeats, warmup=args.warmup)),
        ('model',
         lambda: model_section(emit, repeats=args.repeats, warmup=args.warmup)
         ),
    )
    failed = False
    for name, section in sections:
        try:
            results[name] = section()
        except DeviceLost as error:
            results['section_errors'][name] = f'device lost: {error}'
            emit(f'STOPPED: the CUDA device no longer runs anything after '
                 f'the failure above ({error}); the first error is the one '
                 f'to report.')
            failed = True
            break
        except Exception as error:  # report the section, run the next one
            results['section_errors'][name] = _error(error)
            emit(f'{name} section FAILED: {_error(error)}')
            failed = True
        finally:
            results['seconds'] = round(time.perf_counter() - started, 1)
            save()
        torch.cuda.empty_cache()
    emit('\n== summary ==')
    for line in summary(results):
        emit(line)
    failed = failed or (any('error' in r
                            for r in results.get('accuracy', [])) or any(
                                r.get('errors')
                                for r in results.get('layers', []))
                        or bool(results.get('model', {}).get('errors')))
    emit(f'{"some cases FAILED (see above)" if failed else "all cases ran"} '
         f'in {results["seconds"]} s' +
         (f'; results in {args.out}' if args.out else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
