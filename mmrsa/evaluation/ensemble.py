# Copyright (c) mmrsa contributors. All rights reserved.
"""Average the class scores of several tested models (the paper's "EN").

RSANet-R50_EN in the paper's Table 3a averages the softmax scores of the
8-frame and the 16-frame model, each tested on 1 or 2 clips. Each model's
predictions are dumped by MMAction2's test tool (``tools/test.py --dump``)
and fused by :func:`ensemble` (``tools/analysis_tools/ensemble_scores.py``).

A dump (MMEngine's ``DumpResults``) is a list with one dict per video,
holding at least ``pred_score`` (``[num_classes]``) and ``gt_label``; the
RSANet configs average clips with ``average_clips='prob'``, so
``pred_score`` is already a softmax score. Files whose scores are not
probabilities (tested with ``average_clips=None`` or ``'score'``) get a
softmax first (``softmax_mode='auto'``; ``'always'`` / ``'never'`` force
it). Videos are matched by their ``frame_dir`` / ``filename`` when every
file has them, else by position; their labels must agree.
"""
import math
import os.path as osp
import pickle
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..fileio.atomic import refuse_existing, write_atomic
from ..fileio.checkpoint import load_score_file

__all__ = [
    'EnsembleError', 'load_dump', 'softmax', 'looks_like_probabilities',
    'align', 'accuracies', 'ensemble', 'write_dump', 'format_report',
    'check_weights', 'check_out_path', 'ID_KEYS', 'SOFTMAX_MODES'
]

ID_KEYS = ('frame_dir', 'filename', 'video_id')
SOFTMAX_MODES = ('auto', 'always', 'never')


class EnsembleError(Exception):
    """The dumps cannot be fused."""


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, 'detach'):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def load_dump(path: str) -> List[Dict]:
    """Read one ``DumpResults`` file into a list of dicts with numpy
    ``pred_score`` ``[C]`` and int ``gt_label``, without running code from
    it.

    Raises:
        EnsembleError: The file is not such a dump.
    """
    try:
        results = load_score_file(path)
    except (OSError, pickle.UnpicklingError, ValueError) as err:
        raise EnsembleError(f'{path}: cannot read a dump ({err}).') from err
    if not isinstance(results, list) or not results or not all(
            isinstance(r, dict) and 'pred_score' in r for r in results):
        raise EnsembleError(
            f'{path}: expected the dump of tools/test.py --dump (a list of '
            f'dicts with "pred_score" and "gt_label").')
    out = []
    for i, result in enumerate(results):
        score = _to_numpy(result['pred_score']).astype(np.float64)
        if score.ndim != 1:
            raise EnsembleError(f'{path}: pred_score of item {i} has shape '
                                f'{score.shape}, expected [num_classes].')
        item = dict(pred_score=score)
        if 'gt_label' in result:
            label = _to_numpy(result['gt_label']).reshape(-1)
            if label.size != 1:
                raise EnsembleError(
                    f'{path}: item {i} has {label.size} labels; multi-label '
                    f'dumps are not supported.')
            item['gt_label'] = int(label[0])
        for key in ID_KEYS:
            if isinstance(result.get(key), str):
                item[key] = result[key]
        out.append(item)
    if len({r['pred_score'].shape for r in out}) != 1:
        raise EnsembleError(f'{path}: pred_score sizes differ between items.')
    return out


def looks_like_probabilities(scores: np.ndarray, tol: float = 1e-3) -> bool:
    """Whether every row of ``scores`` ``[N, C]`` is a distribution."""
    return bool((scores >= -tol).all()
                and np.allclose(scores.sum(1), 1., atol=tol))


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``scores`` ``[N, C]``."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _id_key(dumps: Sequence[List[Dict]]) -> Optional[str]:
    for key in ID_KEYS:
        if all(
                all(key in r for r in d) and len({r[key]
                                                  for r in d}) == len(d)
                for d in dumps):
            return key
    return None


