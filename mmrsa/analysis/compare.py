# Copyright (c) mmrsa contributors. All rights reserved.
"""The paper's Table 2 comparison, run on SynthMotion on a CPU.

Trains and tests the spatio-temporal transforms of the paper's Table 2 at
ResNet-18 scale (one 3x3 convolution of res4 replaced by each transform),
RSANet-R18, TSM-R18 and a small TimeSformer on SynthMotion with the same
data, seeds and schedule, and reports per model and seed: top-1, the
direction accuracy within time-reversed class pairs
(:func:`mmrsa.evaluation.pair_metrics`), parameters, FLOPs of one clip
(:class:`~mmrsa.analysis.ComplexityCounter`) and the training time.
``tools/analysis_tools/compare_transforms.py`` is the command.

Each finished run is added to ``<work_dir>/results.json`` at once, and a
run already there is not trained again, so an interrupted comparison
continues where it stopped.
"""
import gc
import json
import os
import os.path as osp
import time
from collections import OrderedDict
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
from mmengine.config import Config

from ..apis.model import load_config
from ..fileio.atomic import write_atomic
from .complexity import ComplexityCounter, config_frame_size, config_frames

__all__ = [
    'CompareModel', 'COMPARE_MODELS', 'DEFAULT_MODELS', 'use_data_root',
    'set_max_epochs', 'clip_shape_of', 'run_one', 'run_comparison',
    'summarise', 'format_summary', 'plot_summary'
]

_CFG = 'configs/recognition/rsanet'
_TR = f'{_CFG}/transforms/tsn_r18_8x1_synthmotion_'


class CompareModel(NamedTuple):
    """One model of the comparison."""
    label: str
    config: str  # relative to the repository root
    paper_row: str = ''  # the paper's Table 2 row it stands for, if any


#: Every model the comparison knows, in the order of the table.
COMPARE_MODELS: 'OrderedDict[str, CompareModel]' = OrderedDict([
    ('tsn',
     CompareModel('2D conv (TSN-R18)',
                  f'{_CFG}/baselines/tsn_r18_8x1_synthmotion.py',
                  '2D convolution')),
    ('conv3d', CompareModel('3D conv', f'{_TR}conv3d.py', '3D convolution')),
    ('conv2plus1d',
     CompareModel('(2+1)D conv', f'{_TR}conv2plus1d.py',
                  '(2+1)D convolution')),
    ('sa', CompareModel('SA σ(qK+qP)', f'{_TR}sa.py', 'self-attention')),
    ('sa-content',
     CompareModel('SA σ(qK)', f'{_TR}sa-content.py', 'SA variant σ(qK^T)')),
    ('sa-position',
     CompareModel('SA σ(qP)', f'{_TR}sa-position.py', 'SA variant σ(qP^T)')),
    ('involution',
     CompareModel('qP (involution)', f'{_TR}involution.py',
                  'SA variant qP^T')),
    ('rsa', CompareModel('RSA, 1 layer', f'{_TR}rsa.py', 'RSA kV+kR, XV+XR')),
    ('rsanet',
     CompareModel('RSANet-R18 (4 layers)',
                  f'{_CFG}/rsanet_r18_8x1_synthmotion.py')),
    ('tsm',
     CompareModel('TSM-R18', f'{_CFG}/baselines/tsm_r18_8x1_synthmotion.py')),
    ('timesformer',
     CompareModel('TimeSformer (small)',
                  f'{_CFG}/baselines/timesformer_divst_8x1_synthmotion.py')),
])

DEFAULT_MODELS = tuple(COMPARE_MODELS)


def use_data_root(cfg: Config, data_root: str) -> None:
    """Point every dataloader of ``cfg`` at the SynthMotion set in
    ``data_root`` (``rawframes/`` and the ``synthmotion_*_list`` files)."""
    splits = dict(
        train_dataloader='train', val_dataloader='val', test_dataloader='val')
    for key, split in splits.items():
        if cfg.get(key) is None:
            continue
        dataset = cfg[key]['dataset']
        dataset['ann_file'] = osp.join(
            data_root, f'synthmotion_{split}_list_rawframes.txt')
        dataset['data_prefix'] = dict(img=osp.join(data_root, 'rawframes'))


