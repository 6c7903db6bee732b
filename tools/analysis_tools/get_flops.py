# Copyright (c) mmrsa contributors. All rights reserved.
"""GFLOPs and parameters of a config, counted as the RSA paper counts them.

One FLOP is one fused multiply-add; batch normalisation is not counted (it
folds into the convolution before it at inference), nor are element-wise ops
and pooling. The count is for **one clip** (one view): ``T x 3 x 224 x 224``
for the paper's recipes, with ``T`` the backbone's ``num_segments``. The
parameters include the classifier. Counting is done by
:func:`mmrsa.models.utils.recognizer_complexity` (MMEngine's
``FlopAnalyzer``).

Examples::

    python tools/analysis_tools/get_flops.py \\
        configs/recognition/rsanet/rsanet_r50_8x1_ssv1.py
    python tools/analysis_tools/get_flops.py CONFIG --shape 16 3 224 224
    python tools/analysis_tools/get_flops.py CONFIG --shape 112  # 112 x 112
    python tools/analysis_tools/get_flops.py CONFIG --json --table 4
    python tools/analysis_tools/get_flops.py --paper-tables [--cache FILE]

``--shape`` takes one clip without the batch dimension (``T 3 H W``; the
batch of 1 is added here), or ``H W`` / ``S`` for the frame size with ``T``
taken from the config; by default ``T`` and the test crop size (224 for the
paper's recipes) come from the config.

``--paper-tables`` builds every ablation config and prints our numbers next
to those printed in the paper (main Tables 2, 4a-d; supplementary Tables
2a-c) with the difference, flagging rows off by more than 0.1 M parameters
or 0.15 GFLOPs. It counts 40 ResNet-50s (one of them 252 GFLOPs): minutes
on a CPU; ``--cache FILE`` keeps the counts for the next run.
"""
import argparse
import copy
import hashlib
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

# runnable from a source checkout without installing mmrsa
REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
sys.path.insert(0, REPO_ROOT)

import mmrsa  # noqa: E402,F401  (compat fixes before mmaction.models)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from mmaction.registry import MODELS  # noqa: E402
from mmrsa.models.utils import recognizer_complexity  # noqa: E402

CONFIG_DIR = osp.join('configs', 'recognition', 'rsanet')
ABLATION_PREFIX = osp.join(CONFIG_DIR, 'ablations', 'rsanet_r50_8x1_ssv1_')
MAIN_CONFIG = osp.join(CONFIG_DIR, 'rsanet_r50_8x1_ssv1.py')

#: Rows may differ from the paper's by this much and still be reported ok.
PARAMS_TOL = 0.1e6
FLOPS_TOL = 0.15e9


