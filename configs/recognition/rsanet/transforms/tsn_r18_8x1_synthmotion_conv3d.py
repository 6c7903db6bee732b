# Table 2 at R18 scale on SynthMotion: TSN-ResNet18, 8 frames, one 3x3
# convolution of res4 (block 1, where RSANet-R18 has its res4 RSA layer)
# replaced by a 3D convolution 5x7x7 (W_3D, the paper's [48]). M = 5x3x3, as for every transform of this
# comparison (res4 maps are 2x2 on the 32x32 input). Data, schedule and head
# are those of ../rsanet_r18_8x1_synthmotion.py.
_base_ = ['../rsanet_r18_8x1_synthmotion.py']

model = dict(
    backbone=dict(
        rsa_blocks=((), (), (1, ), ()),
        transform='conv3d',
        rsa_cfg=dict(_delete_=True, kernel_size=(5, 3, 3))))
