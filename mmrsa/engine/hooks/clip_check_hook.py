# Copyright (c) mmrsa contributors. All rights reserved.
"""Check, before a ``Runner`` reads any sample, that the data pipelines
sample as many frames per clip as the backbone expects.

A TSN-style backbone with temporal modelling (RSANet, MMAction2's TSM and
TANet, ...) is built for clips of ``num_segments`` frames and takes a batch of
frames ``[N * num_segments, C, H, W]``. A pipeline whose ``SampleFrames``
gives another number of frames either fails deep inside the first forward
pass or, worse, trains on frames grouped into the wrong clips. The rule
checked here, for pipelines that end in ``FormatShape(input_format='NCHW')``:

* training: frames per video (``clip_len * num_clips``) == ``num_segments``;
* validation and test: a whole multiple of it (``twice_sample`` and
  multi-view testing give several clips per video).

:class:`ClipCheckHook` runs the check in ``before_run`` for a config that
lists it in ``custom_hooks``, so it fires under MMAction2's own
``tools/train.py`` and ``tools/test.py`` too.
"""
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch.nn as nn
from mmengine.hooks import Hook

from mmaction.registry import HOOKS
from mmrsa.datasets.annotation_checks import AnnotationError

__all__ = [
    'ClipSamplingError', 'frames_per_video', 'check_clip_sampling',
    'check_num_classes', 'ClipCheckHook'
]

_SPLITS = ('train', 'val', 'test')


class ClipSamplingError(ValueError):
    """The data pipeline and the backbone disagree on the clip length."""


def _get(step: Any, name: str, default: Any = None) -> Any:
    if isinstance(step, dict):
        return step.get(name, default)
    return getattr(step, name, default)


def _type_name(step: Any) -> str:
    kind = step.get('type') if isinstance(step, dict) else type(step)
    if isinstance(kind, type):
        return kind.__name__
    return str(kind).split('.')[-1]


def frames_per_video(pipeline: Sequence[Any]) -> Optional[Tuple[int, str]]:
    """Frames one sample of ``pipeline`` gives a 2D (``NCHW``) backbone.

    Args:
        pipeline (Sequence): Transform configs (dicts) or transform objects.

    Returns:
        tuple[int, str] | None: The number of frames and how it was derived,
        or ``None`` when the pipeline has no known frame sampler or does not
        format the frames as ``NCHW``.
    """
    formats = [
        _get(s, 'input_format') for s in pipeline
        if _type_name(s) == 'FormatShape'
    ]
    if not formats or formats[-1] != 'NCHW':
        return None
    for step in pipeline:
        name = _type_name(step)
        if name not in ('SampleFrames', 'DenseSampleFrames', 'UniformSample'):
            continue
        clip_len = _get(step, 'clip_len')
        num_clips = _get(step, 'num_clips', 1)
        if not isinstance(clip_len, int) or not isinstance(num_clips, int):
            return None
        frames = clip_len * num_clips
        how = f'{name}: clip_len={clip_len} x num_clips={num_clips}'
        if name == 'SampleFrames' and _get(step, 'twice_sample', False) \
                and _get(step, 'test_mode', False):
            frames *= 2
            how += ' x 2 (twice_sample)'
        if name == 'DenseSampleFrames' and _get(step, 'test_mode', False):
            positions = _get(step, 'num_sample_positions', 10)
            frames *= positions
            how += f' x {positions} (num_sample_positions)'
        return frames, how
    return None


def _dataset_pipelines(dataset: Any) -> Iterator[Sequence[Any]]:
    """The pipelines of a dataset config or object (wrappers unwrapped)."""
    if dataset is None:
        return
    inner = _get(dataset, 'datasets')
    if isinstance(inner, (list, tuple)):
        for d in inner:
            yield from _dataset_pipelines(d)
        return
    if _get(dataset, 'dataset') is not None:
        yield from _dataset_pipelines(_get(dataset, 'dataset'))
        return
    pipeline = _get(dataset, 'pipeline')
    if pipeline is None:
        return
    # a built dataset holds an mmengine Compose
    yield list(getattr(pipeline, 'transforms', pipeline))


def _dataloader_pipelines(dataloader: Any) -> List[Sequence[Any]]:
    if dataloader is None:
        return []
    return list(_dataset_pipelines(_get(dataloader, 'dataset')))


def _segment_counts(model: nn.Module) -> List[Tuple[str, int]]:
    """``(name, num_segments)`` of the model's backbone and head."""
    model = getattr(model, 'module', model)  # a DDP wrapper
    out = []
    for name in ('backbone', 'cls_head'):
        part = getattr(model, name, None)
        value = getattr(part, 'num_segments', None)
        if isinstance(value, int) and not isinstance(value, bool):
            out.append((f'model.{name}.num_segments', value))
    return out


