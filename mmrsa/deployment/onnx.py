# Copyright (c) mmrsa contributors. All rights reserved.
"""Export a recognizer to ONNX and check the file with onnxruntime.

The exported graph maps a clip tensor to the raw class scores, what
``cls_head`` returns before MMAction2 averages clips (``average_clips``,
e.g. a softmax)::

    clip [N, T, C, H, W]  (or frames [N*T, C, H, W])
      -> backbone (frames) -> cls_head (consensus over T)
      -> scores [N, num_classes]

The input is the normalised clip, i.e. what the config's
``data_preprocessor`` makes of the decoded frames (mean/std are written
into the file's metadata); the batch axis ``N`` is dynamic.

Two exporters of ``torch.onnx.export`` are supported: ``'dynamo'`` (the
``torch.export``-based one, PyTorch's default) and ``'legacy'`` (the
TorchScript-based one, ``dynamo=False``, which mmdeploy calls). The
optional packages ``onnx``, ``onnxruntime`` and (for ``'dynamo'``)
``onnxscript`` are imported only here.

Both exporters record the RSA layers in the form onnxruntime runs fastest
(:func:`mmrsa.models.common.rsa_ops.export_channel_conv3d`: positions
first, the value's single-channel filters as one 2D convolution with the
temporal taps as input channels, ``H1`` as one grouped ``conv3d``), with the
multiply-adds and, within rounding, the outputs of eager PyTorch.
"""
import os.path as osp
import statistics
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config

__all__ = [
    'EXPORTERS', 'ClipClassifier', 'build_clip_classifier',
    'default_input_shape', 'export_onnx', 'check_onnx', 'onnx_session',
    'time_onnx', 'benchmark_onnx', 'summarize_times', 'export_config',
    'profile_onnx', 'store_shapes'
]

#: The exporters of :func:`export_onnx`.
EXPORTERS = ('dynamo', 'legacy')

INPUT_NAME = 'clip'
OUTPUT_NAME = 'scores'


class ClipClassifier(nn.Module):
    """A recognizer as a plain module: clip in, raw class scores out.

    Args:
        recognizer (nn.Module): An MMAction2 ``Recognizer2D`` (``backbone``
            and ``cls_head``), in eval mode for export.
        num_segments (int): Frames per clip ``T``; used to group a
            ``[N*T, C, H, W]`` input into clips.
    """

    def __init__(self, recognizer: nn.Module, num_segments: int) -> None:
        super().__init__()
        if num_segments < 1:
            raise ValueError(
                f'num_segments must be positive, got {num_segments}.')
        self.recognizer = recognizer
        self.num_segments = num_segments

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """Raw class scores of a batch of clips.

        Args:
            clip (torch.Tensor): ``[N, T, C, H, W]`` or ``[N*T, C, H, W]``,
                normalised as the config's ``data_preprocessor`` does.

        Returns:
            torch.Tensor: ``[N, num_classes]``, before softmax.
        """
        if clip.dim() == 4:
            # [N*T, C, H, W] -> [N, T, C, H, W]
            clip = clip.reshape((-1, self.num_segments) + clip.shape[1:])
        elif clip.dim() != 5:
            raise ValueError(f'expected a clip [N, T, C, H, W] or frames '
                             f'[N*T, C, H, W], got {tuple(clip.shape)}.')
        feats, kwargs = self.recognizer.extract_feat(clip, test_mode=True)
        return self.recognizer.cls_head(feats, **kwargs)


def _clip_length(cfg: Config) -> int:
    """Frames per clip: the backbone's ``num_segments``, else the test
    pipeline's ``clip_len * num_clips``."""
    segments = cfg.model.get('backbone', {}).get('num_segments')
    if segments:
        return int(segments)
    for step in cfg.get('test_pipeline', []):
        if step['type'] == 'SampleFrames':
            return int(step.get('clip_len', 1) * step.get('num_clips', 1))
    raise ValueError('cannot tell the clip length: the config has neither '
                     'model.backbone.num_segments nor a SampleFrames step.')