def set_max_epochs(cfg: Config, max_epochs: int) -> None:
    """Train for ``max_epochs``; the schedulers' ends follow (warm-up kept
    within the run, the cosine spans the rest).

    Raises:
        ValueError: ``max_epochs`` is not a positive int.
    """
    if not isinstance(max_epochs, int) or max_epochs <= 0:
        raise ValueError(
            f'max_epochs must be a positive int, got {max_epochs!r}.')
    cfg.train_cfg.max_epochs = max_epochs
    for scheduler in cfg.get('param_scheduler') or []:
        if scheduler.get('end', 0) > max_epochs:
            scheduler['end'] = max_epochs
        if scheduler.get('begin', 0) >= max_epochs:
            scheduler['begin'] = max(max_epochs - 1, 0)
        if 'T_max' in scheduler:
            scheduler['T_max'] = max(scheduler['end'] - scheduler['begin'], 1)


def clip_shape_of(cfg: Config) -> tuple:
    """One test clip as the recognizer takes it: ``(T, 3, H, W)`` for 2D
    recognizers, ``(1, 3, T, H, W)`` for 3D ones (``NCTHW``)."""
    frames, (h, w) = config_frames(cfg), config_frame_size(cfg)
    preprocessor = cfg.model.get('data_preprocessor') or {}
    if preprocessor.get('format_shape') == 'NCTHW':
        return (1, 3, frames, h, w)
    return (frames, 3, h, w)


def _run_key(model: str, seed: int) -> str:
    return f'{model}/seed{seed}'


def run_one(model: str,
            *,
            seed: int,
            data_root: str,
            work_dir: str,
            max_epochs: Optional[int] = None,
            cfg_options: Optional[Dict] = None,
            counter: Optional[ComplexityCounter] = None) -> Dict:
    """Train, then test, one model with one seed through MMEngine's
    ``Runner``.

    Args:
        model (str): A key of :data:`COMPARE_MODELS`.
        seed (int): The training seed (``randomness.seed``).
        data_root (str): The SynthMotion set.
        work_dir (str): Logs and checkpoints go to
            ``<work_dir>/<model>/seed<seed>/``.
        max_epochs (int, optional): Override the config's epochs.
            Defaults to None.
        cfg_options (dict, optional): Overrides merged into the config
            (after the data root and epochs). Defaults to None.
        counter (ComplexityCounter, optional): Counts params and FLOPs.
            Defaults to a new one.

    Returns:
        dict: ``model``, ``label``, ``config``, ``seed``, ``epochs``,
        ``params``, ``flops`` (one test clip), ``train_s`` and
        ``train_cpu_s`` (wall and CPU seconds of the training process),
        ``test_s`` and the metrics of :func:`mmrsa.evaluation.pair_metrics`
        (``top1``, ``top1_pairs``, ``direction``, ``num_clips``).
    """
    import torch
    from mmengine.runner import Runner

    from ..evaluation import load_dump, pair_metrics

    if model not in COMPARE_MODELS:
        raise ValueError(f'model={model!r} is not in the comparison; choose '
                         f'among {tuple(COMPARE_MODELS)}.')
    spec = COMPARE_MODELS[model]
    cfg = load_config(spec.config)
    use_data_root(cfg, data_root)
    if max_epochs is not None:
        set_max_epochs(cfg, max_epochs)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.randomness = dict(cfg.get('randomness') or {}, seed=seed)
    # no validation while training (the val split is the test split): the
    # test after the last epoch scores the run
    cfg.train_cfg.val_begin = cfg.train_cfg.max_epochs + 1
    cfg.work_dir = osp.join(work_dir, model, f'seed{seed}')
    # every run is new: no checkpoint of an earlier run is resumed
    cfg.resume, cfg.load_from = False, None
    dump = osp.join(cfg.work_dir, 'test_predictions.pkl')
    if osp.exists(dump):
        os.remove(dump)  # a failed run must not leave an old dump to read
    cfg.test_evaluator = [
        cfg.test_evaluator,
        dict(type='DumpResults', out_file_path=dump)
    ]
    counter = counter or ComplexityCounter()
    params, flops = counter.count(cfg, clip_shape_of(cfg))

    runner = Runner.from_cfg(cfg)
    start, cpu_start = time.time(), time.process_time()
    runner.train()
    train_s = time.time() - start
    train_cpu_s = time.process_time() - cpu_start
    start = time.time()
    runner.test()  # the weights at the end of training
    test_s = time.time() - start
    metrics = pair_metrics(load_dump(dump))
    del runner
    gc.collect()
    return dict(
        model=model,
        label=spec.label,
        config=spec.config,
        seed=seed,
        epochs=int(cfg.train_cfg.max_epochs),
        params=int(params),
        flops=int(flops),
        train_s=train_s,
        train_cpu_s=train_cpu_s,
        test_s=test_s,
        threads=torch.get_num_threads(),
        **metrics)