def check_clip_sampling(model: nn.Module,
                        dataloaders: Sequence[Tuple[str, Any]]) -> None:
    """Raise if a pipeline samples clips the model was not built for.

    Args:
        model (nn.Module): The recognizer (or a wrapper of it).
        dataloaders (Sequence[tuple[str, Any]]): ``(split, dataloader)`` with
            ``split`` one of 'train', 'val', 'test' and the dataloader a
            config dict or a built ``DataLoader`` (``None`` is skipped).

    Raises:
        ClipSamplingError: Naming the mismatching values and what to change.
    """
    counts = _segment_counts(model)
    if not counts:
        return
    (where, num_segments), others = counts[0], counts[1:]
    for other, value in others:
        if value != num_segments:
            raise ClipSamplingError(
                f'{where}={num_segments} but {other}={value}: both must be '
                f'the number of frames per clip.')
    for split, dataloader in dataloaders:
        for pipeline in _dataloader_pipelines(dataloader):
            sampled = frames_per_video(pipeline)
            if sampled is None:
                continue
            frames, how = sampled
            clip_len = next(
                (_get(step, 'clip_len')
                 for step in pipeline if _type_name(step) == 'SampleFrames'),
                1)
            if clip_len != 1 and clip_len % num_segments != 0:
                raise ClipSamplingError(
                    f'{where}={num_segments}, but the {split} pipeline '
                    f'({split}_dataloader) samples {how}: the backbone '
                    f'groups every {num_segments} consecutive frames into '
                    f'one clip, so snippets of clip_len={clip_len} frames '
                    f'would be cut across clips. Use clip_len=1 with '
                    f'num_clips={num_segments} per view, or a clip_len that '
                    f'is a multiple of {num_segments}.')
            if split == 'train' and frames != num_segments:
                raise ClipSamplingError(
                    f'{where}={num_segments}, but the train pipeline '
                    f'(train_dataloader) samples {frames} frames per video '
                    f'({how}); the backbone would group them into clips of '
                    f'{num_segments}. Make them agree: num_clips='
                    f'{num_segments} with clip_len=1 in SampleFrames, or '
                    f'num_segments={frames} in the backbone.')
            if split != 'train' and frames % num_segments != 0:
                raise ClipSamplingError(
                    f'{where}={num_segments}, but the {split} pipeline '
                    f'({split}_dataloader) samples {frames} frames per video '
                    f'({how}), which is not a whole number of clips of '
                    f'{num_segments}. Use num_clips={num_segments} (times '
                    f'the number of views) in its SampleFrames.')


def _datasets(dataset: Any) -> Iterator[Any]:
    """A dataset config or object and the ones it wraps."""
    if dataset is None:
        return
    inner = _get(dataset, 'datasets')
    if isinstance(inner, (list, tuple)):
        for d in inner:
            yield from _datasets(d)
        return
    if _get(dataset, 'dataset') is not None:
        yield from _datasets(_get(dataset, 'dataset'))
        return
    yield dataset


def _head_classes(model: nn.Module) -> Optional[int]:
    model = getattr(model, 'module', model)
    value = getattr(getattr(model, 'cls_head', None), 'num_classes', None)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def check_num_classes(model: nn.Module,
                      dataloaders: Sequence[Tuple[str, Any]]) -> None:
    """Raise if a dataset and the classification head disagree on the
    classes.

    A dataset config or object with ``num_classes`` must have the head's;
    a built dataset's single labels must lie in ``[0, num_classes)`` of the
    head (the annotation line is named when the dataset recorded it).

    Raises:
        ClipSamplingError: The declared numbers of classes differ.
        AnnotationError: A label is out of range, naming file and line.
    """
    num_classes = _head_classes(model)
    if num_classes is None:
        return
    for split, dataloader in dataloaders:
        if dataloader is None:
            continue
        for dataset in _datasets(_get(dataloader, 'dataset')):
            declared = _get(dataset, 'num_classes')
            ann_file = _get(dataset, 'ann_file', '?')
            if isinstance(declared, int) and declared != num_classes:
                raise ClipSamplingError(
                    f'model.cls_head.num_classes={num_classes}, but the '
                    f'{split} dataset ({ann_file}) has num_classes='
                    f'{declared}. Make them agree.')
            get_info = getattr(dataset, 'get_data_info', None)
            if not callable(get_info) or not hasattr(dataset, '__len__'):
                continue  # a config, not a built dataset
            for index in range(len(dataset)):
                info = get_info(index)
                label = info.get('label') if isinstance(info, dict) else None
                is_int = isinstance(label, (int, np.integer))
                if is_int and not 0 <= label < num_classes:
                    where = (f'line {info["ann_line"]}'
                             if 'ann_line' in info else f'sample {index}')
                    raise AnnotationError(
                        f'{ann_file}, {where}: label {int(label)} is outside '
                        f'[0, {num_classes}) of model.cls_head.num_classes='
                        f'{num_classes}. Fix the annotation file or the '
                        f'number of classes.')


def _built_or_config(runner: Any, split: str) -> Any:
    """The built dataloader of a split whose loop exists, else its config."""
    from mmengine.runner import BaseLoop
    loop = getattr(runner, f'_{split}_loop', None)
    if isinstance(loop, BaseLoop):
        return getattr(loop, 'dataloader', None)
    return getattr(runner, f'_{split}_dataloader', None)


@HOOKS.register_module()
class ClipCheckHook(Hook):
    """Fail before the first iteration when a pipeline samples clips of
    another length than the backbone's ``num_segments``, or when a dataset's
    ``num_classes`` differs from the head's.

    Opt in from a config (the shipped RSANet configs do)::

        custom_hooks = [dict(type='ClipCheckHook')]

    It runs in ``before_run``, i.e. under this project's ``tools/train.py``
    and ``tools/test.py`` and under MMAction2's own ones alike, before any
    sample is read. The check itself is :func:`check_clip_sampling`.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        dataloaders = [(split, getattr(runner, f'_{split}_dataloader', None))
                       for split in _SPLITS]
        check_clip_sampling(runner.model, dataloaders)
        check_num_classes(runner.model,
                          [(split, _built_or_config(runner, split))
                           for split in _SPLITS])