def align(dumps: Sequence[List[Dict]],
          names: Sequence[str]) -> List[List[Dict]]:
    """Put the videos of every dump in the order of the first.

    Raises:
        EnsembleError: The dumps do not hold the same videos or labels.
    """
    first = dumps[0]
    key = _id_key(dumps)
    aligned = [first]
    for dump, name in zip(dumps[1:], names[1:]):
        if len(dump) != len(first):
            raise EnsembleError(
                f'{name} has {len(dump)} videos, {names[0]} {len(first)}: '
                f'test both models on the same annotation file.')
        if key is not None:
            index = {r[key]: r for r in dump}
            missing = [r[key] for r in first if r[key] not in index]
            if missing:
                raise EnsembleError(f'{name} lacks videos of {names[0]}, '
                                    f'e.g. {missing[:3]}.')
            dump = [index[r[key]] for r in first]
        if first[0]['pred_score'].shape != dump[0]['pred_score'].shape:
            raise EnsembleError(f'{name} scores {dump[0]["pred_score"].size} '
                                f'classes, {names[0]} '
                                f'{first[0]["pred_score"].size}.')
        labels = [(a.get('gt_label'), b.get('gt_label'))
                  for a, b in zip(first, dump)]
        wrong = sum(a != b for a, b in labels)
        if wrong:
            how = f'matched by {key}' if key else 'matched by position'
            raise EnsembleError(
                f'{wrong} of {len(first)} videos have different labels in '
                f'{names[0]} and {name} ({how}): the dumps are not of the '
                f'same videos in the same order.')
        aligned.append(dump)
    return aligned


def accuracies(scores: np.ndarray, labels: Sequence[int]) -> Dict[str, float]:
    """Top-1, top-5 and mean class accuracy in %, as MMAction2's
    ``AccMetric`` computes them."""
    from mmaction.evaluation.functional import (mean_class_accuracy,
                                                top_k_accuracy)
    labels = list(labels)
    k = min(5, scores.shape[1])
    top1, top5 = top_k_accuracy(list(scores), labels, (1, k))
    return {
        'top1': 100. * top1,
        f'top{k}': 100. * top5,
        'mean_class': 100. * mean_class_accuracy(list(scores), labels)
    }


def check_weights(weights: Optional[Sequence[float]],
                  num_files: int) -> List[float]:
    """The weights of :func:`ensemble` as floats; equal when None.

    Raises:
        EnsembleError: Not one finite, non-negative number per file, or all
            zero.
    """
    if weights is None:
        return [1.] * num_files
    try:
        weights = [float(w) for w in weights]
    except (TypeError, ValueError) as err:
        raise EnsembleError(f'weights must be numbers ({err}).') from None
    shown = ' '.join(f'{w:g}' for w in weights)
    rule = (f'give one non-negative weight per file ({num_files}), not all '
            f'zero')
    if len(weights) != num_files:
        raise EnsembleError(f'{len(weights)} weights ({shown}) for '
                            f'{num_files} files: {rule}.')
    bad = [w for w in weights if not math.isfinite(w)]
    if bad:
        raise EnsembleError(f'weights must be finite numbers, got {shown}: '
                            f'{rule}.')
    if min(weights) < 0:
        raise EnsembleError(f'weights must not be negative, got {shown}: '
                            f'{rule}.')
    if sum(weights) <= 0:
        raise EnsembleError(f'the weights are all zero ({shown}): {rule}.')
    return weights


def check_out_path(out: str,
                   inputs: Sequence[str],
                   force: bool = False) -> None:
    """Refuse to write the fused dump over one of its inputs (ever) or over
    an existing file (unless ``force``).

    Raises:
        EnsembleError: ``out`` is one of ``inputs``.
        OverwriteRefusedError: ``out`` is a folder, or exists and ``force``
            is False.
    """
    for path in inputs:
        same = osp.realpath(out) == osp.realpath(path)
        if not same and osp.exists(out) and osp.exists(path):
            same = osp.samefile(out, path)
        if same:
            raise EnsembleError(
                f'--out {out} is one of the input dumps ({path}); an input '
                f'is never overwritten, not even with --force: choose '
                f'another output file.')
    refuse_existing(out, force, what='--out')


