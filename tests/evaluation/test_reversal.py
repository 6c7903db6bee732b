# Copyright (c) mmrsa contributors. All rights reserved.
"""mmrsa.evaluation.reversal: accuracy within time-reversed class pairs."""
import numpy as np

from mmrsa.evaluation import pair_metrics


def result(label, scores):
    return dict(pred_score=np.array(scores), gt_label=np.array([label]))


def test_perfect_and_order_blind_models():
    eye = np.eye(10)
    perfect = [result(i, eye[i]) for i in range(10)]
    assert pair_metrics(perfect) == dict(
        top1=1.0, top1_pairs=1.0, direction=1.0, num_clips=10)
    # an order-blind model: both classes of a pair get the same score, and
    # the first wins the argmax
    blind = []
    for i in range(10):
        s = eye[i].copy()
        partner = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4, 6: 7, 7: 6}.get(i)
        if partner is not None:
            s[partner] = 1.0
        blind.append(result(i, s))
    m = pair_metrics(blind)
    assert m['top1_pairs'] == 0.5 and m['direction'] == 0.5  # ties: half
    assert m['top1'] == 0.6


def test_other_pairs():
    # classes 0 and 2 are reversals here; the model prefers the wrong one
    scores = [result(0, [0.2, 0.5, 0.3]), result(2, [0.1, 0.1, 0.8])]
    m = pair_metrics(scores, pairs=((0, 2), ))
    assert m['top1'] == 0.5 and m['top1_pairs'] == 0.5
    assert m['direction'] == 0.5