def default_input_shape(cfg: Config) -> Tuple[int, int, int, int, int]:
    """``(1, T, 3, S, S)``: one clip of the config's test crop size ``S``
    (``CenterCrop``, or 224 when the test pipeline has none)."""
    size = 224
    for step in cfg.get('test_pipeline', []):
        if step['type'] in ('CenterCrop', 'ThreeCrop', 'TenCrop'):
            crop = step['crop_size']
            size = crop if isinstance(crop, int) else crop[0]
    return (1, _clip_length(cfg), 3, int(size), int(size))


def build_clip_classifier(
        config: Union[str, Config],
        checkpoint: Optional[str] = None,
        cfg_options: Optional[dict] = None) -> Tuple[ClipClassifier, Config]:
    """The recognizer of ``config`` as a :class:`ClipClassifier` in eval
    mode, on the CPU.

    Args:
        config (str | Config): A recognizer config.
        checkpoint (str, optional): Weights, loaded with the architecture
            check of :func:`mmrsa.engine.load_checkpoint_strictly` (and
            ``weights_only`` unless trusted). Without one the weights are
            the initial ones and no ImageNet weights are fetched (for
            timing and tests). Defaults to None.
        cfg_options (dict, optional): Overrides merged into the config.
            Defaults to None.

    Returns:
        tuple[ClipClassifier, Config]: The module and the config.
    """
    from mmrsa.apis.model import build_model, load_config

    cfg = load_config(config, cfg_options)
    # no ImageNet download: the weights are the checkpoint's, or random
    model = build_model(cfg, checkpoint)
    module = ClipClassifier(model, _clip_length(cfg)).eval()
    return module, cfg


def _trace_input(shape: Sequence[int]) -> torch.Tensor:
    """A random example of ``shape`` with at least 2 clips: an exporter
    specialises a batch axis it sees with size 1."""
    shape = list(shape)
    if shape[0] < 2:
        shape[0] = 2 if len(shape) == 5 else 2 * shape[0]
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def _metadata(cfg: Config, module: ClipClassifier,
              shape: Sequence[int]) -> Dict[str, str]:
    pre = cfg.model.get('data_preprocessor', {})
    layout = 'N,T,C,H,W' if len(shape) == 5 else 'N*T,C,H,W'
    return {
        'input_layout': layout,
        'num_segments': str(module.num_segments),
        'mean': str(list(pre.get('mean', []))),
        'std': str(list(pre.get('std', []))),
        'output': 'raw cls_head scores [N, num_classes], before softmax',
    }


