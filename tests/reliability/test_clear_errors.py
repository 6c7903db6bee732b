# Copyright (c) mmrsa contributors. All rights reserved.
"""Bad input fails early with a message that says what is wrong and where:
invalid RSA / RSANet arguments, pipelines that disagree with the backbone's
``num_segments``, clips with the wrong frame count, annotation lines that
point at missing frames or videos or at a corrupt video, and checkpoints of
another architecture."""
import copy
import importlib.util
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmrsa  # noqa: F401
from mmaction.registry import DATASETS, MODELS
from mmrsa.engine import (AnnotationError, CheckpointMismatchError,
                          ClipSamplingError, SampleLoadError,
                          check_checkpoint_fits, check_clip_sampling)
from mmrsa.models.common.rsa import RSA
from reliability_utils import DEMO_CONFIG, REPO_ROOT, run_tool

TSN_CONFIG = str(REPO_ROOT / 'configs' / 'recognition' / 'rsanet' /
                 'baselines' / 'tsn_r18_8x1_synthmotion.py')


def _cfg() -> Config:
    cfg = Config.fromfile(DEMO_CONFIG)
    init_default_scope('mmaction')
    return cfg


# ------------------------------------------------------------ arguments ----


@pytest.mark.parametrize('kwargs, message', [
    (dict(kernel_type='VV'), "kernel_type='VV' is not supported; choose one "
     "of ('V', 'R', 'VR')"),
    (dict(context_type='X'), "context_type='X' is not supported"),
    (dict(norm='layer'), "norm='layer' is not supported; choose one of "
     "('l2', 'none', 'bn')"),
    (dict(num_queries=5), 'out_channels=64 is not divisible by '
     'num_queries=5'),
    (dict(kernel_size=(4, 7, 7)), 'kernel_size must hold positive odd sizes'),
    (dict(corr_groups=3), 'corr_groups=3 must divide the query channels'),
    (dict(latent_dim=0), 'latent_dim must be a positive int or None'),
    (dict(stride=0), 'stride must be a positive int, got 0'),
])
def test_invalid_rsa_argument(kwargs, message):
    with pytest.raises(ValueError) as info:
        RSA(64, **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize('kwargs, message', [
    (dict(depth=20), 'depth=20 is not supported; choose one of '
     '(18, 34, 50, 101)'),
    (dict(num_segments=0), 'num_segments must be a positive int, got 0'),
    (dict(drop_path_rate=1.0), 'drop_path_rate must be in [0, 1)'),
    (dict(rsa_cfg=dict(heads=8)), "rsa_cfg has unknown keys ['heads']"),
    (dict(rsa_blocks=((), (2, ), (), ())), 'rsa_blocks[1]=(2,) must hold '
     'distinct block indices in [0, 2)'),
    (dict(rsa_blocks=((), ())), 'rsa_blocks must hold one sequence of block '
     'indices per stage (4 stages)'),
    (dict(rsa_cfg=dict(latent_dim=(4, 8))), "rsa_cfg['latent_dim']=(4, 8) "
     'must be a single value or one value per stage'),
])
def test_invalid_rsanet_argument(kwargs, message):
    from mmrsa.models import RSANet
    kwargs = dict(dict(depth=18), **kwargs)
    with pytest.raises(ValueError) as info:
        RSANet(**kwargs)
    assert message in str(info.value)


def test_clip_with_the_wrong_frame_count():
    from mmrsa.models import RSANet
    backbone = RSANet(18, num_segments=8, rsa_blocks=((), (1, ), (), ()))
    with pytest.raises(ValueError) as info:
        backbone(torch.zeros(12, 3, 32, 32))
    assert ('RSANet was built for clips of num_segments=8 frames and expects '
            'a batch of whole clips [N*8, C, H, W], got shape '
            '(12, 3, 32, 32)') in str(info.value)


# --------------------------------------------- num_segments vs num_clips ----


def _runner(cfg: Config, tmp_path):
    from mmengine.runner import Runner
    cfg.work_dir = str(tmp_path / 'work_dir')
    cfg.log_level = 'WARNING'
    return Runner.from_cfg(cfg)


def test_train_num_clips_disagrees_when_the_model_is_built(tmp_path):
    cfg = _cfg()
    cfg.train_dataloader.dataset.pipeline[0]['num_clips'] = 16
    with pytest.raises(ClipSamplingError) as info:
        _runner(cfg, tmp_path)  # Runner.__init__, no data read
    assert str(info.value).startswith(
        'model.backbone.num_segments=8, but the train pipeline '
        '(train_dataloader) samples 16 frames per video (SampleFrames: '
        'clip_len=1 x num_clips=16)')


def test_test_num_clips_not_a_multiple(tmp_path):
    cfg = _cfg()
    cfg.test_dataloader = copy.deepcopy(cfg.test_dataloader)
    cfg.test_dataloader.dataset.pipeline[0]['num_clips'] = 12
    with pytest.raises(ClipSamplingError,
                       match='the test pipeline .* samples 12 frames per '
                       'video .* not a whole number of clips of 8'):
        _runner(cfg, tmp_path)


def test_num_segments_changed_but_not_the_pipelines():
    cfg = _cfg()
    cfg.model.backbone.num_segments = 16
    model = MODELS.build(cfg.model)
    with pytest.raises(ClipSamplingError,
                       match='num_segments=16, but the train pipeline'):
        check_clip_sampling(model, [('train', cfg.train_dataloader)])


def test_twice_sample_and_multi_view_testing_are_fine():
    cfg = _cfg()
    model = MODELS.build(cfg.model)
    test = copy.deepcopy(cfg.test_dataloader)
    test.dataset.pipeline[0].update(twice_sample=True)
    views = copy.deepcopy(cfg.test_dataloader)
    views.dataset.pipeline[0].update(num_clips=24)
    check_clip_sampling(model, [('train', cfg.train_dataloader),
                                ('test', test), ('val', views)])


# ------------------------------------------------------------------ data ----


def _pipeline(video: bool = False):
    steps = [
        dict(type='SampleFrames', clip_len=1, num_clips=8, test_mode=True),
        dict(type='DecordDecode' if video else 'RawFrameDecode'),
        dict(type='FormatShape', input_format='NCHW'),
        dict(type='PackActionInputs')
    ]
    return ([dict(type='DecordInit')] if video else []) + steps


def _rawframes(root, **kwargs):
    init_default_scope('mmaction')
    return DATASETS.build(
        dict(
            type='RawframeDataset',
            ann_file=str(root / 'synthmotion_val_list_rawframes.txt'),
            data_prefix=dict(img=str(root / 'rawframes')),
            filename_tmpl='{:05}.jpg',
            pipeline=_pipeline(),
            test_mode=True,
            **kwargs))


@pytest.fixture
def data_copy(synth_dir, tmp_path):
    root = tmp_path / 'synthmotion'
    shutil.copytree(synth_dir / 'data' / 'synthmotion', root)
    return root


def test_missing_frame_folder_is_found_when_the_dataset_is_built(data_copy):
    shutil.rmtree(data_copy / 'rawframes' / 'val_00002')
    with pytest.raises(AnnotationError) as info:
        _rawframes(data_copy)
    message = str(info.value)
    assert message.startswith(
        f'{data_copy}/synthmotion_val_list_rawframes.txt: 1 of 4 samples '
        f'point at missing data')
    assert (f'line 3: frame folder {data_copy}/rawframes/val_00002 does not '
            f'exist') in message


def test_wrong_frame_count_is_found_when_the_dataset_is_built(data_copy):
    (data_copy / 'rawframes' / 'val_00001' / '00016.jpg').unlink()
    with pytest.raises(AnnotationError) as info:
        _rawframes(data_copy)
    assert (f'line 2: frame {data_copy}/rawframes/val_00001/00016.jpg does '
            f"not exist (total_frames=16, filename_tmpl='{{:05}}.jpg')"
            ) in str(info.value)


def test_frame_missing_at_load_time_names_file_and_line(data_copy):
    dataset = _rawframes(data_copy)
    for i in range(2, 16):  # keep the first and last frame only
        (data_copy / 'rawframes' / 'val_00003' / f'{i:05}.jpg').unlink()
    with pytest.raises(SampleLoadError) as info:
        dataset[3]
    assert str(info.value).startswith(
        f'{data_copy}/synthmotion_val_list_rawframes.txt, line 4: cannot '
        f'load the frames in {data_copy}/rawframes/val_00003: '
        f'FileNotFoundError:')
    assert "No such file or directory: '" in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_missing_video_is_found_when_the_dataset_is_built(data_copy):
    (data_copy / 'videos' / 'val_00000.mp4').unlink()
    init_default_scope('mmaction')
    with pytest.raises(AnnotationError) as info:
        DATASETS.build(
            dict(
                type='VideoDataset',
                ann_file=str(data_copy / 'synthmotion_val_list_videos.txt'),
                data_prefix=dict(video=str(data_copy / 'videos')),
                pipeline=_pipeline(video=True),
                test_mode=True))
    assert (f'line 1: video {data_copy}/videos/val_00000.mp4 does not exist'
            in str(info.value))


def test_corrupt_video_names_file_and_line(data_copy):
    video = data_copy / 'videos' / 'val_00001.mp4'
    video.write_bytes(video.read_bytes()[:2000])  # truncated
    init_default_scope('mmaction')
    dataset = DATASETS.build(
        dict(
            type='VideoDataset',
            ann_file=str(data_copy / 'synthmotion_val_list_videos.txt'),
            data_prefix=dict(video=str(data_copy / 'videos')),
            pipeline=_pipeline(video=True),
            test_mode=True))
    assert dataset[0]['inputs'].shape[0] == 8
    with pytest.raises(SampleLoadError) as info:
        dataset[1]
    assert str(info.value).startswith(
        f'{data_copy}/synthmotion_val_list_videos.txt, line 2: cannot load '
        f'the video {video}:')


def test_unparsable_annotation_line(data_copy):
    ann = data_copy / 'synthmotion_val_list_rawframes.txt'
    lines = ann.read_text().splitlines()
    lines[2] = 'val_00002 sixteen 2'
    ann.write_text('\n'.join(lines) + '\n')
    with pytest.raises(AnnotationError) as info:
        _rawframes(data_copy)
    assert str(info.value) == (
        f"{ann}, line 3: cannot parse 'val_00002 sixteen 2': expected "
        f'"<frame_dir> <total_frames> <label>" with integer numbers')


# ----------------------------------------------------------- checkpoints ----


@pytest.fixture
def tsn_checkpoint(tmp_path):
    """A checkpoint of the TSN baseline (plain ResNet-18, no RSA)."""
    cfg = Config.fromfile(TSN_CONFIG)
    init_default_scope('mmaction')
    path = tmp_path / 'tsn.pth'
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), path)
    return path


