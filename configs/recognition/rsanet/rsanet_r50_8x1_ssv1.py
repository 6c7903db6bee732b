# RSANet-R50, 8 frames, Something-Something V1 (paper Sec. 5.1, supp. Sec. 1).
_base_ = [
    'mmaction::_base_/models/tsn_r50.py',
    '_base_/default_runtime.py',
]

num_frames = 8

# model: TSN-ResNet50 with 7 RSA layers (L = 8, D = Cq, M = 5x7x7)
model = dict(
    backbone=dict(
        type='RSANet',
        depth=50,
        pretrained='torchvision://resnet50',
        num_segments=num_frames,
        rsa_blocks=((2, ), (1, 3), (1, 3, 5), (1, )),
        rsa_cfg=dict(
            kernel_size=(5, 7, 7),
            num_queries=8,
            latent_dim=None,  # D = Cq
            kernel_type='VR',
            context_type='VR',
            corr_groups=None,  # G = Cq, the Hadamard product
            norm='l2'),
        drop_path_rate=0.2,
        norm_eval=False),
    # The classifier runs on every frame and the frame scores of each clip
    # are averaged (as the official TSN code does); per-clip scores let
    # multi-clip testing average softmax scores over clips, as the paper.
    cls_head=dict(
        type='TSMHead',
        num_segments=num_frames,
        is_shift=False,
        num_classes=174,
        in_channels=2048,
        spatial_type='avg',
        consensus=dict(type='AvgConsensus', dim=1),
        dropout_ratio=0.3,
        label_smooth_eps=0.1,
        init_std=0.01,
        average_clips='prob'))

# dataset: MMAction2's sthv1 layout (tools/data/sthv1)
# RawframeDataset that names the annotation line of a bad sample
dataset_type = 'CheckedRawframeDataset'
data_root = 'data/sthv1/rawframes'
data_root_val = 'data/sthv1/rawframes'
ann_file_train = 'data/sthv1/sthv1_train_list_rawframes.txt'
ann_file_val = 'data/sthv1/sthv1_val_list_rawframes.txt'
ann_file_test = 'data/sthv1/sthv1_val_list_rawframes.txt'
filename_tmpl = '{:05}.jpg'

# Classes never flipped (their names say "left" or "right"). These ids follow
# MMAction2's sthv1 annotation lists, which number the classes in the line
# order of something-something-v1-labels.csv; in the alphabetical order of
# the official code (and of SSv2) the same classes are 86, 87, 93, 94, 166,
# 167. `label_file=<labels file>` derives them from the names instead; it
# also protects class 104 ("... pulling it right out ..."), whose "right" is
# no direction, which costs only that class's flips.
no_flip_labels = (2, 4, 30, 41, 52, 66)

train_pipeline = [
    dict(
        type='SampleFrames',
        clip_len=1,
        frame_interval=1,
        num_clips=num_frames),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(320, 240), keep_ratio=False),
    dict(
        type='MultiScaleCrop',
        input_size=224,
        scales=(1, 0.875, 0.75, 0.66),
        random_crop=False,
        max_wh_scale_gap=1,
        num_fixed_crops=13),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='LabelAwareFlip', flip_ratio=0.5, no_flip_labels=no_flip_labels),
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
    dict(type='Resize', scale=(320, 240), keep_ratio=False),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]
test_pipeline = val_pipeline

train_dataloader = dict(
    batch_size=8,  # x 8 GPUs = 64, the paper's batch
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_train,
        data_prefix=dict(img=data_root),
        filename_tmpl=filename_tmpl,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_val,
        data_prefix=dict(img=data_root_val),
        filename_tmpl=filename_tmpl,
        pipeline=val_pipeline,
        test_mode=True))
test_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_test,
        data_prefix=dict(img=data_root_val),
        filename_tmpl=filename_tmpl,
        pipeline=test_pipeline,
        test_mode=True))

val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator

# schedule: 50 epochs, 5 linear warm-up epochs, cosine to 1e-3 x lr
max_epochs = 50
warmup_epochs = 5
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
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        eta_min_ratio=1e-3,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True)
]

# SGD with Nesterov momentum; as the official optimiser policies: no weight
# decay on BN and biases, biases at twice the learning rate.
optim_wrapper = dict(
    optimizer=dict(
        type='SGD', lr=0.02, momentum=0.9, weight_decay=5e-4, nesterov=True),
    paramwise_cfg=dict(
        norm_decay_mult=0., bias_decay_mult=0., bias_lr_mult=2.),
    clip_grad=dict(max_norm=100, norm_type=2))

# lr 0.02 is for 64 clips per iteration; `--auto-scale-lr` rescales it
auto_scale_lr = dict(enable=False, base_batch_size=64)
