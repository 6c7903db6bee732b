# Copyright (c) mmrsa contributors. All rights reserved.
"""Accuracy on classes that are time reversals of each other.

SynthMotion's classes differ only in motion, and four pairs of them are time
reversals of each other (left->right vs right->left, ...). A model blind to
frame order (TSN averages per-frame features) cannot tell the two classes
of a pair apart; :func:`pair_metrics` measures how often it does.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..datasets.synthmotion import REVERSED_PAIRS

__all__ = ['pair_metrics', 'kernel_flip_scores']


def pair_metrics(
        results: List[dict],
        pairs: Sequence[Tuple[int, int]] = REVERSED_PAIRS) -> Dict[str, float]:
    """Accuracies from dumped predictions (``pred_score``, ``gt_label``).

    Args:
        results (list[dict]): One prediction per clip, as
            :func:`mmrsa.evaluation.load_dump` or MMEngine's ``DumpResults``
            give them.
        pairs (Sequence[tuple[int, int]]): Classes that are time reversals
            of each other. Defaults to SynthMotion's.

    Returns:
        dict: ``top1`` over all clips; ``top1_pairs`` over the clips of the
        time-reversed classes; ``direction``, over those clips, how often
        the true class scores higher than its time reversal, ties counting
        half (50 % for a model blind to frame order); ``num_clips``.
    """
    scores = np.stack([np.asarray(r['pred_score']) for r in results])
    labels = np.array(
        [int(np.asarray(r['gt_label']).reshape(-1)[0]) for r in results])
    partner = {}
    for a, b in pairs:
        partner[a], partner[b] = b, a
    in_pair = np.array([label in partner for label in labels])
    pred = scores.argmax(1)
    rows = np.arange(len(labels))
    other = np.array([partner.get(label, label) for label in labels])
    true, reversal = scores[rows, labels], scores[rows, other]
    direction = (true > reversal) + 0.5 * (true == reversal)
    return dict(
        top1=float((pred == labels).mean()),
        top1_pairs=float((pred == labels)[in_pair].mean()),
        direction=float(direction[in_pair].mean()),
        num_clips=int(len(labels)))


def kernel_flip_scores(original: np.ndarray,
                       reversed_: np.ndarray) -> Dict[str, float]:
    """How the kernel of a time-reversed clip relates to the original's
    (the paper's Figure 3 question).

    Args:
        original (np.ndarray): Kernels ``[L, kt, ...]`` of the clip.
        reversed_ (np.ndarray): The same kernels for the reversed clip.

    Returns:
        dict[str, float]: ``same`` = |K_rev - K| / |K| and ``flipped`` =
        |K_rev - flip_t(K)| / |K| (Frobenius norms over all queries; 0 means
        identical).
    """
    norm = max(float(np.linalg.norm(original)), 1e-12)
    return dict(
        same=float(np.linalg.norm(reversed_ - original) / norm),
        flipped=float(np.linalg.norm(reversed_ - original[:, ::-1]) / norm))
