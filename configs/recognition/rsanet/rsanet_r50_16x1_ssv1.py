# RSANet-R50, 16 frames, Something-Something V1.
_base_ = ['rsanet_r50_8x1_ssv1.py']

num_frames = 16

model = dict(
    backbone=dict(num_segments=num_frames),
    cls_head=dict(num_segments=num_frames))

train_pipeline = [
    dict(type='SampleFrames', clip_len=1, frame_interval=1,
         num_clips=num_frames)
] + _base_.train_pipeline[1:]
val_pipeline = _base_.val_pipeline[:1] + [
    dict(
        type='SampleFrames',
        clip_len=1,
        frame_interval=1,
        num_clips=num_frames,
        test_mode=True)
] + _base_.val_pipeline[2:]
test_pipeline = val_pipeline

train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
