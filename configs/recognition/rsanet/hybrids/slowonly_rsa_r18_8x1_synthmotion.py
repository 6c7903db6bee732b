# SlowOnly-ResNet18 (MMAction2's ResNet3dSlowOnly, Recognizer3D, I3DHead)
# with RSA at the blocks of RSANet-R18, one clip of 8 frames, SynthMotion.
# RSAHybrid wraps the unchanged MMAction2 backbone and replaces the second
# 3x3 (or 3x3x3) convolution of the second block of every stage with an RSA
# layer (4 layers) that takes the clip [N, C, T, H, W] as it is.
# Data, schedule and RSA settings are those of
# ../rsanet_r18_8x1_synthmotion.py, except that the 8 frames form one clip
# formatted NCTHW: every second frame of the 16-frame videos, the same
# coverage as the 2D models' 8 segments.
_base_ = ['../rsanet_r18_8x1_synthmotion.py']

num_frames = 8
num_classes = 10
filename_tmpl = '{:05}.jpg'
no_flip_labels = (0, 1, 6, 7)  # as in ../_base_/synthmotion_data.py

model = dict(
    _delete_=True,
    type='Recognizer3D',
    backbone=dict(
        type='RSAHybrid',
        backbone=dict(
            type='ResNet3dSlowOnly',
            depth=18,
            pretrained=None,
            pretrained2d=False,  # needed with pretrained=None (MMAction2 1.2.0)
            lateral=False,
            conv1_kernel=(1, 7, 7),
            conv1_stride_t=1,
            pool1_stride_t=1,
            inflate=(0, 0, 1, 1),
            # unit BN gammas, as RSANet-R18 here: zero-initialised residual
            # branches stall this short schedule
            zero_init_residual=False,
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
    cls_head=dict(
        type='I3DHead',
        num_classes=num_classes,
        in_channels=512,
        spatial_type='avg',
        dropout_ratio=0.3,
        init_std=0.01,
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        format_shape='NCTHW'))

# the pipelines of ../_base_/synthmotion_data.py with one 8-frame clip
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
    dict(type='LabelAwareFlip', flip_ratio=0.5, no_flip_labels=no_flip_labels),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='VideoOrFramesInit', filename_tmpl=filename_tmpl),
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
test_dataloader = val_dataloader
