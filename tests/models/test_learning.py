# Copyright (c) mmrsa contributors. All rights reserved.
"""RSANet learns the order of frames; TSN cannot.

One fixed batch of ten SynthMotion clips (8 frames of 32 x 32, the input
of the SynthMotion configs), one clip per class, in which every time-reversal
pair of classes is exact: the clip of the second class is the clip of the
first with its frames in reverse order. RSANet-R18 and TSN-R18 are built from
the SynthMotion configs and trained on this batch with the same optimiser,
seed and number of steps, then scored in evaluation mode:

- RSANet fits the batch (mean cross-entropy below :data:`LOSS_BOUND`, every
  clip classified right), so it tells each clip from its reversal.
- TSN averages per-frame scores, which does not depend on frame order: a clip
  and its reversal get the same scores (to float rounding), so it cannot
  split a pair (at best it gives both classes 0.5; where the two are that
  close, an argmax is decided by rounding, so the test compares scores, not
  predictions), and its loss cannot fall below the floor
  :data:`TSN_LOSS_FLOOR` however long it trains.

Measured with seeds 0 to 7 (one thread; about 20 s of CPU time for both
tests): RSANet's loss 0.003 to 0.005, every clip right, probability gaps
within a pair of at least 0.99; TSN's scores for a clip and its reversal
differ by at most 3e-7, its loss 0.556 to 0.558 against the floor 0.5545.
"""
import math
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import set_random_seed
from torch.nn.modules.batchnorm import _BatchNorm

import mmrsa  # noqa: F401  (registers the modules)
from mmaction.registry import MODELS
from mmaction.structures import ActionDataSample
from mmrsa.datasets.synthmotion import (REVERSED_PAIRS, SYNTHMOTION_CLASSES,
                                        render_clip)

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs' / 'recognition'
RSANET_CONFIG = CONFIG_DIR / 'rsanet' / 'rsanet_r18_8x1_synthmotion.py'
TSN_CONFIG = (
    CONFIG_DIR / 'rsanet' / 'baselines' / 'tsn_r18_8x1_synthmotion.py')

SEED = 0
NUM_FRAMES = 8  # the configs' num_segments
SIZE = 32  # the configs' crop size
STEPS = 15  # full-batch optimiser steps, the same for both models
LR = 1e-3  # the configs' AdamW (weight decay 0.05, gradient clip 20)

#: Mean cross-entropy RSANet must reach on the batch (measured 0.003-0.005).
LOSS_BOUND = 0.1
#: How much more probability RSANet must give a clip's class on that clip
#: than on its reversal (measured >= 0.991).
PAIR_GAP_BOUND = 0.5
#: Largest difference of TSN's probabilities for a clip and its reversal
#: (float rounding of the frame average; measured <= 3e-7).
SAME_SCORE_TOL = 1e-5
#: Probability TSN must give the two classes of a pair together on each of
#: its clips: it did learn which pair a clip belongs to (measured >= 0.997).
PAIR_MASS_BOUND = 0.9
#: Equal scores p for both clips of a pair (classes a, b) cost at least
#: -ln p_a - ln p_b >= 2 ln 2 (since p_a + p_b <= 1): the least mean
#: cross-entropy of a model blind to frame order on this batch.
TSN_LOSS_FLOOR = len(REVERSED_PAIRS) * 2 * math.log(2) / len(
    SYNTHMOTION_CLASSES)


def _clip_rng(label: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([SEED, label]))


def reversal_batch() -> Tuple[List[np.ndarray], List[int]]:
    """One clip per class, ``[T, H, W, 3]`` uint8; clips ``2i`` and ``2i+1``
    are the i-th reversal pair, the second the first played backwards."""
    clips, labels = [], []
    for forward, backward in REVERSED_PAIRS:
        clip = render_clip(
            forward, _clip_rng(forward), size=SIZE, num_frames=NUM_FRAMES)
        # the generator draws the reversed class from the same stream and
        # plays it backwards: the same frames, in reverse order
        reversed_clip = render_clip(
            backward, _clip_rng(forward), size=SIZE, num_frames=NUM_FRAMES)
        assert np.array_equal(reversed_clip, clip[::-1])
        clips += [clip, reversed_clip]
        labels += [forward, backward]
    paired = {label for pair in REVERSED_PAIRS for label in pair}
    for label in range(len(SYNTHMOTION_CLASSES)):
        if label not in paired:  # held still, shaking
            clips.append(
                render_clip(
                    label, _clip_rng(label), size=SIZE, num_frames=NUM_FRAMES))
            labels.append(label)
    return clips, labels


