# Copyright (c) mmrsa contributors. All rights reserved.
from .annotation_checks import (AnnotationError, CheckedRawframeDataset,
                                CheckedVideoDataset, SampleLoadError)
from .synthmotion import SynthMotionDataset
from .transforms import *  # noqa: F401,F403
from .transforms import __all__ as _transforms_all

__all__ = [
    'AnnotationError', 'CheckedRawframeDataset', 'CheckedVideoDataset',
    'SampleLoadError', 'SynthMotionDataset'
]
__all__ += list(_transforms_all)