# ---------------------------------------------------------------------- #
# building and counting
# ---------------------------------------------------------------------- #
def load_config(path: str,
                cfg_options: Optional[Dict] = None) -> Config:
    """Read a config (relative paths are taken from the repository root when
    they do not exist in the working directory)."""
    if not osp.exists(path) and osp.exists(osp.join(REPO_ROOT, path)):
        path = osp.join(REPO_ROOT, path)
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_recognizer(cfg: Config) -> nn.Module:
    """The config's model, without downloading any pretrained weights.

    Weights do not change the counts, so ``backbone.pretrained`` and every
    ``init_cfg`` are dropped and the model is never initialised.
    """
    model_cfg = copy.deepcopy(cfg.model)
    backbone = model_cfg.get('backbone', {})
    if 'pretrained' in backbone:
        backbone['pretrained'] = None
    model_cfg.pop('init_cfg', None)
    init_default_scope(cfg.get('default_scope', 'mmaction'))
    return MODELS.build(model_cfg)


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
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get(
        'pipeline') or cfg.get('test_pipeline') or []
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
    models_dir = osp.join(osp.dirname(mmrsa.__file__), 'models')
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

    def __init__(self, cache_file: Optional[str] = None,
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
        os.makedirs(osp.dirname(osp.abspath(self.cache_file)), exist_ok=True)
        tmp = f'{self.cache_file}.tmp'
        with open(tmp, 'w') as f:
            json.dump(
                dict(fingerprint=self._fingerprint, results=self.results), f)
        os.replace(tmp, self.cache_file)


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


def flops_table(cfg: Config, clip_shape: Sequence[int],
                max_depth: int) -> str:
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


# ---------------------------------------------------------------------- #
# the paper's tables
# ---------------------------------------------------------------------- #
class PaperRow(NamedTuple):
    """One row of a paper table and how to rebuild it."""
    label: str
    config: str  # path, relative to the repository root
    flops: Optional[float]  # GFLOPs printed in the paper
    params: Optional[float]  # M parameters printed in the paper
    swap: Optional[Tuple] = None  # (block, kernels) for swap_block_conv
    note: str = ''


def _abl(name: str) -> str:
    return f'{ABLATION_PREFIX}{name}.py'


_2D_NOTE = (
    'the paper\'s own 3D and (2+1)D rows of Table 2, which match ours, put '
    'the 2D baseline at 32.7 G / 23.8 M (57.0 G - 24.3 G and 39.3 M - '
    '15.5 M that one 5x7x7 convolution adds over a 3x3 one): TSN-R50 with '
    'a 174-class head, as counted here; 24.3 M would be a 400-class head')
_OOM_NOTE = 'the paper trains this row out of memory; counted here anyway'

#: (title, rows) of every paper table that has a config in this repository.
#: Table 2's self-attention rows have no counterpart in mmrsa.
PAPER_TABLES: Tuple[Tuple[str, Tuple[PaperRow, ...]], ...] = (
    ('Main Table 2: feature transforms, one layer in res4 (8 frames)', (
        PaperRow('2D convolution (TSN)', _abl('0layers'), 32.5, 24.3,
                 note=_2D_NOTE),
        PaperRow('3D convolution 5x7x7', _abl('0layers'), 57.0, 39.3,
                 swap=('layer3.3', ((5, 7, 7), ))),
        PaperRow('(2+1)D convolution 1x7x7, 5x1x1', _abl('0layers'), 37.3,
                 26.8, swap=('layer3.3', ((1, 7, 7), (5, 1, 1)))),
        PaperRow('RSA kV+kR, XV', _abl('1layer_kVR-xV'), 32.6, 23.6),
        PaperRow('RSA kV+kR, XV+XR', _abl('1layer'), 33.2, 23.6),
    )),
    ('Main Table 4a: kernels x contexts, one layer in res4', (
        PaperRow('kV, XV', _abl('1layer_kV-xV'), 32.3, 23.4),
        PaperRow('kR, XV', _abl('1layer_kR-xV'), 32.7, 23.6),
        PaperRow('kV+kR, XV', _abl('1layer_kVR-xV'), 32.7, 23.6),
        PaperRow('kV, XR', _abl('1layer_kV-xR'), 32.7, 23.4),
        PaperRow('kR, XR', _abl('1layer_kR-xR'), 33.2, 23.6),
        PaperRow('kV+kR, XR', _abl('1layer_kVR-xR'), 33.2, 23.6),
        PaperRow('kV, XV+XR', _abl('1layer_kV-xVR'), 32.7, 23.4),
        PaperRow('kR, XV+XR', _abl('1layer_kR-xVR'), 33.2, 23.6),
        PaperRow('kV+kR, XV+XR', _abl('1layer_kVR-xVR'), 33.2, 23.6),
    )),
    ('Main Table 4b: latent dimension D (7 layers)', (
        PaperRow('D = 8', _abl('D-8'), 32.2, 20.5),
        PaperRow('D = 16', _abl('D-16'), 34.7, 20.9),
        PaperRow('D = 32', _abl('D-32'), 39.6, 21.7),
        PaperRow('D = Cq / 2', _abl('D-half'), 32.9, 21.1),
        PaperRow('D = Cq', MAIN_CONFIG, 35.9, 22.0),
    )),
    ('Main Table 4c: context size M (7 layers)', (
        PaperRow('3x3x3', _abl('M-3x3x3'), 28.5, 20.3),
        PaperRow('3x5x5', _abl('M-3x5x5'), 30.2, 20.7),
        PaperRow('3x7x7', _abl('M-3x7x7'), 32.6, 21.2),
        PaperRow('3x9x9', _abl('M-3x9x9'), 35.8, 22.0),
        PaperRow('5x7x7', MAIN_CONFIG, 35.9, 22.0),
        PaperRow('5x9x9', _abl('M-5x9x9'), 41.3, 23.3),
    )),
    ('Main Table 4d: correlation groups G (7 layers)', (
        PaperRow('G = 1', _abl('G-1'), 35.9, 20.2),
        PaperRow('G = 2', _abl('G-2'), 35.9, 20.2),
        PaperRow('G = 4', _abl('G-4'), 35.9, 20.3),
        PaperRow('G = 8', _abl('G-8'), 35.9, 20.5),
        PaperRow('G = Cq', MAIN_CONFIG, 35.9, 22.0),
    )),
    ('Supp. Table 2a: queries L, D = 16 (7 layers)', (
        PaperRow('L = 1', _abl('D-16_L-1'), 252.5, 28.1, note=_OOM_NOTE),
        PaperRow('L = 2', _abl('D-16_L-2'), 92.8, 23.9),
        PaperRow('L = 4', _abl('D-16_L-4'), 48.2, 21.9),
        PaperRow('L = 8', _abl('D-16'), 34.7, 20.9),
        PaperRow('L = 16', _abl('D-16_L-16'), 30.2, 20.4),
    )),
    ('Supp. Table 2b: number and places of RSA layers', (
        PaperRow('0', _abl('0layers'), 32.5, 24.3, note=_2D_NOTE),
        PaperRow('1, res4', _abl('1layer'), 33.2, 23.6),
        PaperRow('2, res4-5', _abl('2layers'), 33.7, 22.6),
        PaperRow('4, res4-5', _abl('4layers'), 34.6, 22.2),
        PaperRow('7, res2-5', MAIN_CONFIG, 35.9, 22.0),
    )),
    ('Supp. Table 2c: normalisation of query, key and value', (
        PaperRow('none', _abl('norm-none'), 35.9, 22.0),
        PaperRow('batch norm', _abl('norm-bn'), 35.9, 22.0),
        PaperRow('L2', MAIN_CONFIG, 35.9, 22.0),
    )),
)


def paper_table_rows(counter: ComplexityCounter,
                     progress: bool = True) -> List[Dict]:
    """Count every row of :data:`PAPER_TABLES`.

    Returns:
        list[dict]: One dict per row: ``table``, ``label``, ``config``,
        ``paper_flops``, ``paper_params``, ``flops``, ``params`` (G, M),
        ``ok`` and ``note``.
    """
    rows = []
    for title, table_rows in PAPER_TABLES:
        for row in table_rows:
            start = time.time()
            cfg = load_config(row.config)
            params, flops = counter.count(cfg, (config_frames(cfg), 3, 224,
                                                224), row.swap)
            if progress:
                print(f'  counted {title.split(":")[0]} / {row.label} '
                      f'({time.time() - start:.1f} s)', file=sys.stderr)
            ok = (abs(params - row.params * 1e6) <= PARAMS_TOL
                  and abs(flops - row.flops * 1e9) <= FLOPS_TOL)
            rows.append(
                dict(
                    table=title,
                    label=row.label,
                    config=row.config,
                    paper_flops=row.flops,
                    paper_params=row.params,
                    flops=flops / 1e9,
                    params=params / 1e6,
                    ok=ok,
                    note=row.note))
    return rows


def format_paper_tables(rows: List[Dict]) -> str:
    """Our numbers next to the paper's, one block per table."""
    lines, notes = [], []
    header = (f'{"row":<34}{"GFLOPs":>8}{"paper":>8}{"diff":>8}'
              f'{"params M":>10}{"paper":>8}{"diff":>8}  ')
    table = None
    for row in rows:
        if row['table'] != table:
            table = row['table']
            lines += ['', table, header, '-' * len(header)]
        status = 'ok' if row['ok'] else 'OFF'
        if row['note']:
            if row['note'] not in notes:
                notes.append(row['note'])
            status += f' [{notes.index(row["note"]) + 1}]'
        lines.append(
            f'{row["label"]:<34}{row["flops"]:>8.2f}{row["paper_flops"]:>8.1f}'
            f'{row["flops"] - row["paper_flops"]:>+8.2f}'
            f'{row["params"]:>10.2f}{row["paper_params"]:>8.1f}'
            f'{row["params"] - row["paper_params"]:>+8.2f}  {status}')
    num_ok = sum(r['ok'] for r in rows)
    lines += [
        '', f'{num_ok} of {len(rows)} rows within '
        f'{PARAMS_TOL / 1e6:g} M parameters and {FLOPS_TOL / 1e9:g} GFLOPs '
        f'of the paper (FLOPs of one 8 x 224 x 224 clip; batch norm '
        f'excluded).'
    ]
    lines += [f'[{i + 1}] {note}' for i, note in enumerate(notes)]
    return '\n'.join(lines)


# ---------------------------------------------------------------------- #
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='GFLOPs (multiply-adds, batch norm excluded) and '
        'parameters of a config, or of every paper ablation row.')
    parser.add_argument('config', nargs='?', help='config file')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        help='one clip without the batch dimension: T 3 H W, or H W, or S '
        '(default: T 3 224 224 with T from the config)')
    parser.add_argument(
        '--paper-tables',
        action='store_true',
        help='count every ablation config and compare with the paper')
    parser.add_argument(
        '--table',
        type=int,
        metavar='DEPTH',
        help='also print FLOPs and parameters per module down to DEPTH')
    parser.add_argument(
        '--json', action='store_true', help='print one JSON object')
    parser.add_argument(
        '--cache',
        help='JSON file that keeps counts between runs (invalidated when '
        'mmrsa.models, torch or mmengine change)')
    parser.add_argument(
        '--threads', type=int, help='torch threads while counting')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, KEY=VALUE')
    args = parser.parse_args(argv)
    if not args.config and not args.paper_tables:
        parser.error('give a CONFIG or --paper-tables')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    counter = ComplexityCounter(args.cache, args.threads)
    if args.paper_tables:
        rows = paper_table_rows(counter, progress=not args.json)
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            print(format_paper_tables(rows))
        if not args.config:
            return 0
    try:
        result = config_complexity(args.config, args.shape, counter,
                                   args.cfg_options)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        t, c, h, w = result['clip_shape']
        views = result['clips'] * result['crops']
        print(f'config      {result["config"]}\n'
              f'input       one clip of {t} x {c} x {h} x {w} '
              f'(T x C x H x W)\n'
              f'FLOPs       {result["flops"] / 1e9:.2f} G per clip '
              f'(multiply-adds; batch norm excluded)\n'
              f'params      {result["params"] / 1e6:.2f} M\n'
              f'test views  {result["clips"]} clip(s) x {result["crops"]} '
              f'crop(s): {views * result["flops"] / 1e9:.2f} G per video')
    if args.table:
        cfg = load_config(args.config, args.cfg_options)
        print(flops_table(cfg, result['clip_shape'], args.table))
    return 0


if __name__ == '__main__':
    sys.exit(main())
