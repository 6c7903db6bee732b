# RSANet-R50, 8 frames, FineGym Gym99; mean class accuracy.
# Supplementary Sec. 1: 8 frames, 50 epochs, dropout 0.5; the rest of the
# Something-Something recipe is kept.
_base_ = ['rsanet_r50_8x1_ssv2.py']

num_frames = 8
num_classes = 99

model = dict(cls_head=dict(num_classes=num_classes, dropout_ratio=0.5))

# dataset: MMAction2's gym layout (tools/data/gym), trimmed sub-action videos
# VideoDataset that names the annotation line of a bad sample
dataset_type = 'CheckedVideoDataset'
data_root = 'data/gym/subactions'
data_root_val = 'data/gym/subactions'
ann_file_train = f'data/gym/annotations/gym{num_classes}_train.txt'
ann_file_val = f'data/gym/annotations/gym{num_classes}_val.txt'
ann_file_test = f'data/gym/annotations/gym{num_classes}_val.txt'

train_pipeline = [
    dict(type='DecordInit'),
    dict(
        type='SampleFrames',
        clip_len=1,
        frame_interval=1,
        num_clips=num_frames),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(320, 240), keep_ratio=False),
    dict(
        type='MultiScaleCrop',
        input_size=224,
        scales=(1, 0.875, 0.75, 0.66),
        random_crop=False,
        max_wh_scale_gap=1,
        num_fixed_crops=13),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),  # no direction-dependent classes
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]

train_dataloader = dict(
    dataset=dict(
        ann_file=ann_file_train,
        data_prefix=dict(video=data_root),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(ann_file=ann_file_val, data_prefix=dict(video=data_root_val)))
test_dataloader = dict(
    dataset=dict(
        ann_file=ann_file_test, data_prefix=dict(video=data_root_val)))

val_evaluator = dict(
    type='AccMetric', metric_list=('top_k_accuracy', 'mean_class_accuracy'))
test_evaluator = val_evaluator

default_hooks = dict(checkpoint=dict(save_best='acc/mean1'))