def export_onnx(module: ClipClassifier,
                path: str,
                shape: Sequence[int],
                exporter: str = 'dynamo',
                opset: Optional[int] = None,
                metadata: Optional[Dict[str, str]] = None) -> str:
    """Export ``module`` to ``path`` with a dynamic batch axis.

    Args:
        module (ClipClassifier): The model, in eval mode.
        path (str): The ``.onnx`` file written.
        shape (Sequence[int]): Input shape, ``(N, T, C, H, W)`` or
            ``(N*T, C, H, W)``; every axis but the first is fixed.
        exporter (str): ``'dynamo'`` or ``'legacy'`` (TorchScript-based,
            ``dynamo=False``). Defaults to ``'dynamo'``.
        opset (int, optional): ONNX opset; None for the exporter's
            default (17 for ``'legacy'``). Defaults to None.
        metadata (dict, optional): Strings stored in the file's
            ``metadata_props``. Defaults to None.

    Returns:
        str: ``path``.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f'exporter must be one of {EXPORTERS}, '
                         f'got {exporter!r}.')
    if len(shape) not in (4, 5) or min(shape) < 1:
        raise ValueError(f'shape must be (N, T, C, H, W) or (N*T, C, H, W) '
                         f'with positive sizes, got {tuple(shape)}.')
    if len(shape) == 5 and shape[1] != module.num_segments:
        raise ValueError(f'the model takes clips of T={module.num_segments} '
                         f'frames, the shape says T={shape[1]}.')
    if len(shape) == 4 and shape[0] % module.num_segments:
        raise ValueError(f'{shape[0]} frames are not whole clips of '
                         f'T={module.num_segments} frames.')
    if module.training:
        raise ValueError('export the model in eval mode (module.eval()).')
    example = _trace_input(shape)
    batch_unit = 1 if len(shape) == 5 else module.num_segments
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        if exporter == 'legacy':
            # chosen on purpose: what mmdeploy calls
            warnings.filterwarnings(
                'ignore',
                message='You are using the legacy TorchScript-based',
                category=DeprecationWarning)
            torch.onnx.export(
                module, (example, ),
                path,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    INPUT_NAME: {
                        0: 'batch'
                    },
                    OUTPUT_NAME: {
                        0: 'batch'
                    }
                },
                opset_version=17 if opset is None else opset)
        else:
            batch = torch.export.Dim('batch', min=1)
            # frames: the batch is a multiple of the clip length
            batch_dim = batch if batch_unit == 1 else batch_unit * batch
            kwargs = {} if opset is None else dict(opset_version=opset)
            program = torch.onnx.export(
                module, (example, ),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({
                    0: batch_dim
                }, ),
                verbose=False,
                **kwargs)
            program.save(path)
    store_shapes(path)
    if metadata:
        import onnx
        model = onnx.load(path)
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, path)
    return path


def store_shapes(path: str) -> None:
    """Write the shape of every tensor of the graph into the ``.onnx``
    file, batch axis included (ONNX shape inference with data propagation,
    which follows the sizes through ``Shape``, ``Concat`` and ``Reshape``).

    The TorchScript-based exporter leaves the shapes after a reshape
    unknown. onnxruntime can then not tell that a residual block's two
    branches have the same batch size, and neither adds them in its
    convolution nor plans their memory (see docs/benchmarks.md, "onnxruntime:
    the shapes in the file"). Where inference fails the file is left as it
    is, with a warning: it runs, only slower.

    Args:
        path (str): The ``.onnx`` file, rewritten in place.
    """
    import onnx
    try:
        onnx.shape_inference.infer_shapes_path(path, path, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError) as error:
        warnings.warn(
            f'the shapes of {path} could not be inferred ({error}); the '
            f'file is correct, but onnxruntime may run it slower.')


def onnx_session(path: str,
                 threads: Optional[int] = None,
                 spinning: bool = True):
    """An onnxruntime CPU session of ``path``.

    Args:
        path (str): The ``.onnx`` file.
        threads (int, optional): Intra-op threads; None for onnxruntime's
            default. Defaults to None.
        spinning (bool): Whether idle worker threads spin. Turn it off when
            other work runs between the session's runs (it would compete
            with the spinning threads). Defaults to True.
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry('session.intra_op.allow_spinning',
                                         '0')
    return ort.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])


def check_onnx(
    path: str,
    module: ClipClassifier,
    shape: Sequence[int],
    batches: Sequence[int] = (1, 3)) -> Dict[int, float]:
    """Max absolute difference between onnxruntime and eager PyTorch.

    Args:
        path (str): The exported file.
        module (ClipClassifier): The eager model it was exported from.
        shape (Sequence[int]): The export shape; its batch axis is replaced
            by each of ``batches`` (clips).
        batches (Sequence[int]): Batch sizes checked. Defaults to (1, 3).

    Returns:
        dict[int, float]: ``{batch: max |onnx - eager|}``.
    """
    session = onnx_session(path)
    unit = 1 if len(shape) == 5 else module.num_segments
    generator = torch.Generator().manual_seed(1)
    diffs = {}
    for batch in batches:
        clip = torch.randn(
            (batch * unit, ) + tuple(shape[1:]), generator=generator)
        with torch.no_grad():
            expected = module(clip).numpy()
        (got, ) = session.run([OUTPUT_NAME], {INPUT_NAME: clip.numpy()})
        if got.shape != expected.shape:
            raise RuntimeError(f'{path} returns {got.shape} for a batch of '
                               f'{batch}, eager PyTorch {expected.shape}.')
        diffs[batch] = float(np.abs(got - expected).max())
    return diffs


