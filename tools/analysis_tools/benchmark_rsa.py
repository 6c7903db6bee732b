# Copyright (c) mmrsa contributors. All rights reserved.
"""Benchmark the RSA layer against the 1x3x3 convolution it replaces.

Everything is measured side by side in one process: after warm-up, the
candidates run in alternating order for ``--repeats`` rounds and the median
time of each is reported, with the ratio to the convolution (ratios are far
less noisy than absolute times on a shared machine).

Memory is reported as the bytes of tensors autograd keeps for the backward
pass (the activation memory of training, counted with
``torch.autograd.graph.saved_tensors_hooks``); on CUDA also the peak
allocation (``torch.cuda.max_memory_allocated``).

Examples::

    python tools/analysis_tools/benchmark_rsa.py               # 4 stage shapes
    python tools/analysis_tools/benchmark_rsa.py --quick       # fewer repeats
    python tools/analysis_tools/benchmark_rsa.py --reference   # + literal Eq. 8
    python tools/analysis_tools/benchmark_rsa.py --compare-impl HEAD  # A/B
    python tools/analysis_tools/benchmark_rsa.py --device cuda --amp

``--compare-impl REV`` loads the layer (``rsa.py`` and, where it exists,
``rsa_ops.py``) as committed at git revision ``REV`` and times it beside the
working tree's, with the same weights, to measure a change of the layer.
"""
import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn

# the four RSANet-R50 stage shapes: (channels, spatial size)
STAGE_SHAPES = ((64, 56), (128, 28), (256, 14), (512, 7))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--shapes', nargs='+', default=None, metavar='C@S',
        help='layer shapes as channels@size, e.g. 64@56 128@28 '
        '(default: the four RSANet-R50 stages)')
    parser.add_argument('--frames', type=int, default=8, help='T')
    parser.add_argument('--batch', type=int, nargs='+', default=[1],
                        help='batch sizes N')
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
    parser.add_argument('--quick', action='store_true',
                        help='1 warm-up round and 3 timed rounds')
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
    if args.repeats < 1:
        parser.error('--repeats must be >= 1')
    if args.pause < 0:
        parser.error('--pause must be >= 0')
    shapes = []
    for item in args.shapes or [f'{c}@{s}' for c, s in STAGE_SHAPES]:
        try:
            c, s = (int(v) for v in item.split('@'))
        except ValueError:
            parser.error(f'--shapes takes channels@size (e.g. 64@56), got '
                         f'{item!r}')
        shapes.append((c, s))
    args.shapes = shapes
    return args


def load_committed_rsa(rev: str) -> type:
    """The ``RSA`` class of ``mmrsa/models/common`` at git revision ``rev``.

    ``rsa.py`` and ``rsa_ops.py`` (when the revision has it) are written to a
    temporary package and imported from there.
    """
    package = Path(tempfile.mkdtemp(prefix='rsa_rev_')) / 'rsa_rev'
    package.mkdir()
    (package / '__init__.py').write_text('')
    for name in ('rsa.py', 'rsa_ops.py'):
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


def saved_bytes(step: Callable[[], torch.Tensor]) -> int:
    """Bytes of distinct tensors saved for backward during ``step()``."""
    seen: Dict[Tuple[int, int], int] = {}

    def pack(t: torch.Tensor):
        key = (t.untyped_storage().data_ptr(), t.device.index or 0)
        seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = step()
    del out
    return sum(seen.values())


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


def main(argv=None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, '.')
    from mmrsa.models.common import RSA, RSAReference

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    if cuda and not torch.cuda.is_available():
        sys.exit('--device cuda was given but CUDA is not available here.')
    committed = (load_committed_rsa(args.compare_impl)
                 if args.compare_impl else None)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    amp_dtype = torch.float16 if cuda else torch.bfloat16

    print(f'torch {torch.__version__}, device {device}'
          f'{" (" + torch.cuda.get_device_name() + ")" if cuda else ""}, '
          f'threads {torch.get_num_threads()}, T={args.frames}, '
          f'AMP={"on (" + str(amp_dtype) + ")" if args.amp else "off"}, '
          f'median of {args.repeats} alternating rounds, '
          f'{args.pause:g} s pause before each call')
    header = (f'{"layer":>12} {"N":>2} | {"conv ms":>8} {"RSA ms":>8} '
              f'{"RSA/conv":>8}')
    if args.reference:
        header += f' {"ref ms":>8} {"ref/RSA":>7}'
    if committed:
        header += f' {"rev ms":>8} {"rev/RSA":>7}'
    header += f' | {"conv MB":>7} {"RSA MB":>7}'
    if args.reference:
        header += f' {"ref MB":>7}'
    if committed:
        header += f' {"rev MB":>7}'
    if cuda:
        header += f' {"RSA peak MB":>11}'
    if committed:
        print(f'rev = the RSA layer at git revision {args.compare_impl}')
    print('forward + backward, one layer')
    print(header)
    print('-' * len(header))
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

            def forward(model):

                def run():
                    with torch.autocast(device.type, dtype=amp_dtype,
                                        enabled=args.amp):
                        return model(x).float().sum()

                return run

            def train_step(model):

                def run():
                    forward(model)().backward()
                    x.grad = None
                    model.zero_grad(set_to_none=True)

                return run

            times = time_alternating(
                {k: train_step(m) for k, m in models.items()}, args.repeats,
                args.warmup, sync, args.pause)
            mem = {k: saved_bytes(forward(m)) / 2**20
                   for k, m in models.items()}
            row = (f'{channels:>5}@{size:<3}T{args.frames:<2} {batch:>2} | '
                   f'{times["conv"]:8.1f} {times["rsa"]:8.1f} '
                   f'{times["rsa"] / times["conv"]:8.2f}')
            if args.reference:
                row += (f' {times["ref"]:8.1f} '
                        f'{times["ref"] / times["rsa"]:7.2f}')
            if committed:
                row += (f' {times["rev"]:8.1f} '
                        f'{times["rev"] / times["rsa"]:7.2f}')
            row += f' | {mem["conv"]:7.1f} {mem["rsa"]:7.1f}'
            if args.reference:
                row += f' {mem["ref"]:7.1f}'
            if committed:
                row += f' {mem["rev"]:7.1f}'
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                train_step(models['rsa'])()
                sync()
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20
                row += f' {peak:11.1f}'
            print(row, flush=True)


if __name__ == '__main__':
    main()
