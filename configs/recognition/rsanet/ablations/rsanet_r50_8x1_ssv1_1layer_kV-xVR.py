# Table 4a: kernel V, context VR; one RSA layer in stage 4.
_base_ = ['rsanet_r50_8x1_ssv1_1layer.py']

model = dict(backbone=dict(rsa_cfg=dict(kernel_type='V', context_type='VR')))
