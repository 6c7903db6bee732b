# SynthMotion data: 8-frame clips of 64x64 frames, scaled to 36 and cropped
# to 32 for a 2-core CPU.
#
# SynthMotion (tools/data/synthmotion/generate_synthmotion.py) is a generated
# motion set in the Something-Something V1 rawframe layout: 10 classes defined
# by motion alone, 4 pairs of them time reversals of each other. It goes
# through the same data path as the SSv1 recipe (RawframeDataset,
# SampleFrames, RawFrameDecode, LabelAwareFlip, ...).
#
# dataset: python tools/data/synthmotion/generate_synthmotion.py \
#     --out data/synthmotion
num_frames = 8

# mmrsa's SynthMotionDataset: a RawframeDataset with the SynthMotion classes
# that names the annotation line of a bad sample and, when the list is
# missing, the command that generates the set
dataset_type = 'SynthMotionDataset'
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
    dict(
        type='SampleFrames',
        clip_len=1,
        frame_interval=1,
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
