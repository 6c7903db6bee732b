# Copyright (c) mmrsa contributors. All rights reserved.
"""One-command CPU demo: why RSA exists, on a generated motion benchmark.

Generates SynthMotion if it is absent
(``tools/data/synthmotion/generate_synthmotion.py``), trains and tests
RSANet-R18 and MMAction2's TSN-R18 (and, on request, TSM-R18) on it with the
same data, schedule and head, through MMEngine's ``Runner`` and the
Something-Something rawframe data path, then prints a table::

    python demo/synthmotion_demo.py
    python demo/synthmotion_demo.py --models rsanet tsn tsm

SynthMotion's classes differ only in motion, and four pairs of them are time
reversals of each other (left->right vs right->left, up vs down, towards vs
away, clockwise vs anticlockwise). TSN averages per-frame features, so it
cannot tell the two classes of a pair apart ("direction" column ~50 %); RSA
relates every position to its spatio-temporal neighbourhood and can.

Logs and checkpoints go to ``<work-dir>/<config name>/``; the results to
``<work-dir>/results.json``; each trained model is also saved as
``<work-dir>/<config name>.pth`` holding only its weights and plain metadata
(loadable with ``torch.load(weights_only=True)``), for ``demo/demo.py``.

The run ends with a model-zoo release of the trained RSANet, made the way
``tools/deployment/publish_model.py`` makes one:
``<work-dir>/release/<config name>-<sha256[:8]>.pth``; it prints the file,
its sha256, the ``metafile.yml`` entry for it (``Weights:`` is a placeholder
for the URL or path it is published at) and the commands that load it.
"""
import argparse
import gc
import json
import os
import os.path as osp
import sys
import time
from typing import List, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import mmrsa  # noqa: F401  (compat fixes, registration)
from mmrsa.apis.model import load_config
from mmrsa.datasets.synthmotion import (REVERSED_PAIRS, SYNTHMOTION_CLASSES,
                                        generate_synthmotion,
                                        synthmotion_is_complete)
from mmrsa.evaluation import load_dump, pair_metrics
from mmrsa.fileio.atomic import write_atomic

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..'))
CONFIGS = {
    'rsanet': 'configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py',
    'tsn': 'configs/recognition/rsanet/baselines/tsn_r18_8x1_synthmotion.py',
    'tsm': 'configs/recognition/rsanet/baselines/tsm_r18_8x1_synthmotion.py',
}
NAMES = {'rsanet': 'RSANet-R18', 'tsn': 'TSN-R18', 'tsm': 'TSM-R18'}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate SynthMotion if needed, train and test RSANet '
        'and TSN on it, print a comparison table.')
    parser.add_argument(
        '--models',
        nargs='+',
        choices=sorted(CONFIGS),
        default=['rsanet', 'tsn'],
        help='models to train, in this order')
    parser.add_argument(
        '--data-root',
        default='data/synthmotion',
        help='where SynthMotion is, or is generated')
    parser.add_argument(
        '--work-dir',
        default='work_dirs/synthmotion_demo',
        help='where logs, checkpoints and results go')
    parser.add_argument(
        '--num-train', type=int, default=2000, help='training clips')
    parser.add_argument(
        '--num-val', type=int, default=300, help='validation/test clips')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of the data set')
    parser.add_argument(
        '--max-epochs',
        type=int,
        default=None,
        help='override the configs\' number of epochs')
    parser.add_argument(
        '--force',
        action='store_true',
        help='replace a SynthMotion set in --data-root made with other '
        'settings (only what the generator wrote there; nothing else is '
        'touched)')
    parser.add_argument(
        '--threads',
        type=int,
        default=2,
        help='torch CPU threads (the demo is sized for 2 cores)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override entries of every model\'s config')
    return parser.parse_args(argv)


def use_data_root(cfg: Config, data_root: str) -> None:
    """Point every dataloader of ``cfg`` at the set in ``data_root``."""
    names = {
        'train_dataloader': 'train',
        'val_dataloader': 'val',
        'test_dataloader': 'val'
    }
    for key, split in names.items():
        if cfg.get(key) is None:
            continue
        dataset = cfg[key]['dataset']
        dataset['ann_file'] = osp.join(
            data_root, f'synthmotion_{split}_list_rawframes.txt')
        dataset['data_prefix'] = dict(img=osp.join(data_root, 'rawframes'))


