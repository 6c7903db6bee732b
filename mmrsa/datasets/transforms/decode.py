# Copyright (c) mmrsa contributors. All rights reserved.
"""Decode a clip from a video file or from a folder of frames.

Something-Something V1 and SynthMotion are distributed as frames
(``RawframeDataset`` samples: ``frame_dir``, ``total_frames``), whereas a
user who runs a trained model has a video file (MMAction2's
``inference_recognizer(model, 'clip.mp4')`` passes only ``filename``). A test
pipeline written as::

    dict(type='VideoOrFramesInit', filename_tmpl='{:05}.jpg'),
    dict(type='SampleFrames', ...),
    dict(type='VideoOrFramesDecode'),

serves both: a rawframe sample passes through to MMAction2's
``RawFrameDecode`` untouched (the same frames as a ``RawFrameDecode``
pipeline), a video file is opened and decoded with decord (MMAction2's
``DecordInit`` / ``DecordDecode``), and a folder of frames is counted first.

Frames already decoded in memory (``imgs`` without ``filename`` or
``frame_dir``) pass both steps: MMAction2's ``demo/long_video_demo.py`` and
``demo/webcam_demo.py`` drop the decoding steps they know (``EXCLUED_STEPS``:
``DecordInit``, ``RawFrameDecode``, ...) and ``SampleFrames`` from a test
pipeline, keep every other step, and feed ``imgs``, ``img_shape``,
``modality``, ``num_clips`` and ``clip_len``.

The class names end in ``Init`` and ``Decode`` on purpose: MMAction2's
``ActionRecogInferencer`` recognises the decoding steps of a test pipeline by
these words and swaps them for those of its ``input_format``.
"""
import os
import os.path as osp
import re
import string
from typing import Dict, List, Tuple

from decord._ffi.base import DECORDError
from mmcv.transforms import BaseTransform

from mmaction.datasets.transforms import (DecordDecode, DecordInit,
                                          RawFrameDecode)
from mmaction.registry import TRANSFORMS

__all__ = ['VideoOrFramesInit', 'VideoOrFramesDecode', 'find_frames']


def _template_pattern(filename_tmpl: str) -> re.Pattern:
    """A regex matching the names ``filename_tmpl`` formats one int into,
    capturing the number. Only templates with exactly one field (RGB frames,
    e.g. ``'img_{:05}.jpg'``) are supported."""
    parts = list(string.Formatter().parse(filename_tmpl))
    fields = [p for p in parts if p[1] is not None]
    if len(fields) != 1:
        raise ValueError(
            f'filename_tmpl must have exactly one field for the frame '
            f"number (e.g. 'img_{{:05}}.jpg'), got {filename_tmpl!r}.")
    regex = ''
    for literal, field, _, _ in parts:
        regex += re.escape(literal)
        if field is not None:
            regex += r'(\d+)'
    return re.compile(regex + r'\Z')


def find_frames(frame_dir: str, filename_tmpl: str) -> Tuple[int, int]:
    """The frames of a folder named as ``filename_tmpl``.

    Args:
        frame_dir (str): The folder.
        filename_tmpl (str): Name of frame ``i``, ``filename_tmpl.format(i)``
            (e.g. ``'{:05}.jpg'`` for Something-Something V1).

    Returns:
        tuple[int, int]: ``(first, count)``: the frames are numbered
        ``first, first + 1, ..., first + count - 1``.

    Raises:
        ValueError: No file of the folder is named as the template, or the
            numbering has a gap.
    """
    pattern = _template_pattern(filename_tmpl)
    numbers: List[int] = []
    for name in os.listdir(frame_dir):
        match = pattern.match(name)
        # the exact name, zero padding included
        if match and filename_tmpl.format(int(match.group(1))) == name:
            numbers.append(int(match.group(1)))
    if not numbers:
        raise ValueError(
            f'{frame_dir} has no frames named as {filename_tmpl!r} '
            f'(e.g. {filename_tmpl.format(1)!r}); pass the filename_tmpl of '
            f'the frames to VideoOrFramesInit.')
    numbers.sort()
    first = numbers[0]
    for expected, number in enumerate(numbers, start=first):
        if number != expected:
            raise ValueError(
                f'{frame_dir}: frame {filename_tmpl.format(expected)!r} is '
                f'missing (frames {filename_tmpl.format(first)!r} to '
                f'{filename_tmpl.format(numbers[-1])!r} must all exist).')
    return first, len(numbers)


