# Table 4c: kernel size M = 3x7x7.
_base_ = ['../rsanet_r50_8x1_ssv1.py']

model = dict(backbone=dict(rsa_cfg=dict(kernel_size=(3, 7, 7))))
