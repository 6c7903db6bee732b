# TSN-ResNet18 (MMAction2's ResNet), 8 frames, SynthMotion: the order-blind
# baseline of the CPU demo. Data, schedule and head are those of
# ../rsanet_r18_8x1_synthmotion.py; only the backbone differs.
_base_ = ['../rsanet_r18_8x1_synthmotion.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=18,
        pretrained=None,
        norm_eval=False))
