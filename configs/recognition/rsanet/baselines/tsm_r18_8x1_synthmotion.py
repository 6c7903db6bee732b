# TSM-ResNet18 (MMAction2's ResNetTSM), 8 frames, SynthMotion: a temporal
# baseline that shifts 1/8 of the channels each way in time. Data, schedule
# and head settings are those of ../rsanet_r18_8x1_synthmotion.py.
_base_ = ['../rsanet_r18_8x1_synthmotion.py']

num_frames = 8

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNetTSM',
        depth=18,
        pretrained=None,
        pretrained2d=False,  # needed with pretrained=None (MMAction2 1.2.0)
        num_segments=num_frames,
        shift_div=8,
        norm_eval=False),
    cls_head=dict(type='TSMHead', num_segments=num_frames, is_shift=True))
