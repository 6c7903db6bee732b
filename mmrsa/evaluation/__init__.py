# Copyright (c) mmrsa contributors. All rights reserved.
"""Scores of tested models: ensembles of dumps, time-reversal accuracy."""
from .ensemble import (EnsembleError, accuracies, align, check_out_path,
                       check_weights, ensemble, format_report, load_dump,
                       looks_like_probabilities, softmax, write_dump)
from .reversal import kernel_flip_scores, pair_metrics

__all__ = [
    'EnsembleError', 'accuracies', 'align', 'check_out_path', 'check_weights',
    'ensemble', 'format_report', 'load_dump', 'looks_like_probabilities',
    'softmax', 'write_dump', 'pair_metrics', 'kernel_flip_scores'
]
