# Copyright (c) mmrsa contributors. All rights reserved.
"""GFLOPs and parameters of a config, counted as the RSA paper counts them.

One FLOP is one fused multiply-add; batch normalisation is not counted (it
folds into the convolution before it at inference), nor are element-wise ops
and pooling. The count is for **one clip** (one view): ``T x 3 x 224 x 224``
for the paper's recipes, with ``T`` the backbone's ``num_segments``. The
parameters include the classifier. Counting is done by
:func:`mmrsa.models.utils.recognizer_complexity` (MMEngine's
``FlopAnalyzer``); this module reads the clip shape and the test views from
a config, keeps counts in a cache, and counts the static transforms of the
paper's Table 2 (:class:`FrameConv3d`).
"""
import hashlib
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config

from ..apis.model import build_model, load_config
from ..fileio.atomic import write_atomic
from ..models.utils import recognizer_complexity

__all__ = [
    'load_config', 'build_recognizer', 'config_frames', 'config_frame_size',
    'views_per_video', 'clip_shape_from_args', 'FrameConv3d',
    'swap_block_conv', 'ComplexityCounter', 'config_complexity', 'flops_table'
]

_PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))


# ---------------------------------------------------------------------- #
# building and counting
# ---------------------------------------------------------------------- #
def build_recognizer(cfg: Config) -> nn.Module:
    """The config's model, without downloading any pretrained weights.

    Weights do not change the counts, so ``backbone.pretrained`` and every
    ``init_cfg`` are dropped and the model is never initialised
    (:func:`mmrsa.apis.build_model`).
    """
    return build_model(cfg, eval_mode=False)


def config_frames(cfg: Config) -> int:
    """Frames per clip T: the backbone's ``num_segments``, else the test
    pipeline's ``SampleFrames`` (``num_clips * clip_len``), else 8."""
    backbone = cfg.model.get('backbone', {})
    if backbone.get('num_segments'):
        return int(backbone['num_segments'])
    sampler = _test_sampler(cfg)
    if sampler is not None:
        return int(sampler.get('num_clips', 1) * sampler.get('clip_len', 1))
    return 8


def _test_pipeline(cfg: Config) -> List[Dict]:
    pipeline = cfg.get('test_dataloader', {}).get(
        'dataset', {}).get('pipeline') or cfg.get('test_pipeline') or []
    return [step for step in pipeline if isinstance(step, dict)]


def _test_sampler(cfg: Config) -> Optional[Dict]:
    for step in _test_pipeline(cfg):
        if step.get('type') in ('SampleFrames', 'UntrimmedSampleFrames'):
            return step
    return None


def config_frame_size(cfg: Config) -> Tuple[int, int]:
    """``(H, W)`` of the test crops (``CenterCrop`` / ``ThreeCrop`` /
    ``TenCrop``), else ``(224, 224)``."""
    for step in _test_pipeline(cfg):
        if step.get('type') in ('CenterCrop', 'ThreeCrop', 'TenCrop'):
            size = step.get('crop_size', 224)
            if isinstance(size, int):
                return (size, size)
            width, height = size  # MMAction2 crop sizes are (w, h)
            return (int(height), int(width))
    return (224, 224)


def views_per_video(cfg: Config) -> Tuple[int, int]:
    """``(clips, crops)`` a test video is scored on: ``twice_sample`` gives
    2 clips, ``ThreeCrop`` / ``TenCrop`` give 3 / 10 crops."""
    sampler = _test_sampler(cfg)
    clips = 2 if sampler is not None and sampler.get('twice_sample') else 1
    crops = 1
    for step in _test_pipeline(cfg):
        crops = {'ThreeCrop': 3, 'TenCrop': 10}.get(step.get('type'), crops)
    return clips, crops


def clip_shape_from_args(cfg: Config,
                         shape: Optional[Sequence[int]]) -> Tuple[int, ...]:
    """``--shape`` (``T 3 H W``, ``H W`` or ``S``) -> one clip's shape;
    without it, ``T x 3 x H x W`` with the test crop size of the config."""
    frames = config_frames(cfg)
    if not shape:
        return (frames, 3) + config_frame_size(cfg)
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        return (frames, 3, shape[0], shape[0])
    if len(shape) == 2:
        return (frames, 3) + shape
    if len(shape) == 4:
        return shape
    raise ValueError(
        f'--shape {" ".join(map(str, shape))}: give one clip without the '
        f'batch dimension, "T 3 H W" (e.g. 8 3 224 224), or the frame size '
        f'"H W" or "S" (T is then {frames}, from the config).')


