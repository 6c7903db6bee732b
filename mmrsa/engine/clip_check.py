# Copyright (c) mmrsa contributors. All rights reserved.
"""Check, when a ``Runner`` builds its model, that the data pipelines sample
as many frames per clip as the backbone expects.

A TSN-style backbone with temporal modelling (RSANet, MMAction2's TSM and
TANet, ...) is built for clips of ``num_segments`` frames and takes a batch of
frames ``[N * num_segments, C, H, W]``. A pipeline whose ``SampleFrames``
gives another number of frames either fails deep inside the first forward
pass or, worse, trains on frames grouped into the wrong clips. The rule
checked here, for pipelines that end in ``FormatShape(input_format='NCHW')``:

* training: frames per video (``clip_len * num_clips``) == ``num_segments``;
* validation and test: a whole multiple of it (``twice_sample`` and
  multi-view testing give several clips per video).

:func:`install_clip_check` makes ``Runner.build_model`` run the check, so it
fires for MMAction2's own ``tools/train.py`` and ``tools/test.py`` too
(through ``custom_imports = dict(imports=['mmrsa'])``), before any data is
read.
"""
import functools
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch.nn as nn

__all__ = [
    'ClipSamplingError', 'frames_per_video', 'check_clip_sampling',
    'install_clip_check'
]

_PATCH_FLAG = '_mmrsa_clip_check'
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


def _checked(build_model):

    @functools.wraps(build_model)
    def wrapper(self, model):
        built = build_model(self, model)
        check_clip_sampling(
            built, [(split, getattr(self, f'_{split}_dataloader', None))
                    for split in _SPLITS])
        return built

    setattr(wrapper, _PATCH_FLAG, True)
    return wrapper


def install_clip_check() -> bool:
    """Make ``mmengine.runner.Runner.build_model`` run
    :func:`check_clip_sampling` on the model it builds and the runner's
    dataloaders.

    Returns:
        bool: ``True`` if installed now, ``False`` if it already was.
    """
    from mmengine.runner import Runner
    build_model = Runner.__dict__['build_model']
    if getattr(build_model, _PATCH_FLAG, False):
        return False
    Runner.build_model = _checked(build_model)
    return True
