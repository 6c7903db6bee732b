# TimeSformer (MMAction2's TimeSformer backbone, divided space-time
# attention), 8 frames, SynthMotion: the attention peer of RSANet-R18 in the
# transform comparison (tools/analysis_tools/compare_transforms.py).
#
# Scaled down to train on a 2-core CPU in minutes, like RSANet-R18: 32x32
# input in 4x4 patches (8x8 patches per frame, 512 tokens per clip), embed
# dim 128, 4 heads, 4 layers (each a temporal attention over the 8 frames,
# a spatial attention over the 64 patches of a frame and an MLP): about
# 1.14 M parameters and 0.62 GFLOPs per clip (RSANet-R18: 8.75 M, 0.25 G),
# against ViT-B's 768 / 12 / 12 at 224x224. Trained from scratch. Data, schedule, optimizer and seed are those
# of ../rsanet_r18_8x1_synthmotion.py, except that the 8 frames are sampled
# as one clip of 8 frames 2 apart (SynthMotion clips have 16 frames: one
# frame of each 2-frame segment, as the segment-based sampling of the 2D
# models takes) and packed as [N, C, T, H, W] for the 3D recognizer.
_base_ = ['../rsanet_r18_8x1_synthmotion.py']

num_frames = 8
embed_dims = 128

model = dict(
    _delete_=True,
    type='Recognizer3D',
    backbone=dict(
        type='TimeSformer',
        pretrained=None,
        num_frames=num_frames,
        img_size=32,
        patch_size=4,
        embed_dims=embed_dims,
        num_heads=4,
        num_transformer_layers=4,
        in_channels=3,
        dropout_ratio=0.,
        attention_type='divided_space_time',
        norm_cfg=dict(type='LN', eps=1e-6)),
    cls_head=dict(
        type='TimeSformerHead',
        num_classes=10,
        in_channels=embed_dims,
        dropout_ratio=0.3,
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        format_shape='NCTHW'))

train_pipeline = [
    dict(
        type='SampleFrames',
        clip_len=num_frames,
        frame_interval=2,
        num_clips=1),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(-1, 36)),
    dict(
        type='MultiScaleCrop',
        input_size=32,
        scales=(1, 0.875),
        random_crop=False,
        max_wh_scale_gap=1),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(
        type='LabelAwareFlip',
        flip_ratio=0.5,
        no_flip_labels=_base_.no_flip_labels),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='VideoOrFramesInit', filename_tmpl=_base_.filename_tmpl),
    dict(
        type='SampleFrames',
        clip_len=num_frames,
        frame_interval=2,
        num_clips=1,
        test_mode=True),
    dict(type='VideoOrFramesDecode'),
    dict(type='Resize', scale=(-1, 36)),
    dict(type='CenterCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = val_pipeline

train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
