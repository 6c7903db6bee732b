# Copyright (c) mmrsa contributors. All rights reserved.
"""Measure the RSA layer and RSANet-R50 against their convolutional peers.

The measurements behind ``tools/analysis_tools/benchmark_rsa.py`` (which
parses the options, formats and prints the tables); every function here
returns numbers. Three sections:

- layer (:func:`layer_section`): one RSA layer against the 1x3x3
  convolution it replaces, at the RSANet-R50 stage shapes (forward +
  backward, activation memory).
- model (:func:`model_section`): RSANet-R50 against MMAction2's TSN-R50 and
  TSM-R50, each a ``Recognizer2D`` with the same 174-class head and 8-frame
  clips: train step (forward with loss, backward), inference, activation
  memory, and RSANet-R50 with gradient checkpointing (``with_cp=True``)
  beside it.
- scaling (:func:`scaling_section`): one RSA layer against its context size
  M (the paper's Table 1 claims cost linear in M) and against the number of
  positions.

Everything is measured side by side in one process: after warm-up, the
candidates run in alternating order for ``repeats`` rounds and the median
time of each is reported (:func:`time_alternating`); ratios between
candidates are far less noisy than absolute times on a shared machine.

Memory is the bytes of tensors autograd keeps for the backward pass (the
activation memory of training, :func:`mmrsa.utils.memory.saved_bytes`); on
CUDA also the peak allocation (``torch.cuda.max_memory_allocated``).

The layer section needs torch alone: this module imports only torch and
mmrsa's torch-only modules at the top; the model and scaling sections need
the OpenMMLab stack (:data:`OPENMMLAB_STACK`).
"""
import copy
import importlib.util
import logging
from typing import (Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple)

import torch
import torch.nn as nn

from mmrsa.utils.memory import saved_bytes
from mmrsa.utils.timing import time_alternating

__all__ = [
    'OPENMMLAB_STACK', 'SECTIONS', 'STAGE_SHAPES', 'RSANET_CONFIG',
    'BASELINE_BACKBONES', 'SCALING_KERNELS', 'SCALING_SHAPE',
    'POSITIONS_KERNEL', 'missing_stack', 'time_alternating', 'Bench',
    'layer_paths', 'iter_layer_section', 'layer_section', 'forced',
    'layer_forward', 'layer_train_step', 'build_recognizers', 'model_section',
    'scaling_kernel_rows', 'scaling_position_rows', 'scaling_section',
    'saved_bytes'
]

#: What the model and scaling sections need beyond torch (import names of
#: MMEngine, MMCV(-lite) and MMAction2). The layer section needs torch alone.
OPENMMLAB_STACK = ('mmengine', 'mmcv', 'mmaction')

SECTIONS = ('layer', 'model', 'scaling')

#: The four RSANet-R50 stage shapes: (channels, spatial size).
STAGE_SHAPES = ((64, 56), (128, 28), (256, 14), (512, 7))

#: Model section: RSANet-R50 as configured for Something-Something V1 (a
#: config name, see :func:`mmrsa.apis.find_config`), and the backbones of
#: the two MMAction2 baselines it is compared with.
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

#: Scaling section: the context sizes M of the paper's Table 1 / 4e, the
#: default layer shape (channels, spatial size) and the M of the positions
#: sweep (the paper's default).
SCALING_KERNELS = ((3, 3, 3), (3, 5, 5), (3, 7, 7), (5, 7, 7), (5, 9, 9))
SCALING_SHAPE = (128, 28)
POSITIONS_KERNEL = (5, 7, 7)


def missing_stack() -> List[str]:
    """The packages of :data:`OPENMMLAB_STACK` that are not installed."""
    return [
        name for name in OPENMMLAB_STACK
        if importlib.util.find_spec(name) is None
    ]


