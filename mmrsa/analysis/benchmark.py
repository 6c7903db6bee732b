# Copyright (c) mmrsa contributors. All rights reserved.
"""Benchmark the RSA layer and RSANet-R50 against their convolutional peers
(the logic of ``tools/analysis_tools/benchmark_rsa.py``).

Three sections, chosen with ``--sections`` (all three by default):

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
    python tools/analysis_tools/benchmark_rsa.py --reference   # + literal Eq. 8
    python tools/analysis_tools/benchmark_rsa.py --compare-impl HEAD  # A/B
    python tools/analysis_tools/benchmark_rsa.py --device cuda --amp \
        --batch 8 --sections model layer                  # GPU figures
    python tools/analysis_tools/benchmark_rsa.py --sections layer \
        --paths cpu_bmm plain    # the layer's implementations side by side

The layer section needs torch alone (on a machine without MMEngine,
MMCV and MMAction2 the script imports this module and the layer's torch-only
modules without running ``mmrsa/__init__.py``); the model and scaling sections need the OpenMMLab stack. On CUDA
with Triton the layer section also times the ``plain`` path (grouped
``conv3d`` + ``bmm``) beside the automatic, fused one.

``--compare-impl REV`` loads the layer (``rsa.py`` and, where it exists,
``rsa_ops.py``) as committed at git revision ``REV`` and times it beside the
working tree's, with the same weights, to measure a change of the layer.
"""
import argparse
import copy
import importlib
import importlib.util
import logging
import math
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

#: The checkout (or installed package root) holding configs/.
REPO_ROOT = Path(__file__).resolve().parents[2]

#: What the model and scaling sections need beyond torch (import names of
#: MMEngine, MMCV(-lite) and MMAction2). The layer section needs torch alone.
OPENMMLAB_STACK = ('mmengine', 'mmcv', 'mmaction')


def missing_stack() -> List[str]:
    """The packages of :data:`OPENMMLAB_STACK` that are not installed."""
    return [name for name in OPENMMLAB_STACK
            if importlib.util.find_spec(name) is None]


MISSING_STACK = missing_stack()
# MMCV-lite's notice on import; nothing here needs the op
warnings.filterwarnings(
    'ignore', message='Fail to import ``MultiScaleDeformableAttention``')
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmrsa.models.common.rsa import PATHS  # noqa: E402
from mmrsa.utils.memory import saved_bytes  # noqa: E402

SECTIONS = ('layer', 'model', 'scaling')

# the four RSANet-R50 stage shapes: (channels, spatial size)
STAGE_SHAPES = ((64, 56), (128, 28), (256, 14), (512, 7))

# model section: RSANet-R50 as configured for Something-Something V1, and the
# backbones of the two MMAction2 baselines it is compared with
RSANET_CONFIG = 'configs/recognition/rsanet/rsanet_r50_8x1_ssv1.py'
BASELINE_BACKBONES = {
    'TSN-R50':
    dict(type='ResNet', depth=50, pretrained=None, norm_eval=False),
    'TSM-R50':
    dict(
        type='ResNetTSM',
        depth=50,
        num_segments=8,
        shift_div=8,
        pretrained=None,
        pretrained2d=False,  # needed with pretrained=None (MMAction2 1.2.0)
        norm_eval=False),
}

