# TSM-ResNet18 (MMAction2's ResNetTSM) with RSA at the blocks of RSANet-R18,
# 8 frames, SynthMotion. RSAHybrid wraps the unchanged MMAction2 backbone and
# replaces the second 3x3 convolution of the second block of every stage
# with an RSA layer (4 layers); the temporal shift stays in every block.
# Data, schedule, RSA settings and head are those of
# ../rsanet_r18_8x1_synthmotion.py; the head is TSM's, as in
# ../baselines/tsm_r18_8x1_synthmotion.py.
_base_ = ['../rsanet_r18_8x1_synthmotion.py']

num_frames = 8

model = dict(
    backbone=dict(
        _delete_=True,
        type='RSAHybrid',
        backbone=dict(
            type='ResNetTSM',
            depth=18,
            pretrained=None,
            pretrained2d=False,  # needed with pretrained=None (MMAction2 1.2.0)
            num_segments=num_frames,
            shift_div=8,
            norm_eval=False),
        rsa_blocks=((1, ), (1, ), (1, ), (1, )),
        rsa_cfg=dict(
            kernel_size=(5, 3, 3),
            num_queries=8,
            latent_dim=None,  # D = Cq
            kernel_type='VR',
            context_type='VR',
            corr_groups=None,  # G = Cq
            norm='l2')),
    cls_head=dict(type='TSMHead', num_segments=num_frames, is_shift=True))