class Bench:
    """What every section needs: the device, how to wait for it, how to
    autocast on it, and the timing options.

    Args:
        device (str | torch.device): Where to measure. Defaults to
            ``'cpu'``.
        amp (bool): Autocast (bf16 on CPU, fp16 on CUDA). Defaults to False.
        repeats (int): Alternating timed rounds (the median is reported).
            Defaults to 5.
        warmup (int): Untimed rounds first. Defaults to 1.
        pause (float): Idle seconds before each timed call, so that one
            candidate does not run in the wake of another. Defaults to 0.
    """

    def __init__(self,
                 device: Any = 'cpu',
                 *,
                 amp: bool = False,
                 repeats: int = 5,
                 warmup: int = 1,
                 pause: float = 0.0) -> None:
        self.device = torch.device(device)
        self.amp = amp
        self.repeats = repeats
        self.warmup = warmup
        self.pause = pause
        self.cuda = self.device.type == 'cuda'
        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.amp_dtype = torch.float16 if self.cuda else torch.bfloat16

    @property
    def native(self) -> bool:
        """Whether RSA layers run the native products here (the CPU, in
        float32 or under autocast, whose RSA transform is float32; the
        library built): then the sections also time them switched off."""
        from mmrsa.models.common.rsa_native import native_available
        return self.device.type == 'cpu' and native_available()

    def autocast(self) -> torch.autocast:
        """Autocast in the AMP dtype when ``amp`` is set, else a no-op."""
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def time(self, fns: Dict[str, Callable[[], None]]) -> Dict[str, float]:
        """:func:`time_alternating` with the bench's rounds and pause."""
        return time_alternating(fns, self.repeats, self.warmup, self.sync,
                                self.pause)

    def cuda_peak_mb(self, step: Callable[[], None]) -> float:
        """Peak CUDA allocation of ``step()`` above what was allocated
        before it, in MiB."""
        self.sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        self.sync()
        return (torch.cuda.max_memory_allocated() - base) / 2**20


# ---------------------------------------------------------------------- #
# layer section
# ---------------------------------------------------------------------- #
def layer_paths(device: Any,
                paths: Optional[Sequence[str]] = None) -> List[str]:
    """The implementations the layer section forces the RSA layer through,
    beside its automatic choice: ``paths`` when given, else ``['fused']``
    (the opt-in Triton kernel) where it can run (CUDA with Triton; the
    automatic choice there is ``plain``), else none."""
    if paths is not None:
        return list(paths)
    from mmrsa.models.common.rsa_triton import fused_available
    device = torch.device(device)
    return ['fused'
            ] if fused_available(device) and (device.type == 'cuda') else []


