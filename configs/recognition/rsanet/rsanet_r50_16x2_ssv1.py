# RSANet-R50, 16 frames, Something-Something V1, tested on 2 clips per video.
_base_ = ['rsanet_r50_16x1_ssv1.py']

test_pipeline = _base_.test_pipeline[:1] + [
    dict(
        type='SampleFrames',
        clip_len=1,
        frame_interval=1,
        num_clips=_base_.num_frames,
        twice_sample=True,
        test_mode=True)
] + _base_.test_pipeline[2:]

test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