@TRANSFORMS.register_module()
class VideoOrFramesInit(BaseTransform):
    """Prepare a video file, a frame folder or a rawframe sample for
    ``SampleFrames``.

    - A rawframe sample (``frame_dir`` and ``total_frames`` given, as
      ``RawframeDataset`` makes them) passes unchanged.
    - A folder of frames (``filename`` or ``frame_dir`` naming a directory)
      gets ``frame_dir``, ``total_frames``, ``filename_tmpl`` and
      ``start_index`` (the number of its first frame, replacing the 0 that
      ``inference_recognizer`` sets for videos).
    - Frames decoded in memory (``imgs``, no ``filename`` nor
      ``frame_dir``, as MMAction2's long-video and webcam demos feed them)
      pass unchanged.
    - Anything else is a video file, opened by MMAction2's ``DecordInit``
      (``video_reader``, ``total_frames``, ``avg_fps``); a file decord
      cannot read raises ``ValueError``.

    Required keys: ``filename``, ``frame_dir`` or ``imgs``.

    Args:
        filename_tmpl (str): Frame names of a frame folder, used when the
            sample has no ``filename_tmpl`` of its own. Defaults to
            ``'img_{:05}.jpg'`` (MMAction2's rawframe layout).
        io_backend (str): Storage of the videos, as ``DecordInit``. Frame
            folders are only looked for on ``'disk'``. Defaults to ``'disk'``.
        num_threads (int): Decoding threads of decord. Defaults to 1.
        **kwargs: Other arguments of ``DecordInit`` (file client settings).
    """

    def __init__(self,
                 filename_tmpl: str = 'img_{:05}.jpg',
                 io_backend: str = 'disk',
                 num_threads: int = 1,
                 **kwargs) -> None:
        _template_pattern(filename_tmpl)  # checks the template
        self.filename_tmpl = filename_tmpl
        self.io_backend = io_backend
        self.video_init = DecordInit(
            io_backend=io_backend, num_threads=num_threads, **kwargs)

    def transform(self, results: Dict) -> Dict:
        """Add what ``SampleFrames`` and :class:`VideoOrFramesDecode` need.

        Args:
            results (dict): The result dict of the pipeline.

        Returns:
            dict: The updated result dict.
        """
        if 'frame_dir' in results and 'total_frames' in results:
            return results  # a rawframe sample
        path = results.get('frame_dir', results.get('filename'))
        if path is None and 'imgs' in results:
            return results  # frames in memory
        if path is None:
            raise KeyError(
                "VideoOrFramesInit needs 'filename' (a video file or a "
                "folder of frames), 'frame_dir' or decoded frames 'imgs' in "
                f'the sample, got keys {sorted(results)}.')
        if self.io_backend == 'disk' and osp.isdir(path):
            modality = results.get('modality', 'RGB')
            if modality != 'RGB':
                raise ValueError(f'a folder of frames is read as RGB frames, '
                                 f'the sample says modality={modality!r}.')
            filename_tmpl = results.get('filename_tmpl', self.filename_tmpl)
            first, count = find_frames(path, filename_tmpl)
            results.update(
                frame_dir=path,
                total_frames=count,
                filename_tmpl=filename_tmpl,
                start_index=first,
                modality=modality)
            return results
        if 'filename' not in results:
            raise ValueError(f'frame_dir {path!r} is not a folder.')
        try:
            return self.video_init.transform(results)
        except (RuntimeError, DECORDError) as err:
            raise ValueError(
                f'cannot read {path!r} as a video (decord: '
                f'{str(err).splitlines()[0]}); a frame folder must be a '
                f'directory.') from err

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}('
                f'filename_tmpl={self.filename_tmpl!r}, '
                f'io_backend={self.io_backend!r}, '
                f'num_threads={self.video_init.num_threads})')


@TRANSFORMS.register_module()
class VideoOrFramesDecode(BaseTransform):
    """Decode the sampled frames of what :class:`VideoOrFramesInit` opened.

    With an open video (``video_reader``) the frames are decoded by
    MMAction2's ``DecordDecode``, otherwise read from ``frame_dir`` by
    ``RawFrameDecode``; either adds ``imgs``, ``original_shape`` and
    ``img_shape``. Frames already in memory (``imgs``, neither of the two)
    are kept as they are; ``img_shape`` and ``original_shape`` are added
    from the first frame when missing.

    Required keys: ``frame_inds`` and ``video_reader`` or ``frame_dir``
    (with ``filename_tmpl``, ``modality``); or ``imgs``.

    Args:
        mode (str): Decoding mode of videos, ``'accurate'`` or
            ``'efficient'`` (see ``DecordDecode``). Defaults to
            ``'accurate'``.
        io_backend (str): Storage of the frames, as ``RawFrameDecode``.
            Defaults to ``'disk'``.
        decoding_backend (str): Image decoder of the frames, as
            ``RawFrameDecode``. Defaults to ``'cv2'``.
        **kwargs: Other arguments of ``RawFrameDecode`` (file client
            settings).
    """

    def __init__(self,
                 mode: str = 'accurate',
                 io_backend: str = 'disk',
                 decoding_backend: str = 'cv2',
                 **kwargs) -> None:
        if mode not in ('accurate', 'efficient'):
            raise ValueError(f"mode must be 'accurate' or 'efficient', "
                             f'got {mode!r}.')
        self.video_decode = DecordDecode(mode=mode)
        self.frames_decode = RawFrameDecode(
            io_backend=io_backend, decoding_backend=decoding_backend, **kwargs)

    def transform(self, results: Dict) -> Dict:
        """Decode ``results['frame_inds']`` into ``results['imgs']``.

        Args:
            results (dict): The result dict of the pipeline.

        Returns:
            dict: The updated result dict.
        """
        if results.get('video_reader') is not None:
            return self.video_decode.transform(results)
        if 'frame_dir' in results:
            return self.frames_decode.transform(results)
        if 'imgs' in results:  # frames in memory
            if results.get('img_shape') is None:
                results['img_shape'] = results['imgs'][0].shape[:2]
            results.setdefault('original_shape', results['img_shape'])
            return results
        raise KeyError(
            "VideoOrFramesDecode needs an open 'video_reader', a "
            "'frame_dir' or decoded frames 'imgs'; put VideoOrFramesInit "
            'before SampleFrames.')

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}('
                f'mode={self.video_decode.mode!r}, '
                f'io_backend={self.frames_decode.io_backend!r}, '
                f'decoding_backend={self.frames_decode.decoding_backend!r})')