class FrameConv3d(nn.Module):
    """Static spatio-temporal convolutions on a batch of frames.

    Stands in for the 3x3 convolution of one block to count the static
    transforms of the paper's Table 2 (3D: one 5x7x7 convolution; (2+1)D:
    1x7x7 then 5x1x1, each ``C -> C``). Only used for counting.

    Args:
        channels (int): Input and output channels C.
        kernels (Sequence[tuple[int, int, int]]): The (t, h, w) kernel of
            each convolution, applied in order.
        num_segments (int): Frames per clip T.
    """

    def __init__(self, channels: int, kernels: Sequence[Tuple[int, int, int]],
                 num_segments: int) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.convs = nn.Sequential(*[
            nn.Conv3d(
                channels,
                channels,
                k,
                padding=tuple(s // 2 for s in k),
                bias=False) for k in kernels
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.shape
        # [N*T, C, H, W] -> [N, C, T, H, W]
        x = x.reshape(-1, self.num_segments, c, h, w).transpose(1, 2)
        x = self.convs(x)
        # [N, C, T, H, W] -> [N*T, C, H, W]
        return x.transpose(1, 2).reshape(nt, c, h, w)


def swap_block_conv(model: nn.Module, block: str,
                    kernels: Sequence[Tuple[int, int, int]]) -> None:
    """Replace the 3x3 convolution of ``backbone.<block>`` (e.g.
    ``'layer3.3'``) by :class:`FrameConv3d` with ``kernels``."""
    backbone = model.backbone
    conv_module = backbone.get_submodule(block).conv2
    channels = conv_module.conv.out_channels
    conv_module.conv = FrameConv3d(channels, kernels, backbone.num_segments)


def _fingerprint() -> str:
    """Hash of the code the counts depend on (for the on-disk cache)."""
    digest = hashlib.sha256()
    digest.update(f'{torch.__version__}'.encode())
    import mmengine
    digest.update(mmengine.__version__.encode())
    models_dir = osp.join(_PACKAGE_DIR, 'models')
    for root, _, files in sorted(os.walk(models_dir)):
        for name in sorted(files):
            if name.endswith('.py'):
                with open(osp.join(root, name), 'rb') as f:
                    digest.update(f.read())
    return digest.hexdigest()


class ComplexityCounter:
    """Counts ``(params, flops)`` of configs, caching by model and shape.

    Identical models (e.g. a 1-clip and a 2-clip test config) are counted
    once per process. With ``cache_file`` the results are also kept on disk,
    keyed by the model config, the clip shape and a hash of the installed
    ``mmrsa.models`` code, torch and mmengine versions.

    Args:
        cache_file (str, optional): JSON file for results. Defaults to None
            (in memory only).
        threads (int, optional): Torch threads while counting. Defaults to
            None (unchanged).
    """

    def __init__(self,
                 cache_file: Optional[str] = None,
                 threads: Optional[int] = None) -> None:
        self.cache_file = cache_file
        self.threads = threads
        self.results: Dict[str, List[int]] = {}
        self._fingerprint = _fingerprint()
        if cache_file and osp.exists(cache_file):
            with open(cache_file) as f:
                stored = json.load(f)
            if stored.get('fingerprint') == self._fingerprint:
                self.results = stored.get('results', {})

    def _key(self, cfg: Config, clip_shape: Sequence[int],
             swap: Optional[Tuple]) -> str:
        model = json.dumps(cfg.model.to_dict(), sort_keys=True, default=str)
        text = json.dumps([model, list(clip_shape), swap], default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def count(self,
              cfg: Config,
              clip_shape: Sequence[int],
              swap: Optional[Tuple] = None) -> Tuple[int, int]:
        """``(params, flops)`` of ``cfg``'s model on one clip.

        Args:
            cfg (Config): The config.
            clip_shape (Sequence[int]): ``(T, 3, H, W)``.
            swap (tuple, optional): ``(block, kernels)`` for
                :func:`swap_block_conv`. Defaults to None.
        """
        key = self._key(cfg, clip_shape, swap)
        if key not in self.results:
            model = build_recognizer(cfg)
            if swap is not None:
                swap_block_conv(model, *swap)
            threads = torch.get_num_threads()
            if self.threads:
                torch.set_num_threads(self.threads)
            try:
                params, flops = recognizer_complexity(model, tuple(clip_shape))
            finally:
                torch.set_num_threads(threads)
            self.results[key] = [int(params), int(flops)]
            self._save()
        params, flops = self.results[key]
        return params, flops

    def _save(self) -> None:
        if not self.cache_file:
            return
        text = json.dumps(
            dict(fingerprint=self._fingerprint, results=self.results))
        write_atomic(self.cache_file, lambda f: f.write(text.encode()))


def config_complexity(config: str,
                      shape: Optional[Sequence[int]] = None,
                      counter: Optional[ComplexityCounter] = None,
                      cfg_options: Optional[Dict] = None) -> Dict:
    """Everything ``get_flops.py CONFIG`` reports, as a dict.

    Args:
        config (str): Config path.
        shape (Sequence[int], optional): As ``--shape``. Defaults to None
            (``T x 3 x 224 x 224``).
        counter (ComplexityCounter, optional): Reused across calls to share
            its cache. Defaults to a new one.
        cfg_options (dict, optional): Overrides merged into the config.

    Returns:
        dict: ``config``, ``clip_shape``, ``params``, ``flops``,
        ``gflops`` and ``mparams`` (rounded to 2 decimals as the metafile
        prints them), ``clips``, ``crops``.
    """
    cfg = load_config(config, cfg_options)
    clip_shape = clip_shape_from_args(cfg, shape)
    counter = counter or ComplexityCounter()
    params, flops = counter.count(cfg, clip_shape)
    clips, crops = views_per_video(cfg)
    return dict(
        config=config,
        clip_shape=list(clip_shape),
        params=params,
        flops=flops,
        mparams=round(params / 1e6, 2),
        gflops=round(flops / 1e9, 2),
        clips=clips,
        crops=crops)


def flops_table(cfg: Config, clip_shape: Sequence[int], max_depth: int) -> str:
    """Per-module FLOPs and parameters, batch norm excluded."""
    from mmengine.analysis import FlopAnalyzer
    from mmengine.analysis.print_helper import complexity_stats_table
    model = build_recognizer(cfg).eval()
    inputs = (torch.randn(1, *clip_shape), )
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle('aten::batch_norm', lambda inputs, outputs: 0)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        return complexity_stats_table(analyzer, max_depth=max_depth)
