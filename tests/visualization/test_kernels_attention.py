# Copyright (c) mmrsa contributors. All rights reserved.
"""mmrsa.visualization.kernels.attention_vs_rsa_figure: the supplementary
Fig. 3 comparison (self-attention kernels next to RSA's)."""
import os.path as osp

import numpy as np
import pytest
import torch

from mmrsa.datasets.synthmotion import generate_synthmotion
from mmrsa.fileio.atomic import OverwriteRefusedError
from mmrsa.models.common import LocalSelfAttention
from mmrsa.visualization import kernels

SA = 'configs/recognition/rsanet/transforms/tsn_r18_8x1_synthmotion_sa.py'
RSA_1 = 'configs/recognition/rsanet/transforms/tsn_r18_8x1_synthmotion_rsa.py'


def test_attention_kernels_of_one_position():
    layer = LocalSelfAttention(16, num_queries=4, kernel_size=(3, 3, 3))
    x = torch.randn(1, 16, 4, 3, 3)
    k = kernels.attention_kernels(layer, x, (1, 2, 0))
    assert k.shape == (4, 3, 3, 3)
    assert torch.allclose(k.sum((1, 2, 3)), torch.ones(4))


def test_figure_of_both_models_and_the_reversed_clip(tmp_path):
    data = str(tmp_path / 'data')
    generate_synthmotion(data, num_train=2, num_val=2)
    out = str(tmp_path / 'fig3.png')
    clip = osp.join(data, 'rawframes', 'val_00000')
    result = kernels.attention_vs_rsa_figure(SA, 'none', RSA_1, 'none', clip,
                                             out)
    assert result['block'] == 'layer1.1' and result['queries'] == [0, 1, 2, 3]
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # the first (and only) temporal layer: RSA's basic kernel q P^T sees the
    # query's own frame only and does not change with the reversal
    assert result['basic']['same'] == pytest.approx(0., abs=1e-6)
    for name in ('attention', 'relational'):
        assert set(result[name]) == {'same', 'flipped'}
        assert np.isfinite(list(result[name].values())).all()
    with pytest.raises(OverwriteRefusedError):
        kernels.attention_vs_rsa_figure(SA, 'none', RSA_1, 'none', clip, out)
