# RSANet-R50, 8 frames, Something-Something V2, tested on 2 clips per video.
_base_ = ['rsanet_r50_8x1_ssv2.py']

test_pipeline = [
    dict(type='VideoOrFramesInit'),
    dict(
        type='SampleFrames',
        clip_len=1,
        frame_interval=1,
        num_clips=_base_.num_frames,
        twice_sample=True,
        test_mode=True),
    dict(type='VideoOrFramesDecode'),
    dict(type='Resize', scale=(320, 240), keep_ratio=False),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]

test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