def ensemble(paths: Sequence[str],
             weights: Optional[Sequence[float]] = None,
             softmax_mode: str = 'auto') -> Dict:
    """Fuse the dumps at ``paths``.

    Args:
        paths (Sequence[str]): Two or more dump files.
        weights (Sequence[float], optional): One weight per file; the fused
            score is ``sum(w_i * s_i) / sum(w_i)``. Defaults to equal.
        softmax_mode (str): 'auto' (softmax for files whose scores are not
            probabilities), 'always' or 'never'. Defaults to 'auto'.

    Returns:
        dict: ``scores`` ``[N, C]`` (fused), ``inputs`` (per file: ``path``,
        ``scores``, ``softmax`` applied), ``labels`` (or None) and
        ``items`` (the first dump's videos, aligned).
    """
    if len(paths) < 2:
        raise EnsembleError('give two or more dump files.')
    if softmax_mode not in SOFTMAX_MODES:
        raise EnsembleError(f'softmax must be one of {SOFTMAX_MODES}, got '
                            f'{softmax_mode!r}.')
    weights = check_weights(weights, len(paths))
    dumps = align([load_dump(p) for p in paths], paths)
    inputs = []
    for path, dump in zip(paths, dumps):
        scores = np.stack([r['pred_score'] for r in dump])
        use = softmax_mode == 'always' or (
            softmax_mode == 'auto' and not looks_like_probabilities(scores))
        inputs.append(
            dict(
                path=path,
                scores=softmax(scores) if use else scores,
                softmax=use))
    fused = sum(w * i['scores']
                for w, i in zip(weights, inputs)) / float(sum(weights))
    labels = None
    if all('gt_label' in r for r in dumps[0]):
        labels = [r['gt_label'] for r in dumps[0]]
    return dict(
        scores=fused,
        inputs=inputs,
        weights=weights,
        labels=labels,
        items=dumps[0])


def write_dump(result: Dict, path: str, force: bool = False) -> None:
    """Write the fused scores of :func:`ensemble` as a ``DumpResults``-style
    pickle (through a temporary file, renamed into place).

    Args:
        result (dict): What :func:`ensemble` returned.
        path (str): The file to write.
        force (bool): Overwrite an existing file (never one of the inputs).
            Defaults to False.

    Raises:
        EnsembleError: See :func:`check_out_path`.
    """
    check_out_path(path, [i['path'] for i in result['inputs']], force)
    out = []
    for item, score in zip(result['items'], result['scores']):
        entry = {k: v for k, v in item.items() if k in ID_KEYS}
        entry['pred_score'] = torch.from_numpy(score.astype(np.float32))
        entry['pred_label'] = torch.tensor([int(score.argmax())])
        if 'gt_label' in item:
            entry['gt_label'] = torch.tensor([item['gt_label']])
        out.append(entry)
    write_atomic(path, lambda f: pickle.dump(out, f))


def format_report(result: Dict) -> str:
    """Top-1, top-5 and mean class accuracy (%) of every input and of the
    fused scores, one row each."""
    rows = [(i['path'] + (' (softmax applied)' if i['softmax'] else ''),
             i['scores']) for i in result['inputs']]
    weights = ', '.join(f'{w:g}' for w in result['weights'])
    rows.append((f'ensemble (weights {weights})', result['scores']))
    if result['labels'] is None:
        return 'no gt_label in the dumps: fused scores only'
    width = max(len(r[0]) for r in rows) + 2
    metrics = [accuracies(s, result['labels']) for _, s in rows]
    names = list(metrics[0])
    lines = [f'{"":<{width}}' + ''.join(f'{n:>12}' for n in names)]
    for (name, _), values in zip(rows, metrics):
        lines.append(f'{name:<{width}}' + ''.join(f'{values[n]:>12.2f}'
                                                  for n in names))
    lines.append(f'{len(result["labels"])} videos')
    return '\n'.join(lines)