def test_checkpoint_of_another_architecture_names_the_keys(tsn_checkpoint):
    model = MODELS.build(_cfg().model)
    checkpoint = torch.load(tsn_checkpoint)
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_fits(model, checkpoint, str(tsn_checkpoint))
    message = str(info.value)
    assert message.startswith(f'{tsn_checkpoint} does not fit the model '
                              f'Recognizer2D built from the config')
    # the RSA layer of res3 (layer2.1) is a 3x3 conv in TSN
    assert 'model keys missing from the checkpoint: ' in message
    assert 'backbone.layer2.1.conv2.conv.P1' in info.value.missing
    assert 'backbone.layer2.1.conv2.conv.weight' in info.value.unexpected


def test_checkpoint_with_other_shapes_names_them(tmp_path):
    cfg = _cfg()
    model = MODELS.build(cfg.model)
    cfg.model.cls_head.num_classes = 174
    other = MODELS.build(cfg.model)
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_fits(model, dict(state_dict=other.state_dict()))
    assert ('2 tensors of another shape: cls_head.fc_cls.weight (checkpoint '
            '[174, 512], model [10, 512]), cls_head.fc_cls.bias (checkpoint '
            '[174], model [10])') in str(info.value)
    check_checkpoint_fits(other, dict(state_dict=other.state_dict()))


def test_demo_refuses_another_architecture(tsn_checkpoint, synth_dir):
    spec = importlib.util.spec_from_file_location(
        'mmrsa_demo_for_errors', REPO_ROOT / 'demo' / 'demo.py')
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    video = synth_dir / 'data' / 'synthmotion' / 'videos' / 'val_00000.mp4'
    with pytest.raises(SystemExit) as info:
        demo.main([str(video), DEMO_CONFIG, str(tsn_checkpoint)])
    assert 'does not fit the model Recognizer2D' in str(info.value.code)
    assert 'backbone.layer2.1.conv2.conv.P1' in str(info.value.code)


def test_test_tool_refuses_another_architecture(tsn_checkpoint, synth_dir,
                                                tmp_path):
    result = run_tool([
        REPO_ROOT / 'tools' / 'test.py', DEMO_CONFIG, tsn_checkpoint,
        '--work-dir', tmp_path / 'work_dir', '--cfg-options',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False'
    ], cwd=synth_dir)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert f'error: {tsn_checkpoint} does not fit the model' in result.stderr
    assert 'backbone.layer2.1.conv2.conv.P1' in result.stderr
    assert 'Epoch(test)' not in result.stdout  # nothing was evaluated