def iter_layer_section(
        bench: Bench,
        shapes: Sequence[Tuple[int, int]] = STAGE_SHAPES,
        *,
        frames: int = 8,
        batches: Sequence[int] = (1, ),
        reference: bool = False,
        compare: Optional[type] = None,
        paths: Optional[Sequence[str]] = None) -> Iterator[Dict[str, Any]]:
    """RSA against the 1x3x3 convolution (forward + backward of one layer)
    per batch size and shape, one result as soon as it is measured.

    Args:
        bench (Bench): Device and timing options.
        shapes (Sequence[tuple[int, int]]): (channels, spatial size) of each
            layer. Defaults to :data:`STAGE_SHAPES`.
        frames (int): T of the input clips. Defaults to 8.
        batches (Sequence[int]): Batch sizes N. Defaults to (1, ).
        reference (bool): Also time the literal Eq. 8 implementation
            (``'ref'``). Defaults to False.
        compare (type, optional): Another ``RSA`` class (e.g. the layer at
            another git revision) timed as ``'rev'`` with the same weights.
            Defaults to None.
        paths (Sequence[str], optional): Also time the layer forced through
            these implementations. Defaults to :func:`layer_paths`'s choice.

    Yields:
        dict: ``batch``, ``channels``, ``size``, ``frames``; ``ms`` and
        ``saved_mb`` (MiB saved for backward) per candidate (``'conv'``,
        ``'rsa'``, then ``'ref'``, ``'rev'`` and the forced paths; ``ms``
        also ``'rsa_torch'``, see below);
        ``infer_ms``: inference (``torch.no_grad``) of ``'conv'``,
        ``'rsa'`` and, with ``compare``, ``'rev'``; where the layer runs the
        native products
        (:attr:`Bench.native`) ``'rsa_torch'``, the layer without them;
        ``peak_mb`` (the RSA layer's CUDA peak, None off CUDA) and ``path``
        (the RSA layer's automatic implementation).
    """
    from mmrsa.models.common.rsa import RSA, force_path
    from mmrsa.models.common.rsa_reference import RSAReference
    device = bench.device
    paths = layer_paths(device, paths)
    for batch in batches:
        for channels, size in shapes:
            torch.manual_seed(0)
            # [N, C, T, H, W]
            x = torch.randn(
                batch,
                channels,
                frames,
                size,
                size,
                device=device,
                requires_grad=True)
            models = {
                'conv':
                nn.Conv3d(
                    channels,
                    channels, (1, 3, 3),
                    padding=(0, 1, 1),
                    bias=False),
                'rsa':
                RSA(channels),
            }
            if reference:
                models['ref'] = RSAReference(channels)
                models['ref'].load_state_dict(models['rsa'].state_dict())
            if compare is not None:
                models['rev'] = compare(channels)
                models['rev'].load_state_dict(models['rsa'].state_dict())
            models = {k: m.to(device) for k, m in models.items()}
            steps = {
                k: layer_train_step(bench, m, x)
                for k, m in models.items()
            }
            forwards = {
                k: layer_forward(bench, m, x)
                for k, m in models.items()
            }
            for path in paths:  # the same layer, forced through `path`
                steps[path] = forced(steps['rsa'], path, force_path)
                forwards[path] = forced(forwards['rsa'], path, force_path)
            native = bench.native
            if native:
                # the same layer with the per-position products in PyTorch
                steps['rsa_torch'] = without_native(steps['rsa'])
            times = bench.time(steps)
            inference = {
                k: layer_inference(bench, models[k], x)
                for k in ('conv', 'rsa', 'rev') if k in models
            }
            if native:
                inference['rsa_torch'] = without_native(inference['rsa'])
            infer_times = bench.time(inference)
            mem = {
                k: saved_bytes(forward) / 2**20
                for k, forward in forwards.items()
            }
            rsa = models['rsa']
            with bench.autocast():  # as the train step runs it
                auto_path = rsa.transform_path(x)
            peak = bench.cuda_peak_mb(steps['rsa']) if bench.cuda else None
            yield dict(
                batch=batch,
                channels=channels,
                size=size,
                frames=frames,
                ms=times,
                infer_ms=infer_times,
                saved_mb=mem,
                peak_mb=peak,
                path=auto_path)