def _load_results(path: str) -> Dict:
    if not osp.exists(path):
        return dict(runs={})
    with open(path) as f:
        return json.load(f)


def _save_results(path: str, results: Dict) -> None:
    text = json.dumps(results, indent=2)
    write_atomic(path, lambda f: f.write(text.encode()))


def run_comparison(
        models: Sequence[str] = DEFAULT_MODELS,
        seeds: Sequence[int] = (0, ),
        *,
        data_root: str = 'data/synthmotion',
        work_dir: str = 'work_dirs/compare_transforms',
        max_epochs: Optional[int] = None,
        cfg_options: Optional[Dict] = None,
        train: bool = True,
        progress: Optional[Callable[[str], None]] = None) -> List[Dict]:
    """Run every model with every seed (seed-major: all models with the
    first seed, then with the next), skipping the runs already in
    ``<work_dir>/results.json`` with the same epochs and data.

    Args:
        models (Sequence[str]): Keys of :data:`COMPARE_MODELS`.
        seeds (Sequence[int]): Training seeds.
        data_root (str): A SynthMotion set.
        work_dir (str): Where runs and ``results.json`` go.
        max_epochs (int, optional): Override every config's epochs.
        cfg_options (dict, optional): Overrides merged into every config.
        train (bool): Train the runs that are not in ``results.json``.
            Defaults to True; False reports the finished runs only (and
            writes nothing).
        progress (callable, optional): Receives a line per run.

    Returns:
        list[dict]: The rows of :func:`run_one`, for ``models`` x ``seeds``;
        a run that failed has ``error`` instead of the metrics.

    Raises:
        ValueError: An unknown model, or no model or seed.
    """
    unknown = [m for m in models if m not in COMPARE_MODELS]
    if unknown or not models:
        raise ValueError(f'unknown models {unknown}; choose among '
                         f'{tuple(COMPARE_MODELS)}.')
    if not seeds or any(not isinstance(s, int) for s in seeds):
        raise ValueError(f'seeds must be one or more ints, got {seeds!r}.')
    path = osp.join(work_dir, 'results.json')
    results = _load_results(path)
    settings = dict(
        data_root=osp.abspath(data_root),
        max_epochs=max_epochs,
        cfg_options=json.loads(json.dumps(cfg_options or {}, default=str)))
    stored = dict(dict(cfg_options={}), **results.get('settings', settings))
    if stored != settings:
        if not train:
            raise ValueError(
                f'{path} holds runs made with other settings '
                f'({results.get("settings")}); give the same --data-root, '
                f'--max-epochs and --cfg-options.')
        results = dict(runs={})  # other data, epochs or options: start again
    results['settings'] = settings
    if train:
        os.makedirs(work_dir, exist_ok=True)
    counter = ComplexityCounter(
        cache_file=osp.join(work_dir, 'complexity_cache.json'))
    rows = []
    for seed in seeds:
        for model in models:
            key = _run_key(model, seed)
            row = results['runs'].get(key)
            if row is not None and 'error' not in row:
                if progress:
                    progress(f'{key}: done before, top-1 '
                             f'{100 * row["top1"]:.1f} %')
                rows.append(row)
                continue
            if not train:
                if progress:
                    progress(f'{key}: not run yet, left out')
                continue
            if progress:
                progress(f'{key}: training {COMPARE_MODELS[model].config}')
            try:
                row = run_one(
                    model,
                    seed=seed,
                    data_root=data_root,
                    work_dir=work_dir,
                    max_epochs=max_epochs,
                    cfg_options=cfg_options,
                    counter=counter)
            except Exception as e:  # one failed model does not stop the rest
                row = dict(
                    model=model,
                    label=COMPARE_MODELS[model].label,
                    config=COMPARE_MODELS[model].config,
                    seed=seed,
                    error=f'{type(e).__name__}: {e}')
            results['runs'][key] = row
            _save_results(path, results)
            if progress:
                progress(f'{key}: ' +
                         (row['error'] if 'error' in row else
                          f'top-1 {100 * row["top1"]:.1f} %, direction '
                          f'{100 * row["direction"]:.1f} %, '
                          f'{row["train_s"] / 60:.1f} min'))
            rows.append(row)
    return rows


