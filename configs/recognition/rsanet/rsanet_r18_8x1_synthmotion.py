# RSANet-R18, 8 frames, SynthMotion: the CPU demo (demo/synthmotion_demo.py).
#
# The data (_base_/synthmotion_data.py) go through the same path as the SSv1
# recipe; to fit a 2-core CPU the 64x64 frames are scaled to 36 and cropped
# to 32, and the network is trained from scratch for 8 short epochs.
_base_ = [
    'mmaction::_base_/models/tsn_r50.py',
    '_base_/default_runtime.py',
    '_base_/synthmotion_data.py',
]

num_frames = _base_.num_frames  # 8, as the data's clips
num_classes = 10

# model: TSN-ResNet18 whose second block of every stage has an RSA layer in
# place of its second 3x3 convolution (4 RSA layers); M = 5x3x3 suits the
# 8x8 ... 1x1 maps of a 32x32 input. Trained from scratch, the blocks start
# with unit BN gammas: zero-initialised residual branches stall this short
# schedule.
model = dict(
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
    cls_head=dict(num_classes=num_classes, in_channels=512, dropout_ratio=0.3))

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

# runtime: the shared one (_base_/default_runtime.py), on a CPU: gloo, short
# log windows, a fixed seed
default_hooks = dict(
    logger=dict(interval=10),
    # the val split is also the test split: keep the last, not the best
    checkpoint=dict(
        _delete_=True,
        type='AtomicCheckpointHook',
        interval=1,
        max_keep_ckpts=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
log_processor = dict(window_size=10)
randomness = dict(seed=0, deterministic=False)
