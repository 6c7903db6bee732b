# Table 4d: group-wise query-key correlation with G = 4 groups.
_base_ = ['../rsanet_r50_8x1_ssv1.py']

model = dict(backbone=dict(rsa_cfg=dict(corr_groups=4)))