def profile_onnx(path: str,
                 shape: Sequence[int],
                 *,
                 threads: Optional[int] = None,
                 runs: int = 3) -> List[Tuple[str, float, int]]:
    """Where onnxruntime spends its time: the node times of its profiler
    (``SessionOptions.enable_profiling``), summed per operator type.

    Args:
        path (str): The ``.onnx`` file.
        shape (Sequence[int]): Input shape.
        threads (int, optional): Intra-op threads. Defaults to None.
        runs (int): Runs counted, after one that is not. Defaults to 3.

    Returns:
        list[tuple[str, float, int]]: ``(op type, ms per run, nodes)``, the
        slowest first.
    """
    import json
    import os
    import tempfile

    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.enable_profiling = True
    feed = {INPUT_NAME: _random_clip(shape)}
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, 'profile')
        session = ort.InferenceSession(
            path, options, providers=['CPUExecutionProvider'])
        for _ in range(runs + 1):  # the first run is not counted
            session.run([OUTPUT_NAME], feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    starts = sorted(
        event['ts'] for event in events
        if event.get('cat') == 'Session' and event['name'] == 'model_run')
    if len(starts) < 2:
        raise RuntimeError('onnxruntime recorded no profiled model run.')
    totals: Dict[str, float] = {}
    nodes: Dict[str, set] = {}
    for event in events:
        if (event.get('cat') == 'Node' and event['ts'] >= starts[1]
                and event['name'].endswith('_kernel_time')):
            op = event['args']['op_name']
            totals[op] = totals.get(op, 0.0) + event['dur'] / 1e3
            nodes.setdefault(op, set()).add(event['name'])
    return sorted(((op, ms / (len(starts) - 1), len(nodes[op]))
                   for op, ms in totals.items()),
                  key=lambda row: -row[1])


def _random_clip(shape: Sequence[int]) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def time_onnx(path: str,
              shape: Sequence[int],
              *,
              threads: Optional[int] = None,
              warmup: int = 2,
              runs: int = 10) -> List[float]:
    """Wall times (ms) of ``runs`` onnxruntime CPU runs of ``path`` on a
    random input of ``shape``, after ``warmup`` untimed runs."""
    session = onnx_session(path, threads)
    feed = {INPUT_NAME: _random_clip(shape)}
    for _ in range(warmup):
        session.run([OUTPUT_NAME], feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run([OUTPUT_NAME], feed)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def benchmark_onnx(configs: Sequence[str],
                   work_dir: str,
                   shape: Optional[Sequence[int]] = None,
                   *,
                   exporter: str = 'legacy',
                   opset: Optional[int] = None,
                   threads: Optional[int] = None,
                   warmup: int = 2,
                   rounds: int = 10,
                   eager: bool = False) -> List[Dict]:
    """onnxruntime CPU latency of several recognizers, side by side.

    Each config is built with its initial weights (latency does not depend
    on their values), exported to ``work_dir`` and checked against eager
    PyTorch; then, after ``warmup`` runs of each, the models run one after
    the other for ``rounds`` rounds, so that every model sees the same
    machine load, and the median of each is reported.

    Args:
        configs (Sequence[str]): Recognizer configs.
        work_dir (str): Where the ``.onnx`` files are written.
        shape (Sequence[int], optional): Input shape of every model; None
            for each config's :func:`default_input_shape`. Defaults to None.
        exporter (str): See :func:`export_onnx`. Defaults to ``'legacy'``.
        opset (int, optional): See :func:`export_onnx`. Defaults to None.
        threads (int, optional): onnxruntime intra-op threads (and torch
            threads for ``eager``); None for the libraries' defaults.
            Defaults to None.
        warmup (int): Untimed runs of each model. Defaults to 2.
        rounds (int): Timed runs of each model. Defaults to 10.
        eager (bool): Also time eager PyTorch (``torch.no_grad``) in the
            same rounds; where the native RSA products are built, once with
            them (``eager_ms``) and once without (``eager_torch_ms``, see
            :mod:`mmrsa.models.common.rsa_native`). Defaults to False.

    Returns:
        list[dict]: Per config: ``config``, ``path``, ``shape``,
        ``export_s``, ``max_abs_diff``, ``onnx_ms`` (median, min, max of
        the rounds) and, with ``eager``, ``eager_ms`` (and
        ``eager_torch_ms``).
    """
    import os

    from mmrsa.models.common import rsa_native
    os.makedirs(work_dir, exist_ok=True)
    if threads is not None:
        torch.set_num_threads(threads)
    rows, runners = [], []
    for config in configs:
        module, cfg = build_clip_classifier(config)
        clip_shape = tuple(
            default_input_shape(cfg) if shape is None else shape)
        name = osp.splitext(osp.basename(config))[0]
        path = osp.join(work_dir, f'{name}_{exporter}.onnx')
        start = time.perf_counter()
        export_onnx(module, path, clip_shape, exporter, opset,
                    _metadata(cfg, module, clip_shape))
        export_s = time.perf_counter() - start
        rows.append(
            dict(
                config=config,
                path=path,
                shape=clip_shape,
                export_s=export_s,
                max_abs_diff=check_onnx(
                    path, module, clip_shape, batches=(clip_shape[0], ))))
        # no spinning threads: the models run in turn
        session = onnx_session(path, threads, spinning=False)
        feed = {INPUT_NAME: _random_clip(clip_shape)}
        runners.append([('onnx_ms',
                         lambda s=session, f=feed: s.run([OUTPUT_NAME], f))])
        if eager:
            clip = torch.from_numpy(feed[INPUT_NAME])

            def run_eager(m=module, x=clip):
                with torch.no_grad():
                    m(x)

            runners[-1].append(('eager_ms', run_eager))
            if rsa_native.native_available():

                def run_eager_torch(m=module, x=clip):
                    with torch.no_grad(), rsa_native.disabled():
                        m(x)

                runners[-1].append(('eager_torch_ms', run_eager_torch))
    for jobs in runners:
        for _, job in jobs:
            for _ in range(warmup):
                job()
    times = [{key: [] for key, _ in jobs} for jobs in runners]
    for _ in range(rounds):
        for jobs, row_times in zip(runners, times):
            for key, job in jobs:
                start = time.perf_counter()
                job()
                row_times[key].append((time.perf_counter() - start) * 1e3)
    for row, row_times in zip(rows, times):
        for key, values in row_times.items():
            row[key] = summarize_times(values)
    return rows


def summarize_times(times: Sequence[float]) -> Dict[str, float]:
    """Median, min and max of a list of times (ms)."""
    return dict(
        median=statistics.median(times), min=min(times), max=max(times))


def export_config(config: Union[str, Config],
                  out: str,
                  checkpoint: Optional[str] = None,
                  shape: Optional[Sequence[int]] = None,
                  exporter: str = 'dynamo',
                  opset: Optional[int] = None,
                  cfg_options: Optional[dict] = None,
                  check: bool = True) -> Dict:
    """Build, export and check: what ``tools/deployment/export_onnx.py``
    does.

    Returns:
        dict: ``path``, ``shape``, ``exporter``, ``num_classes``,
        ``export_s`` (seconds) and, with ``check``, ``max_abs_diff``
        (:func:`check_onnx`).
    """
    module, cfg = build_clip_classifier(config, checkpoint, cfg_options)
    shape = tuple(default_input_shape(cfg) if shape is None else shape)
    start = time.perf_counter()
    export_onnx(module, out, shape, exporter, opset,
                _metadata(cfg, module, shape))
    report = dict(
        path=osp.abspath(out),
        shape=shape,
        exporter=exporter,
        export_s=time.perf_counter() - start,
        num_classes=int(cfg.model.cls_head.num_classes))
    if check:
        report['max_abs_diff'] = check_onnx(out, module, shape)
    return report
