# RSANet-R18, 8 frames, SynthMotion: the CPU demo (demo/synthmotion_demo.py).
#
# SynthMotion (tools/data/synthmotion/generate_synthmotion.py) is a generated
# motion set in the Something-Something V1 rawframe layout: 10 classes defined
# by motion alone, 4 pairs of them time reversals of each other. Everything
# below goes through the same data path as the SSv1 recipe (RawframeDataset,
# SampleFrames, RawFrameDecode, LabelAwareFlip, ...); to fit a 2-core CPU the
# 64x64 frames are scaled to 36 and cropped to 32, and the network is trained
# from scratch for 8 short epochs.
custom_imports = dict(imports=['mmrsa'], allow_failed_imports=False)
# checks before the first iteration: clip length and classes agree with the
# model; a loaded or resumed checkpoint fits it (mmrsa.engine.hooks)
custom_hooks = [
    dict(type='ClipCheckHook'),
    dict(type='CheckpointFitHook'),
    # a resumed run continues with the interrupted run's random state
    dict(type='RandomStateHook'),
    # distributed runs: the process group is destroyed before Python exits
    dict(type='ProcessGroupShutdownHook')
]
# auto-resume (--resume) from the newest checkpoint that loads
runner_type = 'ResumableRunner'
default_scope = 'mmaction'

num_frames = 8
num_classes = 10

# model: TSN-ResNet18 whose second block of every stage has an RSA layer in
# place of its second 3x3 convolution (4 RSA layers); M = 5x3x3 suits the
# 8x8 ... 1x1 maps of a 32x32 input. Trained from scratch, the blocks start
# with unit BN gammas: zero-initialised residual branches stall this short
# schedule.
model = dict(
    type='Recognizer2D',
    backbone=dict(
        type='RSANet',
        depth=18,
        pretrained=None,
        zero_init_residual=False,
        num_segments=num_frames,
        rsa_blocks=((1, ), (1, ), (1, ), (1, )),
        rsa_cfg=dict(
            kernel_size=(5, 3, 3),
            num_queries=8,
            latent_dim=None,  # D = Cq
            kernel_type='VR',
            context_type='VR',
            corr_groups=None,  # G = Cq
            norm='l2'),
        drop_path_rate=0.,
        norm_eval=False),
    cls_head=dict(
        type='TSNHead',
        num_classes=num_classes,
        in_channels=512,
        spatial_type='avg',
        consensus=dict(type='AvgConsensus', dim=1),
        dropout_ratio=0.3,
        init_std=0.01,
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        format_shape='NCHW'))

# dataset: python tools/data/synthmotion/generate_synthmotion.py \
#     --out data/synthmotion
# RawframeDataset that names the annotation line of a bad sample
dataset_type = 'CheckedRawframeDataset'
data_root = 'data/synthmotion/rawframes'
ann_file_train = 'data/synthmotion/synthmotion_train_list_rawframes.txt'
ann_file_val = 'data/synthmotion/synthmotion_val_list_rawframes.txt'
ann_file_test = ann_file_val
filename_tmpl = '{:05}.jpg'

# Classes never flipped: a horizontal flip turns "left to right" into "right
# to left" and "clockwise" into "anticlockwise". The ids are those of
# data/synthmotion/label_map.txt whose names contain one of these words;
# `label_file=..., keywords=...` derives the same ids from the names.
no_flip_labels = (0, 1, 6, 7)

train_pipeline = [
    dict(type='SampleFrames', clip_len=1, frame_interval=1,
         num_clips=num_frames),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(-1, 36)),
    dict(
        type='MultiScaleCrop',
        input_size=32,
        scales=(1, 0.875),
        random_crop=False,
        max_wh_scale_gap=1),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(type='LabelAwareFlip', flip_ratio=0.5,
         no_flip_labels=no_flip_labels),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    # a rawframe sample, a video file or a frame folder (inference APIs)
    dict(type='VideoOrFramesInit', filename_tmpl=filename_tmpl),
    dict(
        type='SampleFrames',
        clip_len=1,
        frame_interval=1,
        num_clips=num_frames,
        test_mode=True),
    dict(type='VideoOrFramesDecode'),
    dict(type='Resize', scale=(-1, 36)),
    dict(type='CenterCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]
test_pipeline = val_pipeline

train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_train,
        data_prefix=dict(img=data_root),
        filename_tmpl=filename_tmpl,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_val,
        data_prefix=dict(img=data_root),
        filename_tmpl=filename_tmpl,
        pipeline=val_pipeline,
        test_mode=True))
test_dataloader = val_dataloader

val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator

# schedule: short, from scratch; validation every epoch
max_epochs = 8
train_cfg = dict(
    type='EpochBasedTrainLoop',
    max_epochs=max_epochs,
    val_begin=1,
    val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.1,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - 1,
        eta_min_ratio=1e-2,
        by_epoch=True,
        begin=1,
        end=max_epochs,
        convert_to_iter_based=True)
]

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.),
    clip_grad=dict(max_norm=20, norm_type=2))

auto_scale_lr = dict(enable=False, base_batch_size=16)

# runtime
default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, ignore_last=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # the val split is also the test split: keep the last, not the best;
    # written atomically, the old one removed after the new one
    checkpoint=dict(
        type='AtomicCheckpointHook', interval=1, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    sync_buffers=dict(type='SyncBuffersHook'))

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'))

log_processor = dict(type='LogProcessor', window_size=10, by_epoch=True)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='ActionVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
