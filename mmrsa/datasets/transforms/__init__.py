# Copyright (c) mmrsa contributors. All rights reserved.
from .decode import VideoOrFramesDecode, VideoOrFramesInit, find_frames
from .flip import LabelAwareFlip, direction_label_ids, read_label_names

__all__ = [
    'LabelAwareFlip', 'direction_label_ids', 'read_label_names',
    'VideoOrFramesInit', 'VideoOrFramesDecode', 'find_frames'
]
