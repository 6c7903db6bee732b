# Table 4a: kernel R, context V; one RSA layer in stage 4.
_base_ = ['rsanet_r50_8x1_ssv1_1layer.py']

model = dict(backbone=dict(rsa_cfg=dict(kernel_type='R', context_type='V')))