def as_data(clips: List[np.ndarray], labels: List[int]) -> Dict[str, list]:
    """What a dataloader gives the model: per clip a ``[T, 3, H, W]`` uint8
    tensor (FormatShape 'NCHW') and a data sample with its label."""
    return dict(
        inputs=[
            torch.from_numpy(np.ascontiguousarray(c)).permute(0, 3, 1, 2)
            for c in clips
        ],
        data_samples=[ActionDataSample().set_gt_label(y) for y in labels])


@torch.no_grad()
def batch_statistics(model: torch.nn.Module, data: Dict[str, list]) -> None:
    """Set every BN's running statistics to those of ``data``.

    The running averages (momentum 0.1) trail the statistics the weights
    were last trained with; evaluation mode is meant to be scored with the
    statistics of the training data, here the one batch.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: one pass gives the batch's
    model.train()
    model.test_step(data)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def train_and_score(config: Path) -> Tuple[torch.Tensor, List[int]]:
    """Train the config's model on :func:`reversal_batch` for ``STEPS``
    steps; return its evaluation-mode probabilities ``[10, 10]`` and the
    labels."""
    init_default_scope('mmaction')
    cfg = Config.fromfile(str(config))
    # one fixed batch: nothing for dropout to regularise
    cfg.model.cls_head.dropout_ratio = 0.
    cfg.optim_wrapper.optimizer.lr = LR
    set_random_seed(SEED)
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    clips, labels = reversal_batch()

    model.train()
    for _ in range(STEPS):
        model.train_step(as_data(clips, labels), optim_wrapper)

    batch_statistics(model, as_data(clips, labels))
    model.eval()
    with torch.no_grad():
        results = model.test_step(as_data(clips, labels))
    # average_clips='prob': softmax probabilities per clip
    return torch.stack([r.pred_score for r in results]), labels


def _loss(probs: torch.Tensor, labels: List[int]) -> float:
    """Mean cross-entropy of probabilities ``[N, K]``."""
    picked = probs[torch.arange(len(labels)), torch.tensor(labels)]
    return -picked.log().mean().item()


def test_rsanet_fits_batch_and_separates_reversed_pairs():
    probs, labels = train_and_score(RSANET_CONFIG)

    assert _loss(probs, labels) < LOSS_BOUND
    assert probs.argmax(1).tolist() == labels  # every clip right
    for i, (forward, backward) in enumerate(REVERSED_PAIRS):
        clip, reversed_clip = probs[2 * i], probs[2 * i + 1]
        assert clip[forward] - reversed_clip[forward] >= PAIR_GAP_BOUND
        assert reversed_clip[backward] - clip[backward] >= PAIR_GAP_BOUND


def test_tsn_scores_a_clip_and_its_reversal_the_same():
    probs, labels = train_and_score(TSN_CONFIG)

    for i, (forward, backward) in enumerate(REVERSED_PAIRS):
        clip, reversed_clip = probs[2 * i], probs[2 * i + 1]
        torch.testing.assert_close(
            reversed_clip, clip, rtol=0, atol=SAME_SCORE_TOL)
        # trained as far as order allows: the pair's two classes take
        # (nearly) all the probability, but it cannot split them
        assert clip[forward] + clip[backward] >= PAIR_MASS_BOUND
    # a loss no training brings below the floor (up to the rounding above)
    assert _loss(probs, labels) >= TSN_LOSS_FLOOR - 1e-4
    # the clips that have no reversal in the batch are right
    unpaired = range(2 * len(REVERSED_PAIRS), len(labels))
    assert [probs[i].argmax().item()
            for i in unpaired] == [labels[i] for i in unpaired]