def export_weights(model: torch.nn.Module, cfg: Config, path: str,
                   metrics: dict) -> None:
    """Save weights and plain metadata only (loads with weights_only)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = dict(
        config=cfg.pretty_text,
        classes=list(SYNTHMOTION_CLASSES),
        metrics={
            k: float(v)
            for k, v in metrics.items()
        })
    write_atomic(path,
                 lambda f: torch.save(dict(state_dict=state, meta=meta), f))


def run_model(key: str, args: argparse.Namespace) -> dict:
    """Train, then test, one model; return its row of the table."""
    config = osp.join(ROOT, CONFIGS[key])
    name = osp.splitext(osp.basename(config))[0]
    cfg = load_config(config)
    use_data_root(cfg, args.data_root)
    if args.max_epochs is not None:
        cfg.train_cfg.max_epochs = args.max_epochs
        # the schedulers' ends follow the number of epochs
        for scheduler in cfg.param_scheduler:
            if scheduler.get('end', 0) > args.max_epochs:
                scheduler['end'] = args.max_epochs
            if scheduler.get('begin', 0) >= args.max_epochs:
                scheduler['begin'] = max(args.max_epochs - 1, 0)
            if 'T_max' in scheduler:
                scheduler['T_max'] = max(scheduler['end'] - scheduler['begin'],
                                         1)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = osp.join(args.work_dir, name)
    dump = osp.join(cfg.work_dir, 'test_predictions.pkl')
    cfg.test_evaluator = [
        cfg.test_evaluator,
        dict(type='DumpResults', out_file_path=dump)
    ]

    runner = Runner.from_cfg(cfg)
    start = time.time()
    runner.train()
    train_time = time.time() - start
    start = time.time()
    runner.test()  # the weights at the end of training
    test_time = time.time() - start

    metrics = pair_metrics(load_dump(dump))
    model = runner.model
    params = sum(p.numel() for p in model.parameters())
    export_weights(model, cfg, osp.join(args.work_dir, f'{name}.pth'), metrics)
    del runner, model
    gc.collect()
    return dict(
        model=NAMES[key],
        config=CONFIGS[key],
        epochs=cfg.train_cfg.max_epochs,
        params_m=params / 1e6,
        train_s=train_time,
        test_s=test_time,
        **metrics)


def release(row: dict, args: argparse.Namespace) -> dict:
    """Publish the weights a model of the demo saved as a model-zoo file
    and say how to list and load it.

    Returns:
        dict: ``file``, ``sha256``, ``metafile`` (the metafile.yml entry)
        and ``commands`` (that load the released file).

    Raises:
        FileExistsError: Another file has the release's name.
        RuntimeError: The release does not hold the trained weights.
    """
    from mmrsa.fileio.checkpoint import load_checkpoint_file, state_dict_of
    from mmrsa.utils.publish import metafile_entry, publish_checkpoint
    config = row['config']
    name = osp.splitext(osp.basename(config))[0]
    weights = osp.join(args.work_dir, f'{name}.pth')
    path, sha256, _ = publish_checkpoint(
        weights, osp.join(args.work_dir, 'release', name))
    released = state_dict_of(load_checkpoint_file(path))
    trained = state_dict_of(load_checkpoint_file(weights))
    if released.keys() != trained.keys() or not all(
            torch.equal(released[k], trained[k]) for k in trained):
        raise RuntimeError(f'{path} does not hold the weights of {weights}')
    entry = metafile_entry(
        name,
        config,
        f'<URL or local path of {osp.basename(path)}>',
        metadata={
            'Architecture':
            'ResNet18',
            'Epochs':
            row['epochs'],
            'Parameters':
            f'{row["params_m"]:.2f}M',
            'Pretrained':
            'None',
            'Frames':
            8,
            'Test Clips':
            1,
            'Training Data':
            'SynthMotion',
            'Training Resources':
            'CPU',
            'Results From':
            f'bash tools/run.sh demo, {args.num_train} '
            f'training and {args.num_val} test clips, seed {args.seed}',
        },
        results=[
            dict(
                Dataset='SynthMotion',
                Task='Action Recognition',
                Metrics={
                    'Top 1 Accuracy': round(100 * row['top1'], 2),
                    'Direction Within Pairs': round(100 * row['direction'], 2),
                })
        ])
    clip = osp.join(args.data_root, 'rawframes', 'val_00000')
    label_map = osp.join(args.data_root, 'label_map.txt')
    test = f'python tools/test.py {config} {path}'
    if osp.normpath(args.data_root) != osp.normpath('data/synthmotion'):
        test += (' --cfg-options test_dataloader.dataset.ann_file=' + osp.join(
            args.data_root, 'synthmotion_val_list_rawframes.txt') +
                 ' test_dataloader.dataset.data_prefix.img=' +
                 osp.join(args.data_root, 'rawframes'))
    commands = [
        f'python demo/demo.py {config} {path} {clip} {label_map}', test
    ]
    return dict(file=path, sha256=sha256, metafile=entry, commands=commands)


def format_release(info: dict) -> str:
    return '\n'.join([
        f'released file: {info["file"]}',
        f'sha256: {info["sha256"]}',
        'metafile entry (append under "Models:" of '
        'configs/recognition/rsanet/metafile.yml; put the URL or path you '
        'publish the file at in "Weights"):',
        info['metafile'],
        'load it (from the repository root):',
        *(f'  {c}' for c in info['commands']),
    ])


def format_table(rows: Sequence[dict]) -> str:
    lines = [
        '| model | top-1 | top-1, reversed-pair classes | direction '
        'within pairs | params | train | test |',
        '|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {100 * r['top1']:.1f} % | "
            f"{100 * r['top1_pairs']:.1f} % | {100 * r['direction']:.1f} % | "
            f"{r['params_m']:.2f} M | {r['train_s'] / 60:.1f} min | "
            f"{r['test_s']:.0f} s |")
    return '\n'.join(lines)


def main(argv=None) -> List[dict]:
    args = parse_args(argv)
    start = time.time()
    torch.set_num_threads(args.threads)
    os.makedirs(args.work_dir, exist_ok=True)

    settings = dict(
        seed=args.seed, num_train=args.num_train, num_val=args.num_val)
    if synthmotion_is_complete(
            args.data_root, formats=('rawframes', ), **settings):
        print(f'using SynthMotion in {args.data_root}')
    else:
        if osp.exists(args.data_root) and os.listdir(
                args.data_root) and not args.force:
            sys.exit(f'error: {args.data_root} is not empty and holds no '
                     f'SynthMotion set made with --seed {args.seed} '
                     f'--num-train {args.num_train} --num-val '
                     f'{args.num_val}; pass --force to replace it, or '
                     'another --data-root')
        print(f'generating SynthMotion ({args.num_train} + {args.num_val} '
              f'clips) in {args.data_root} ...')
        t = time.time()
        try:
            generate_synthmotion(
                args.data_root,
                formats=('rawframes', 'videos'),
                overwrite=True,
                **settings)
        except FileExistsError as e:  # a file the generator did not write
            sys.exit(f'error: {e}')
        print(f'generated in {time.time() - t:.1f} s')

    rows = []
    for key in args.models:
        print(f'\n=== {NAMES[key]}: {CONFIGS[key]} ===')
        rows.append(run_model(key, args))

    total = time.time() - start
    table = format_table(rows)
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(dict(rows=rows, total_s=total, args=vars(args)), f, indent=2)
    print(f'\nSynthMotion, {args.num_val} test clips, 1 clip x 8 frames, '
          f'center crop; {len(REVERSED_PAIRS)} time-reversed class pairs '
          '(direction: the true class scores above its reversal; chance = '
          '50 %)')
    print(table)
    print(f'total wall time: {total / 60:.1f} min '
          f'({torch.get_num_threads()} threads)')

    for row in rows:
        if row['model'] == NAMES['rsanet']:
            print(f'\n=== release of {row["model"]} (as '
                  'tools/deployment/publish_model.py makes one) ===')
            try:
                info = release(row, args)
            except (OSError, ValueError, RuntimeError) as e:
                sys.exit(f'error: {e}')
            print(format_release(info))
    return rows


if __name__ == '__main__':
    main()