# scaling section: the context sizes M of the paper's Table 1 / 4e, the
# default layer shape (channels, spatial size) and the M of the
# positions sweep (the paper's default)
SCALING_KERNELS = ((3, 3, 3), (3, 5, 5), (3, 7, 7), (5, 7, 7), (5, 9, 9))
SCALING_SHAPE = (128, 28)
POSITIONS_KERNEL = (5, 7, 7)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS),
        help='what to measure (default: all, in this order)')
    parser.add_argument(
        '--shapes', nargs='+', default=None, metavar='C@S',
        help='layer shapes as channels@size, e.g. 64@56 128@28 (default: '
        'the four RSANet-R50 stages); the first one is also the shape of the '
        'scaling section (default there: '
        f'{SCALING_SHAPE[0]}@{SCALING_SHAPE[1]})')
    parser.add_argument('--frames', type=int, default=8,
                        help='T of the layer and scaling sections (the model '
                        'section uses the 8 frames of its config)')
    parser.add_argument('--batch', type=int, nargs='+', default=[1],
                        help='batch sizes N (clips); the scaling section '
                        'uses the first')
    parser.add_argument(
        '--input-size', type=int, default=224, metavar='PIXELS',
        help='frame size of the model section (smaller for quick checks)')
    parser.add_argument('--repeats', type=int, default=5,
                        help='alternating timed rounds (median reported)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument(
        '--pause', type=float, default=0.2, metavar='SECONDS',
        help='idle time before each timed call, so that one candidate does '
        'not run in the wake of another (on a busy machine a layer that '
        'runs thousands of tiny ops can slow the next one down for a while)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', action='store_true',
                        help='autocast (bf16 on CPU, fp16 on CUDA)')
    parser.add_argument('--reference', action='store_true',
                        help='also time the literal Eq. 8 implementation')
    parser.add_argument(
        '--compare-impl', metavar='REV', default=None,
        help='also time the RSA layer as committed at git revision REV '
        '(e.g. HEAD), with the same weights')
    parser.add_argument(
        '--paths', nargs='+', choices=PATHS, default=None, metavar='PATH',
        help='layer section: also time the RSA layer forced through these '
        f'implementations ({", ".join(PATHS)}; see '
        'mmrsa.models.common.rsa.select_path) beside its automatic choice '
        '(default: "plain", the cuDNN/cuBLAS path, where the automatic '
        'choice is the fused Triton kernel; otherwise none)')
    parser.add_argument(
        '--malloc', choices=('keep', 'default'), default='keep',
        help='CPU: "keep" keeps freed memory for reuse, for the whole '
        'process (glibc mallopt, as tools/train.py does; see '
        'mmrsa.utils.allocator); "default" leaves glibc as it is, and every '
        'step page-faults fresh memory')
    parser.add_argument('--quick', action='store_true',
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
    args.sections = [name for name in SECTIONS if name in args.sections]
    shapes = []
    for item in args.shapes or [f'{c}@{s}' for c, s in STAGE_SHAPES]:
        try:
            c, s = (int(v) for v in item.split('@'))
        except ValueError:
            parser.error(f'--shapes takes channels@size (e.g. 64@56), got '
                         f'{item!r}')
        shapes.append((c, s))
    args.scaling_shape = shapes[0] if args.shapes else SCALING_SHAPE
    args.shapes = shapes
    return args


def load_committed_rsa(rev: str) -> type:
    """The ``RSA`` class of ``mmrsa/models/common`` at git revision ``rev``.

    ``rsa.py`` and ``rsa_ops.py`` and ``rsa_triton.py`` (when the revision
    has them) are written to a temporary package and imported from there.
    """
    package = Path(tempfile.mkdtemp(prefix='rsa_rev_')) / 'rsa_rev'
    package.mkdir()
    (package / '__init__.py').write_text('')
    for name in ('rsa.py', 'rsa_ops.py', 'rsa_triton.py'):
        result = subprocess.run(
            ['git', 'show', f'{rev}:mmrsa/models/common/{name}'],
            capture_output=True, text=True,
            cwd=Path(__file__).resolve().parents[2])
        if result.returncode == 0:
            (package / name).write_text(result.stdout)
        elif name == 'rsa.py':
            sys.exit(f'--compare-impl: cannot read mmrsa/models/common/rsa.py '
                     f'at {rev!r}: {result.stderr.strip()}')
    sys.path.insert(0, str(package.parent))
    return importlib.import_module('rsa_rev.rsa').RSA


def time_alternating(fns: Dict[str, Callable[[], None]],
                     repeats: int,
                     warmup: int,
                     sync: Callable[[], None],
                     pause: float = 0.0) -> Dict[str, float]:
    """Median milliseconds per candidate, rounds alternating between them,
    with ``pause`` idle seconds before every timed call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for i in range(repeats):
        order = list(fns.items())
        if i % 2:
            order.reverse()
        for name, fn in order:
            sync()
            time.sleep(pause)
            start = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


class Bench:
    """What every section needs: the device, how to wait for it, how to
    autocast on it, and the timing options.

    Args:
        args (argparse.Namespace): The parsed options.
    """

    def __init__(self,
                 args: argparse.Namespace,
                 echo: Optional[Callable[[str], None]] = None) -> None:
        self.args = args
        # where the tables go: the script passes its own output; by default
        # the 'mmrsa.benchmark' logger (standard logging: the layer section
        # runs with torch alone, without MMEngine's logger)
        self.echo = echo or logging.getLogger('mmrsa.benchmark').info
        self.device = torch.device(args.device)
        self.cuda = self.device.type == 'cuda'
        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.amp_dtype = torch.float16 if self.cuda else torch.bfloat16

    def autocast(self) -> torch.autocast:
        """Autocast in the AMP dtype when ``--amp`` is given, else a no-op."""
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.args.amp)

    def time(self, fns: Dict[str, Callable[[], None]]) -> Dict[str, float]:
        """:func:`time_alternating` with the options' rounds and pause."""
        return time_alternating(fns, self.args.repeats, self.args.warmup,
                                self.sync, self.args.pause)

    def cuda_peak_mb(self, step: Callable[[], None]) -> float:
        """Peak CUDA allocation of ``step()`` above what was allocated
        before it, in MiB."""
        self.sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        self.sync()
        return (torch.cuda.max_memory_allocated() - base) / 2**20


def report_table(echo: Callable[[str], None], title: List[str], header: str,
                 rows: List[str]) -> None:
    """Report a section through ``echo``: title lines, header, rule, rows."""
    echo('')
    for line in title:
        echo(line)
    echo(header)
    echo('-' * len(header))
    for row in rows:
        echo(row)


def ratio(a: Optional[float], b: Optional[float], width: int) -> str:
    """``a / b`` right-aligned in ``width``; ``-`` when either is missing."""
    if a is None or b is None:
        return f'{"-":>{width}}'
    return f'{a / b:{width}.2f}'


# ---------------------------------------------------------------------- #
# layer section
# ---------------------------------------------------------------------- #
def layer_section(bench: Bench) -> List[Dict[str, Any]]:
    """RSA against the 1x3x3 convolution at ``--shapes`` (forward +
    backward of one layer), optionally with the literal Eq. 8 and a
    committed revision.

    Returns:
        list[dict]: Per (batch, shape): median ms and saved MB per candidate.
    """
    from mmrsa.models.common.rsa import RSA, force_path, select_path
    from mmrsa.models.common.rsa_reference import RSAReference
    from mmrsa.models.common.rsa_triton import fused_available
    args, device, cuda = bench.args, bench.device, bench.cuda
    committed = (load_committed_rsa(args.compare_impl)
                 if args.compare_impl else None)
    paths = args.paths
    if paths is None:  # the fused kernel against the path it replaces
        paths = ['plain'] if fused_available(device) and cuda else []
    header = (f'{"layer":>12} {"N":>2} | {"conv ms":>8} {"RSA ms":>8} '
              f'{"RSA/conv":>8}')
    if args.reference:
        header += f' {"ref ms":>8} {"ref/RSA":>7}'
    if committed:
        header += f' {"rev ms":>8} {"rev/RSA":>7}'
    for path in paths:
        header += f' {path + " ms":>12} {"/RSA":>5}'
    header += f' | {"conv MB":>7} {"RSA MB":>7}'
    if args.reference:
        header += f' {"ref MB":>7}'
    if committed:
        header += f' {"rev MB":>7}'
    for path in paths:
        header += f' {path + " MB":>12}'
    if cuda:
        header += f' {"RSA peak MB":>11}'
    header += f' | {"RSA path":<9}'
    echo = bench.echo
    echo('')
    if committed:
        echo(f'rev = the RSA layer at git revision {args.compare_impl}')
    echo(f'one layer vs the 1x3x3 convolution it replaces, forward + '
          f'backward, T={args.frames} (MB: saved for backward); RSA path = '
          f'its automatic implementation here'
          + (f', beside it forced through {", ".join(paths)}'
             if paths else ''))
    echo(header)
    echo('-' * len(header))
    results = []
    for batch in args.batch:
        for channels, size in args.shapes:
            torch.manual_seed(0)
            x = torch.randn(batch, channels, args.frames, size, size,
                            device=device, requires_grad=True)
            models = {
                'conv': nn.Conv3d(channels, channels, (1, 3, 3),
                                  padding=(0, 1, 1), bias=False),
                'rsa': RSA(channels),
            }
            if args.reference:
                models['ref'] = RSAReference(channels)
                models['ref'].load_state_dict(models['rsa'].state_dict())
            if committed:
                models['rev'] = committed(channels)
                models['rev'].load_state_dict(models['rsa'].state_dict())
            models = {k: m.to(device) for k, m in models.items()}
            steps = {k: layer_train_step(bench, m, x)
                     for k, m in models.items()}
            forwards = {k: layer_forward(bench, m, x)
                        for k, m in models.items()}
            for path in paths:  # the same layer, forced through `path`
                steps[path] = forced(steps['rsa'], path, force_path)
                forwards[path] = forced(forwards['rsa'], path, force_path)
            times = bench.time(steps)
            mem = {k: saved_bytes(forward) / 2**20
                   for k, forward in forwards.items()}
            rsa = models['rsa']
            auto_path = select_path(
                x, (rsa.num_queries, rsa.query_channels, rsa.latent_dim),
                rsa.use_relational_kernel and rsa.use_relational_context)
            row = (f'{channels:>5}@{size:<3}T{args.frames:<2} {batch:>2} | '
                   f'{times["conv"]:8.1f} {times["rsa"]:8.1f} '
                   f'{times["rsa"] / times["conv"]:8.2f}')
            if args.reference:
                row += (f' {times["ref"]:8.1f} '
                        f'{times["ref"] / times["rsa"]:7.2f}')
            if committed:
                row += (f' {times["rev"]:8.1f} '
                        f'{times["rev"] / times["rsa"]:7.2f}')
            for path in paths:
                row += (f' {times[path]:12.1f} '
                        f'{times[path] / times["rsa"]:5.2f}')
            row += f' | {mem["conv"]:7.1f} {mem["rsa"]:7.1f}'
            if args.reference:
                row += f' {mem["ref"]:7.1f}'
            if committed:
                row += f' {mem["rev"]:7.1f}'
            for path in paths:
                row += f' {mem[path]:12.1f}'
            if cuda:
                peak = bench.cuda_peak_mb(steps['rsa'])
                row += f' {peak:11.1f}'
            row += f' | {auto_path:<9}'
            echo(row)
            results.append(
                dict(batch=batch, channels=channels, size=size, ms=times,
                     saved_mb=mem, path=auto_path))
    return results


def forced(fn: Callable[[], Any], path: str,
           force_path: Callable[[str], Any]) -> Callable[[], Any]:
    """``fn`` run with every RSA layer forced through ``path``."""

    def run() -> Any:
        with force_path(path):
            return fn()

    return run


def layer_forward(bench: Bench, model: nn.Module,
                  x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A call of ``model(x).sum()`` under the bench's autocast."""

    def run() -> torch.Tensor:
        with bench.autocast():
            return model(x).float().sum()

    return run


def layer_train_step(bench: Bench, model: nn.Module,
                     x: torch.Tensor) -> Callable[[], None]:
    """A forward + backward call of one layer that leaves no gradients."""
    forward = layer_forward(bench, model, x)

    def run() -> None:
        forward().backward()
        x.grad = None
        model.zero_grad(set_to_none=True)

    return run


# ---------------------------------------------------------------------- #
# model section
# ---------------------------------------------------------------------- #
def build_recognizers() -> Tuple[Dict[str, nn.Module], int, int]:
    """RSANet-R50 (with and without gradient checkpointing), TSN-R50 and
    TSM-R50 as ``Recognizer2D`` with the head of the RSANet config.

    Nothing is downloaded (``pretrained=None``); the two RSANet-R50 share
    their weights. MMEngine's initialisation log is silenced.

    Returns:
        tuple[dict, int, int]: The recognizers by name, frames per clip and
        the number of classes.
    """
    import mmrsa  # noqa: F401  (registers RSANet)
    from mmaction.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    init_default_scope('mmaction')
    rsanet = Config.fromfile(str(REPO_ROOT / RSANET_CONFIG)).model
    rsanet.backbone.pretrained = None
    # the benchmark feeds shaped float clips; nothing to normalise
    rsanet.data_preprocessor = None
    configs = {'RSANet-R50': rsanet}
    with_cp = copy.deepcopy(rsanet)
    with_cp.backbone.with_cp = True
    configs['RSANet-R50 cp'] = with_cp
    for name, backbone in BASELINE_BACKBONES.items():
        cfg = copy.deepcopy(rsanet)
        cfg.backbone = copy.deepcopy(backbone)
        if 'num_segments' in cfg.backbone:  # TSM shifts within the clip
            cfg.backbone.num_segments = rsanet.backbone.num_segments
        configs[name] = cfg

    logging.disable(logging.INFO)
    try:
        models = {}
        for name, cfg in configs.items():
            torch.manual_seed(0)
            models[name] = MODELS.build(cfg)
            models[name].init_weights()
    finally:
        logging.disable(logging.NOTSET)
    models['RSANet-R50 cp'].load_state_dict(
        models['RSANet-R50'].state_dict())
    return (models, rsanet.backbone.num_segments,
            rsanet.cls_head.num_classes)


def model_section(bench: Bench) -> List[Dict[str, Any]]:
    """Train step, inference and activation memory of the recognizers.

    The train step is the real loss path of ``Recognizer2D``
    (``mode='loss'``: backbone, head, cross-entropy) and a backward pass,
    under ``--amp`` autocast like MMEngine's ``AmpOptimWrapper``. Activation
    memory counts the tensors autograd saves, the weights excluded; with
    ``with_cp`` a checkpointed block saves nothing itself and keeps only its
    input, which is the output the preceding ReLU saves anyway, so the count
    stays exact up to the input of the first block.

    Returns:
        list[dict]: Per batch size and model: ``train_ms``, ``infer_ms``
        (``None`` for the checkpointed twin, whose inference is the same
        model), ``saved_mb`` and, on CUDA, ``peak_mb``.
    """
    from mmaction.structures import ActionDataSample
    args, device, cuda = bench.args, bench.device, bench.cuda
    models, num_frames, num_classes = build_recognizers()
    models = {name: m.to(device) for name, m in models.items()}
    size = args.input_size
    title = [
        f'whole model: Recognizer2D (backbone + {num_classes}-class head), '
        f'one clip = {num_frames} frames x 3 x {size} x {size}',
        'train = forward with loss + backward; infer = eval forward under '
        'no_grad; cp = with_cp=True (gradient checkpointing)',
        'act. MB = activation bytes autograd saves for backward in the '
        'train forward (weights and their autocast copies not counted)' +
        ('; peak MB = CUDA peak of a train step above what was allocated '
         'before it' if cuda else ''),
    ]
    header = (f'{"model":<14} {"N":>2} | {"train ms":>9} {"/TSN":>5} '
              f'{"/TSM":>5} | {"infer ms":>9} {"/TSN":>5} {"/TSM":>5} | '
              f'{"act. MB":>9} {"/TSN":>5} {"/TSM":>5}')
    if cuda:
        header += f' | {"peak MB":>8} {"/TSN":>5} {"/TSM":>5}'
    rows, summaries, results = [], [], []
    for batch in args.batch:
        torch.manual_seed(0)
        inputs = torch.randn(batch, num_frames, 3, size, size,
                             device=device)
        samples = [
            ActionDataSample().set_gt_label(i % num_classes)
            for i in range(batch)
        ]

        def loss_of(model: nn.Module) -> Callable[[], torch.Tensor]:

            def run() -> torch.Tensor:
                with bench.autocast():
                    losses = model(inputs, samples, mode='loss')
                return sum(v for k, v in losses.items() if 'loss' in k)

            return run

        def train_step(model: nn.Module) -> Callable[[], None]:
            loss = loss_of(model)

            def run() -> None:
                loss().backward()
                model.zero_grad(set_to_none=True)

            return run

        def infer(model: nn.Module) -> Callable[[], None]:

            def run() -> None:
                with torch.no_grad(), bench.autocast():
                    model(inputs, mode='tensor')

            return run

        for model in models.values():
            model.train()
        train = bench.time({k: train_step(m) for k, m in models.items()})
        saved = {
            k: saved_bytes(loss_of(m), exclude=m.parameters()) / 2**20
            for k, m in models.items()
        }
        peak = ({k: bench.cuda_peak_mb(train_step(m))
                 for k, m in models.items()} if cuda else {})
        for model in models.values():
            model.eval()
        infer_ms: Dict[str, Optional[float]] = dict(
            bench.time({
                k: infer(m)
                for k, m in models.items() if k != 'RSANet-R50 cp'
            }))
        infer_ms['RSANet-R50 cp'] = None

        for name in models:
            row = (f'{name:<14} {batch:>2} | {train[name]:9.1f} '
                   f'{ratio(train[name], train["TSN-R50"], 5)} '
                   f'{ratio(train[name], train["TSM-R50"], 5)} | ')
            row += (f'{"-":>9}' if infer_ms[name] is None else
                    f'{infer_ms[name]:9.1f}')
            row += (f' {ratio(infer_ms[name], infer_ms["TSN-R50"], 5)} '
                    f'{ratio(infer_ms[name], infer_ms["TSM-R50"], 5)} | '
                    f'{saved[name]:9.1f} '
                    f'{ratio(saved[name], saved["TSN-R50"], 5)} '
                    f'{ratio(saved[name], saved["TSM-R50"], 5)}')
            if cuda:
                row += (f' | {peak[name]:8.1f} '
                        f'{ratio(peak[name], peak["TSN-R50"], 5)} '
                        f'{ratio(peak[name], peak["TSM-R50"], 5)}')
            rows.append(row)
            results.append(
                dict(model=name, batch=batch, train_ms=train[name],
                     infer_ms=infer_ms[name], saved_mb=saved[name],
                     peak_mb=peak.get(name)))
        summary = (
            f'N={batch}: with_cp=True takes x'
            f'{train["RSANet-R50 cp"] / train["RSANet-R50"]:.2f} the train '
            f'time and x{saved["RSANet-R50 cp"] / saved["RSANet-R50"]:.2f} '
            f'the saved-for-backward activation bytes of RSANet-R50')
        if cuda:
            summary += (f' (CUDA peak x'
                        f'{peak["RSANet-R50 cp"] / peak["RSANet-R50"]:.2f})')
        summaries.append(summary)
    report_table(bench.echo, title, header, rows + [''] + summaries)
    return results


# ---------------------------------------------------------------------- #
# scaling section
# ---------------------------------------------------------------------- #
def scaling_section(bench: Bench) -> Dict[str, List[Dict[str, Any]]]:
    """Time, FLOPs and activation memory of one RSA layer against its
    context size M, then against the number of positions.

    Returns:
        dict: ``'kernel'`` and ``'positions'``, each a list of rows with
        ``flops``, ``ms`` and ``saved_mb``.
    """
    from mmrsa.models.common import RSA
    from mmrsa.models.utils import count_flops
    args, device = bench.args, bench.device
    channels, size = args.scaling_shape
    batch, frames = args.batch[0], args.frames

    def measure(layers: Dict[Any, nn.Module], inputs: Dict[Any, torch.Tensor]
                ) -> Tuple[Dict[Any, int], Dict[Any, float],
                           Dict[Any, float]]:
        flops = {
            k: count_flops(layer, (inputs[k].detach(), ))
            for k, layer in layers.items()
        }
        times = bench.time({
            k: layer_train_step(bench, layer, inputs[k])
            for k, layer in layers.items()
        })
        mem = {
            k: saved_bytes(layer_forward(bench, layer, inputs[k])) / 2**20
            for k, layer in layers.items()
        }
        return flops, times, mem

    def clip(spatial: int) -> torch.Tensor:
        torch.manual_seed(0)
        return torch.randn(batch, channels, frames, spatial, spatial,
                           device=device, requires_grad=True)

    # ---- context size M ---------------------------------------------- #
    x = clip(size)
    layers = {}
    for kernel in SCALING_KERNELS:
        torch.manual_seed(0)
        layers[kernel] = RSA(channels, kernel_size=kernel).to(device)
    flops, times, mem = measure(layers, {k: x for k in layers})
    base = SCALING_KERNELS[0]
    header = (f'{"M":>6} {"|M|":>4} | {"MFLOPs":>9} {"xFLOPs":>6} | '
              f'{"RSA ms":>8} {"xtime":>6} | {"time/FLOP":>9} | '
              f'{"saved MB":>8}')
    rows, kernel_rows = [], []
    for kernel in SCALING_KERNELS:
        xflops = flops[kernel] / flops[base]
        xtime = times[kernel] / times[base]
        rows.append(f'{"x".join(map(str, kernel)):>6} '
                    f'{math.prod(kernel):>4} | {flops[kernel] / 1e6:9.1f} '
                    f'{xflops:6.2f} | {times[kernel]:8.1f} {xtime:6.2f} | '
                    f'{xtime / xflops:9.2f} | {mem[kernel]:8.1f}')
        kernel_rows.append(
            dict(kernel=kernel, flops=flops[kernel], ms=times[kernel],
                 saved_mb=mem[kernel]))
    report_table(bench.echo, [
        f'RSA layer vs context size M: C={channels}, {size}x{size}, '
        f'T={frames}, N={batch}, forward + backward',
        'MFLOPs: forward multiply-adds (mmrsa.models.utils.count_flops); '
        'x = relative to the first row; time/FLOP = xtime / xFLOPs'
    ], header, rows)

    # ---- positions ---------------------------------------------------- #
    sizes = sorted({max(size // 2, 1), size, size * 2})
    inputs = {s: clip(s) for s in sizes}
    layers = {}
    for s in sizes:
        torch.manual_seed(0)
        layers[s] = RSA(channels, kernel_size=POSITIONS_KERNEL).to(device)
    flops, times, mem = measure(layers, inputs)
    positions = {s: frames * s * s for s in sizes}
    base = sizes[0]
    header = (f'{"size":>7} {"THW":>7} | {"MFLOPs":>9} {"xFLOPs":>6} | '
              f'{"RSA ms":>8} {"xtime":>6} | {"us/pos":>7} {"xper-pos":>8} '
              f'| {"saved MB":>8}')
    rows, position_rows = [], []
    for s in sizes:
        per_pos = times[s] * 1e3 / (positions[s] * batch)
        per_pos_base = times[base] * 1e3 / (positions[base] * batch)
        rows.append(f'{f"{s}x{s}":>7} {positions[s]:>7} | '
                    f'{flops[s] / 1e6:9.1f} {flops[s] / flops[base]:6.2f} | '
                    f'{times[s]:8.1f} {times[s] / times[base]:6.2f} | '
                    f'{per_pos:7.2f} {per_pos / per_pos_base:8.2f} | '
                    f'{mem[s]:8.1f}')
        position_rows.append(
            dict(size=s, positions=positions[s], flops=flops[s],
                 ms=times[s], saved_mb=mem[s]))
    report_table(bench.echo, [
        f'RSA layer vs positions: C={channels}, T={frames}, N={batch}, '
        f'M={"x".join(map(str, POSITIONS_KERNEL))}, forward + backward',
        'us/pos: microseconds per position of one clip; x = relative to '
        'the first row'
    ], header, rows)
    return dict(kernel=kernel_rows, positions=position_rows)


def main(argv=None,
         echo: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Run the selected sections and return their measurements.

    Args:
        argv (list[str], optional): Command-line arguments.
        echo (callable, optional): Receives each line of the tables.
            Defaults to the ``mmrsa.benchmark`` logger's ``info``.
    """
    args = parse_args(argv)
    needs_stack = [name for name in args.sections if name != 'layer']
    if MISSING_STACK and needs_stack:
        sys.exit(
            f'The {" and ".join(needs_stack)} section'
            f'{"s need" if len(needs_stack) > 1 else " needs"} '
            f'{", ".join(MISSING_STACK)}, not installed here (the layer '
            f'section runs with torch alone). Install them, or, on a machine '
            f'without an index, install the wheels carried from one (pip '
            f'download --no-deps ... -d wheelhouse there; pip install '
            f'--no-index --find-links wheelhouse ... here: see the README, '
            f'"Benchmarks on a GPU machine").')
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args, echo)
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

    bench.echo(f'torch {torch.__version__}, device {bench.device}'
          f'{" (" + torch.cuda.get_device_name() + ")" if bench.cuda else ""}'
          f', threads {torch.get_num_threads()}, '
          f'AMP={"on (" + str(bench.amp_dtype) + ")" if args.amp else "off"}'
          f', median of {args.repeats} alternating rounds after '
          f'{args.warmup} warm-up, {args.pause:g} s pause before each call'
          + ('' if bench.cuda else f', malloc: {malloc}')
          + f', fused RSA kernel: {"yes" if fused else "no"}')
    sections = dict(layer=layer_section, model=model_section,
                    scaling=scaling_section)
    results = {}
    for name in args.sections:
        results[name] = sections[name](bench)
    return results
