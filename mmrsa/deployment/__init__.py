# Copyright (c) mmrsa contributors. All rights reserved.
"""Deployment: ONNX export of recognizers (:mod:`.onnx`).

Not imported by ``import mmrsa``; it needs the optional packages ``onnx``,
``onnxruntime`` and ``onnxscript`` (``pip install -r
requirements/tests.txt``).
"""
from .onnx import (EXPORTERS, ClipClassifier, benchmark_onnx,
                   build_clip_classifier, check_onnx, default_input_shape,
                   export_config, export_onnx, onnx_session, summarize_times,
                   time_onnx)

__all__ = [
    'EXPORTERS', 'ClipClassifier', 'build_clip_classifier',
    'default_input_shape', 'export_onnx', 'check_onnx', 'onnx_session',
    'time_onnx', 'benchmark_onnx', 'summarize_times', 'export_config'
]
