# RSANet-R50, 8 frames, FineGym Gym288; mean class accuracy.
_base_ = ['rsanet_r50_8x1_gym99.py']

num_classes = 288

model = dict(cls_head=dict(num_classes=num_classes))

ann_file_train = f'data/gym/annotations/gym{num_classes}_train.txt'
ann_file_val = f'data/gym/annotations/gym{num_classes}_val.txt'
ann_file_test = f'data/gym/annotations/gym{num_classes}_val.txt'

train_dataloader = dict(dataset=dict(ann_file=ann_file_train))
val_dataloader = dict(dataset=dict(ann_file=ann_file_val))
test_dataloader = dict(dataset=dict(ann_file=ann_file_test))
