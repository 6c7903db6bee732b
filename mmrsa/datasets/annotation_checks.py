# Copyright (c) mmrsa contributors. All rights reserved.
"""Datasets that name the annotation file and line of a bad sample.

MMAction2's ``RawframeDataset`` and ``VideoDataset`` forget where a sample
came from, so a missing frame, a corrupt video or a label beyond the number
of classes stops a long run at some random iteration with an error that names
neither the annotation file nor the line. :class:`CheckedRawframeDataset` and
:class:`CheckedVideoDataset` are the same datasets (same arguments, same
samples) with these checks; a config opts in by naming them as its
``dataset_type``:

* every sample records its line in the annotation file (``ann_line``);
* when the dataset is built, an empty annotation file, a line that cannot be
  parsed, a label outside ``[0, num_classes)`` (when ``num_classes`` is
  given) and a line that points at missing data (the frame folder with its
  first and last frame, or the video file) fail at once with
  :class:`AnnotationError`, listing the bad lines. Remote paths
  (``s3://...``) are not checked for existence; ``MMRSA_CHECK_DATA=0`` turns
  the existence check off;
* a sample that fails in the pipeline (missing frame, corrupt video, ...)
  raises :class:`SampleLoadError` naming the annotation file, the line and
  the file, with the original error chained.
"""
import os
import os.path as osp
from typing import List, Optional, Tuple

from mmaction.datasets import RawframeDataset, VideoDataset
from mmaction.registry import DATASETS

__all__ = [
    'CHECK_ENV', 'SampleLoadError', 'AnnotationError', 'AnnotationCheckMixin',
    'CheckedRawframeDataset', 'CheckedVideoDataset'
]

#: Set to ``0`` to skip the existence check at dataset build time.
CHECK_ENV = 'MMRSA_CHECK_DATA'
#: How many bad lines an error lists.
MAX_LISTED = 10


class SampleLoadError(RuntimeError):
    """A sample of an annotation file could not be loaded."""


class AnnotationError(ValueError):
    """An annotation file has lines that cannot be parsed or used."""


def _read_lines(ann_file: str) -> List[str]:
    from mmengine.fileio import list_from_file
    return list_from_file(ann_file)


def _parse_problem(dataset, line: str) -> Optional[str]:
    """Why MMAction2 cannot parse ``line``, or ``None`` if it can."""
    if isinstance(dataset, RawframeDataset):
        fields = line.split()
        counts = 3 if dataset.with_offset else 2
        layout = ('<frame_dir> <offset> <total_frames> <label>'
                  if dataset.with_offset else
                  '<frame_dir> <total_frames> <label>')
        numbers = fields[1:]
    else:
        fields = line.split(dataset.delimiter)
        counts = 1
        layout = '<video> <label>'
        numbers = fields[1:]
        if not dataset.multi_class and len(fields) > 2:
            return f'expected "{layout}", got {len(fields)} fields'
    if len(fields) < counts:
        return f'expected "{layout}", got {len(fields)} field(s)'
    try:
        [int(x) for x in numbers]
    except ValueError:
        return f'expected "{layout}" with integer numbers'
    labels = fields[counts:]
    if not dataset.multi_class and len(labels) > 1:
        return (f'expected one label (set multi_class=True for several), '
                f'got {len(labels)}')
    return None


def _where(dataset, line_no: Optional[int]) -> str:
    if line_no is None:
        return f'{dataset.ann_file}'
    return f'{dataset.ann_file}, line {line_no}'


def _missing_parts(dataset, info: dict) -> Optional[str]:
    """What a sample points at that does not exist, or ``None``."""
    if isinstance(dataset, RawframeDataset):
        frame_dir = info['frame_dir']
        if '://' in frame_dir:
            return None
        if not osp.isdir(frame_dir):
            return f'frame folder {frame_dir} does not exist'
        if dataset.modality != 'RGB':
            return None
        first = dataset.start_index + info.get('offset', 0)
        last = first + info['total_frames'] - 1
        for index in (first, last):
            path = osp.join(frame_dir, dataset.filename_tmpl.format(index))
            if not osp.isfile(path):
                return (f'frame {path} does not exist (total_frames='
                        f'{info["total_frames"]}, filename_tmpl='
                        f'{dataset.filename_tmpl!r})')
        return None
    filename = info['filename']
    if '://' in filename or osp.isfile(filename):
        return None
    return f'video {filename} does not exist'


