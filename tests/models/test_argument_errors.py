# Copyright (c) mmrsa contributors. All rights reserved.
"""Invalid RSA / RSANet arguments and clips fail at once, naming the value
and the allowed choices."""
import pytest
import torch

from mmrsa.models.common.rsa import RSA


@pytest.mark.parametrize('kwargs, message', [
    (dict(kernel_type='VV'), "kernel_type='VV' is not supported; choose one "
     "of ('V', 'R', 'VR')"),
    (dict(context_type='X'), "context_type='X' is not supported"),
    (dict(norm='layer'), "norm='layer' is not supported; choose one of "
     "('l2', 'none', 'bn')"),
    (dict(num_queries=5), 'out_channels=64 is not divisible by '
     'num_queries=5'),
    (dict(kernel_size=(4, 7, 7)), 'kernel_size must hold positive odd sizes'),
    (dict(kernel_size=3.0), 'kernel_size must be an int or a sequence of 3 '
     'ints (t, h, w), got 3.0'),
    (dict(kernel_size=(True, 3, 3)), 'kernel_size must be an int or a '
     'sequence of 3 ints'),
    (dict(corr_groups=3), 'corr_groups=3 must divide the query channels'),
    (dict(latent_dim=0), 'latent_dim must be a positive int or None'),
    (dict(stride=0), 'stride must be a positive int, got 0'),
])
def test_invalid_rsa_argument(kwargs, message):
    with pytest.raises(ValueError) as info:
        RSA(64, **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize('kwargs, message', [
    (dict(depth=20), 'depth=20 is not supported; choose one of '
     '(18, 34, 50, 101)'),
    (dict(num_segments=0), 'num_segments must be a positive int, got 0'),
    (dict(drop_path_rate=1.0), 'drop_path_rate must be in [0, 1)'),
    (dict(rsa_cfg=dict(heads=8)), "rsa_cfg has unknown keys ['heads']"),
    (dict(rsa_blocks=((), (2, ), (), ())), 'rsa_blocks[1]=(2,) must hold '
     'distinct block indices in [0, 2)'),
    (dict(rsa_blocks=((), (True, ), (), ())), 'rsa_blocks[1]=(True,) must '
     'hold distinct block indices'),
    (dict(rsa_blocks=((), ())), 'rsa_blocks must hold one sequence of block '
     'indices per stage (4 stages)'),
    (dict(rsa_cfg=dict(latent_dim=(4, 8))), "rsa_cfg['latent_dim']=(4, 8) "
     'must be a single value or one value per stage'),
])
def test_invalid_rsanet_argument(kwargs, message):
    from mmrsa.models import RSANet
    kwargs = dict(dict(depth=18), **kwargs)
    with pytest.raises(ValueError) as info:
        RSANet(**kwargs)
    assert message in str(info.value)


def test_clip_with_the_wrong_frame_count():
    from mmrsa.models import RSANet
    backbone = RSANet(18, num_segments=8, rsa_blocks=((), (1, ), (), ()))
    with pytest.raises(ValueError) as info:
        backbone(torch.zeros(12, 3, 32, 32))
    assert ('RSANet was built for clips of num_segments=8 frames and expects '
            'a batch of whole clips [N*8, C, H, W], got shape '
            '(12, 3, 32, 32)') in str(info.value)