def layer_section(
        bench: Bench,
        shapes: Sequence[Tuple[int, int]] = STAGE_SHAPES,
        *,
        frames: int = 8,
        batches: Sequence[int] = (1, ),
        reference: bool = False,
        compare: Optional[type] = None,
        paths: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """All results of :func:`iter_layer_section` (same arguments)."""
    return list(
        iter_layer_section(
            bench,
            shapes,
            frames=frames,
            batches=batches,
            reference=reference,
            compare=compare,
            paths=paths))


def forced(fn: Callable[[], Any], path: str,
           force_path: Callable[[str], Any]) -> Callable[[], Any]:
    """``fn`` run with every RSA layer forced through ``path``."""

    def run() -> Any:
        with force_path(path):
            return fn()

    return run


def without_native(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with the native RSA products switched off."""
    from mmrsa.models.common.rsa_native import disabled

    def run() -> Any:
        with disabled():
            return fn()

    return run


def layer_inference(bench: Bench, model: nn.Module,
                    x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A call of ``model(x)`` under ``torch.no_grad`` and the bench's
    autocast."""

    def run() -> torch.Tensor:
        with torch.no_grad(), bench.autocast():
            return model(x)

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
    TSM-R50 as ``Recognizer2D`` with the head of the RSANet config, built
    by :func:`mmrsa.apis.build_model` in training mode.

    Nothing is downloaded (no pretrained weights); each model is built
    after ``torch.manual_seed(0)`` and initialised by ``init_weights()``,
    and the two RSANet-R50 share their weights. The models take shaped
    float clips (no data preprocessor). MMEngine's initialisation log is
    silenced.

    Returns:
        tuple[dict, int, int]: The recognizers by name (on the CPU), frames
        per clip and the number of classes.
    """
    from mmrsa.apis.model import build_model, load_config

    cfg = load_config(RSANET_CONFIG)
    rsanet = cfg.model
    configs = {'RSANet-R50': cfg}
    with_cp = copy.deepcopy(cfg)
    with_cp.model.backbone.with_cp = True
    configs['RSANet-R50 cp'] = with_cp
    for name, backbone in BASELINE_BACKBONES.items():
        baseline = copy.deepcopy(cfg)
        baseline.model.backbone = copy.deepcopy(backbone)
        if 'num_segments' in baseline.model.backbone:  # TSM shifts in clips
            baseline.model.backbone.num_segments = (
                rsanet.backbone.num_segments)
        configs[name] = baseline

    logging.disable(logging.INFO)
    try:
        models = {}
        for name, config in configs.items():
            torch.manual_seed(0)
            models[name] = build_model(
                config,
                init_weights=True,
                data_preprocessor=False,
                eval_mode=False)
    finally:
        logging.disable(logging.NOTSET)
    models['RSANet-R50 cp'].load_state_dict(models['RSANet-R50'].state_dict())
    return (models, rsanet.backbone.num_segments, rsanet.cls_head.num_classes)


#: The model section's name for RSANet-R50 with its per-position products
#: in PyTorch (the native ones switched off).
TORCH_PRODUCTS = 'RSANet no nat.'


def model_section(bench: Bench,
                  batches: Sequence[int] = (1, ),
                  *,
                  input_size: int = 224) -> List[Dict[str, Any]]:
    """Train step, inference and activation memory of the recognizers of
    :func:`build_recognizers`.

    The train step is the real loss path of ``Recognizer2D``
    (``mode='loss'``: backbone, head, cross-entropy) and a backward pass,
    under the bench's autocast like MMEngine's ``AmpOptimWrapper``.
    Activation memory counts the tensors autograd saves, the weights
    excluded; with ``with_cp`` a checkpointed block saves nothing itself and
    keeps only its input, which is the output the preceding ReLU saves
    anyway, so the count stays exact up to the input of the first block.

    Args:
        bench (Bench): Device and timing options.
        batches (Sequence[int]): Batch sizes N (clips). Defaults to (1, ).
        input_size (int): Frame size. Defaults to 224.

    Where the layers run the native RSA products (:attr:`Bench.native`:
    the CPU in float32, the library built), RSANet-R50 is also
    timed without them (model :data:`TORCH_PRODUCTS`, the same network and
    weights), in the same rounds.

    Returns:
        list[dict]: Per batch size and model: ``model``, ``batch``,
        ``frames``, ``num_classes``, ``train_ms``, ``infer_ms`` (``None``
        for the checkpointed twin, whose inference is the same model),
        ``saved_mb`` and ``peak_mb`` (CUDA; None elsewhere).
    """
    from mmaction.structures import ActionDataSample
    device, cuda = bench.device, bench.cuda
    models, num_frames, num_classes = build_recognizers()
    models = {name: m.to(device) for name, m in models.items()}
    size = input_size
    results = []
    for batch in batches:
        torch.manual_seed(0)
        # [N, T, 3, H, W]
        inputs = torch.randn(batch, num_frames, 3, size, size, device=device)
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
        steps = {k: train_step(m) for k, m in models.items()}
        native = bench.native
        if native:
            # RSANet-R50 with the per-position products in PyTorch
            steps[TORCH_PRODUCTS] = without_native(steps['RSANet-R50'])
        train = bench.time(steps)
        saved = {
            k: saved_bytes(loss_of(m), exclude=m.parameters()) / 2**20
            for k, m in models.items()
        }
        if native:
            saved[TORCH_PRODUCTS] = saved_bytes(
                without_native(loss_of(models['RSANet-R50'])),
                exclude=models['RSANet-R50'].parameters()) / 2**20
        peak = ({
            k: bench.cuda_peak_mb(train_step(m))
            for k, m in models.items()
        } if cuda else {})
        for model in models.values():
            model.eval()
        inference = {
            k: infer(m)
            for k, m in models.items() if k != 'RSANet-R50 cp'
        }
        if native:
            inference[TORCH_PRODUCTS] = without_native(inference['RSANet-R50'])
        infer_ms: Dict[str, Optional[float]] = dict(bench.time(inference))
        infer_ms['RSANet-R50 cp'] = None
        for name in train:
            results.append(
                dict(
                    model=name,
                    batch=batch,
                    frames=num_frames,
                    num_classes=num_classes,
                    train_ms=train[name],
                    infer_ms=infer_ms[name],
                    saved_mb=saved[name],
                    peak_mb=peak.get(name)))
    return results


# ---------------------------------------------------------------------- #
# scaling section
# ---------------------------------------------------------------------- #
def _measure_layers(
    bench: Bench, layers: Dict[Any, nn.Module], inputs: Dict[Any, torch.Tensor]
) -> Tuple[Dict[Any, int], Dict[Any, float], Dict[Any, float]]:
    """Forward FLOPs, median forward + backward ms and MiB saved for
    backward of each layer on its input."""
    from mmrsa.models.utils import count_flops
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


def _clip(bench: Bench, batch: int, channels: int, frames: int,
          spatial: int) -> torch.Tensor:
    """A seeded ``[N, C, T, S, S]`` input that requires grad."""
    torch.manual_seed(0)
    return torch.randn(
        batch,
        channels,
        frames,
        spatial,
        spatial,
        device=bench.device,
        requires_grad=True)


def scaling_kernel_rows(
    bench: Bench,
    shape: Tuple[int, int] = SCALING_SHAPE,
    *,
    frames: int = 8,
    batch: int = 1,
    kernels: Sequence[Tuple[int, int, int]] = (SCALING_KERNELS)
) -> List[Dict[str, Any]]:
    """One RSA layer of ``shape`` (channels, size) per context size M.

    Returns:
        list[dict]: Per kernel: ``kernel``, ``flops`` (forward
        multiply-adds, :func:`mmrsa.models.utils.count_flops`), ``ms``
        (forward + backward) and ``saved_mb``.
    """
    from mmrsa.models.common import RSA
    channels, size = shape
    x = _clip(bench, batch, channels, frames, size)
    layers = {}
    for kernel in kernels:
        torch.manual_seed(0)
        layers[kernel] = RSA(channels, kernel_size=kernel).to(bench.device)
    flops, times, mem = _measure_layers(bench, layers, {k: x for k in layers})
    return [
        dict(
            kernel=kernel,
            flops=flops[kernel],
            ms=times[kernel],
            saved_mb=mem[kernel]) for kernel in kernels
    ]


def scaling_position_rows(
        bench: Bench,
        shape: Tuple[int, int] = SCALING_SHAPE,
        *,
        frames: int = 8,
        batch: int = 1,
        kernel: Tuple[int, int,
                      int] = POSITIONS_KERNEL) -> List[Dict[str, Any]]:
    """One RSA layer with ``shape[0]`` channels at half, once and twice the
    spatial size ``shape[1]``.

    Returns:
        list[dict]: Per spatial size, ascending: ``size``, ``positions``
        (T x size x size of one clip), ``flops``, ``ms`` and ``saved_mb``.
    """
    from mmrsa.models.common import RSA
    channels, size = shape
    sizes = sorted({max(size // 2, 1), size, size * 2})
    inputs = {s: _clip(bench, batch, channels, frames, s) for s in sizes}
    layers = {}
    for s in sizes:
        torch.manual_seed(0)
        layers[s] = RSA(channels, kernel_size=kernel).to(bench.device)
    flops, times, mem = _measure_layers(bench, layers, inputs)
    return [
        dict(
            size=s,
            positions=frames * s * s,
            flops=flops[s],
            ms=times[s],
            saved_mb=mem[s]) for s in sizes
    ]


def scaling_section(bench: Bench,
                    shape: Tuple[int, int] = SCALING_SHAPE,
                    *,
                    frames: int = 8,
                    batch: int = 1) -> Dict[str, List[Dict[str, Any]]]:
    """Time, FLOPs and activation memory of one RSA layer against its
    context size M (:data:`SCALING_KERNELS`), then against the number of
    positions (at :data:`POSITIONS_KERNEL`).

    Returns:
        dict: ``'kernel'`` (:func:`scaling_kernel_rows`) and
        ``'positions'`` (:func:`scaling_position_rows`).
    """
    return dict(
        kernel=scaling_kernel_rows(bench, shape, frames=frames, batch=batch),
        positions=scaling_position_rows(
            bench, shape, frames=frames, batch=batch))
