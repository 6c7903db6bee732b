# Main Table 2: TSN-ResNet50, 8 frames, SSv1, one 3x3 convolution of res4
# (block 3, where ../ablations/rsanet_r50_8x1_ssv1_1layer.py puts its RSA
# layer) replaced by a 3D convolution 5x7x7 (W_3D, the paper's [48]); M = 5x7x7
# as for every row.
_base_ = ['../ablations/rsanet_r50_8x1_ssv1_1layer.py']

model = dict(
    backbone=dict(
        transform='conv3d', rsa_cfg=dict(_delete_=True, kernel_size=(5, 7,
                                                                     7))))