def _listed(bad: List[Tuple[Optional[int], str]]) -> str:
    """The first :data:`MAX_LISTED` ``(line, problem)`` pairs, one per
    line, and how many more there are."""
    listed = '\n'.join(f'  line {line}: {problem}'
                       for line, problem in bad[:MAX_LISTED])
    more = len(bad) - MAX_LISTED
    if more > 0:
        listed += f'\n  ... and {more} more'
    return listed


def _check_exists(dataset, data_list: List[dict]) -> None:
    if os.environ.get(CHECK_ENV, '1') == '0':
        return
    bad: List[Tuple[Optional[int], str]] = []
    for info in data_list:
        problem = _missing_parts(dataset, info)
        if problem is not None:
            bad.append((info.get('ann_line'), problem))
    if not bad:
        return
    raise AnnotationError(
        f'{dataset.ann_file}: {len(bad)} of {len(data_list)} samples point '
        f'at missing data (data_prefix={dataset.data_prefix}):\n'
        f'{_listed(bad)}\n'
        f'Fix the annotation file or the data paths, or regenerate the '
        f'data; set {CHECK_ENV}=0 to skip this check.')


def _describe(dataset, idx: int) -> str:
    try:
        info = dataset.get_data_info(idx)
    except Exception:  # the sample index itself is bad
        return f'{dataset.ann_file}, sample {idx}'
    where = (
        _where(dataset, info['ann_line'])
        if 'ann_line' in info else f'{dataset.ann_file}, sample {idx}')
    if 'frame_dir' in info:
        return f'{where}: cannot load the frames in {info["frame_dir"]}'
    if 'filename' in info:
        return f'{where}: cannot load the video {info["filename"]}'
    return f'{where}: cannot load the sample'


def _check_labels(dataset, data_list: List[dict]) -> None:
    num_classes = dataset.num_classes
    if not isinstance(num_classes, int) or dataset.multi_class:
        return
    bad = [(info.get('ann_line'), f'label {info["label"]}')
           for info in data_list if isinstance(info.get('label'), int)
           and not 0 <= info['label'] < num_classes]
    if not bad:
        return
    raise AnnotationError(
        f'{dataset.ann_file}: {len(bad)} of {len(data_list)} samples have a '
        f'label outside [0, {num_classes}) (num_classes={num_classes}):\n'
        f'{_listed(bad)}\nFix the labels, or the number of classes of the '
        f'dataset and of the model head.')


class AnnotationCheckMixin:
    """The checks of this module, for a subclass of an MMAction2 dataset
    that reads a text annotation file (one sample per line)."""

    def load_data_list(self) -> List[dict]:
        ann_file = str(self.ann_file)
        is_text = not ann_file.endswith('.json')
        if is_text and osp.isfile(ann_file) and not any(
                line.strip() for line in _read_lines(ann_file)):
            raise AnnotationError(
                f'{ann_file} is empty: it has no annotation lines. Write one '
                f'line per sample, or point ann_file at the right file.')
        try:
            data_list = super().load_data_list()
        except (ValueError, IndexError, AssertionError, TypeError) as e:
            if not is_text or not osp.isfile(ann_file):
                raise
            for number, line in enumerate(_read_lines(ann_file), 1):
                problem = _parse_problem(self, line.strip())
                if problem is not None:
                    raise AnnotationError(
                        f'{_where(self, number)}: cannot parse {line!r}: '
                        f'{problem}') from e
            raise
        if is_text:
            lines = _read_lines(ann_file)
            if len(lines) == len(data_list):
                for number, info in enumerate(data_list, 1):
                    info['ann_line'] = number
        _check_labels(self, data_list)
        _check_exists(self, data_list)
        return data_list

    def prepare_data(self, idx: int):
        try:
            return super().prepare_data(idx)
        except SampleLoadError:
            raise
        except Exception as e:
            detail = str(e).strip().splitlines()
            detail = detail[0] if detail else ''
            raise SampleLoadError(f'{_describe(self, idx)}: '
                                  f'{type(e).__name__}: {detail}') from e


@DATASETS.register_module()
class CheckedRawframeDataset(AnnotationCheckMixin, RawframeDataset):
    """MMAction2's ``RawframeDataset`` with the checks of
    :class:`AnnotationCheckMixin`; same arguments and samples."""


@DATASETS.register_module()
class CheckedVideoDataset(AnnotationCheckMixin, VideoDataset):
    """MMAction2's ``VideoDataset`` with the checks of
    :class:`AnnotationCheckMixin`; same arguments and samples."""