def summarise(rows: Sequence[Dict]) -> List[Dict]:
    """Mean and spread over seeds, one dict per model (in first-seen
    order): ``model``, ``label``, ``seeds``, ``top1``/``direction``/
    ``top1_pairs`` (means) with ``*_std`` (sample std, 0 for one seed),
    ``*_min``/``*_max``, ``params``, ``flops``, ``train_s``,
    ``train_cpu_s`` (means) and ``errors``."""
    by_model: 'OrderedDict[str, List[Dict]]' = OrderedDict()
    for row in rows:
        by_model.setdefault(row['model'], []).append(row)
    summary = []
    for model, runs in by_model.items():
        ok = [r for r in runs if 'error' not in r]
        item = dict(
            model=model,
            label=runs[0]['label'],
            seeds=[r['seed'] for r in ok],
            errors=[r['error'] for r in runs if 'error' in r])
        if ok:
            for key in ('top1', 'direction', 'top1_pairs'):
                values = np.array([r[key] for r in ok], dtype=float)
                item[key] = float(values.mean())
                item[f'{key}_std'] = float(values.std(
                    ddof=1)) if len(values) > 1 else 0.
                item[f'{key}_min'] = float(values.min())
                item[f'{key}_max'] = float(values.max())
            for key in ('params', 'flops', 'train_s', 'train_cpu_s', 'epochs'):
                item[key] = float(np.mean([r[key] for r in ok]))
        summary.append(item)
    return summary


def format_summary(summary: Sequence[Dict]) -> str:
    """A Markdown table of :func:`summarise` (mean ± std over seeds)."""
    lines = [
        '| model | top-1 % | direction within pairs % | params M | '
        'MFLOPs/clip | train min (wall) | train CPU min | seeds |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for s in summary:
        if 'top1' not in s:
            lines.append(f'| {s["label"]} | failed: {"; ".join(s["errors"])}'
                         ' | | | | | | |')
            continue
        lines.append(
            f'| {s["label"]} | {100 * s["top1"]:.1f} ± '
            f'{100 * s["top1_std"]:.1f} | {100 * s["direction"]:.1f} ± '
            f'{100 * s["direction_std"]:.1f} | {s["params"] / 1e6:.2f} | '
            f'{s["flops"] / 1e6:.0f} | {s["train_s"] / 60:.1f} | '
            f'{s["train_cpu_s"] / 60:.1f} | '
            f'{",".join(map(str, s["seeds"]))} |')
    return '\n'.join(lines)


def plot_summary(
        summary: Sequence[Dict],
        out: str,
        title: str = 'SynthMotion: spatio-temporal transforms') -> None:
    """A bar chart of top-1 and direction accuracy (mean, with the range
    over seeds as error bars) written to ``out`` (PNG, matplotlib Agg)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    done = [s for s in summary if 'top1' in s]
    labels = [s['label'] for s in done]
    x = np.arange(len(done))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(done) + 2), 4.5))
    width = 0.38
    for offset, key, name in ((-width / 2, 'top1', 'top-1'),
                              (width / 2, 'direction',
                               'direction within pairs')):
        mean = np.array([100 * s[key] for s in done])
        low = mean - np.array([100 * s[f'{key}_min'] for s in done])
        high = np.array([100 * s[f'{key}_max'] for s in done]) - mean
        ax.bar(
            x + offset, mean, width, yerr=[low, high], capsize=3, label=name)
    ax.axhline(50, color='grey', lw=0.8, ls='--')
    ax.text(
        len(done) - 0.5,
        51,
        'direction chance',
        ha='right',
        va='bottom',
        fontsize=7,
        color='grey')
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha='right', fontsize=8)
    ax.set_ylabel('accuracy (%)')
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc='upper left')
    fig.tight_layout()

    def write(f) -> None:
        fig.savefig(f, format='png', dpi=120)

    write_atomic(out, write)
    plt.close(fig)
