# Copyright (c) mmrsa contributors. All rights reserved.
"""Every config of ``configs/recognition/rsanet`` loads, builds its model and
runs its pipelines on tiny fake data; the SSv1 recipe trains, validates and
tests through MMAction2's ``Runner``. The recipes share one runtime
(``_base_/default_runtime.py``) and write their pipelines out."""
import ast
import copy
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmrsa  # noqa: F401
from mmaction.registry import DATASETS, MODELS, TRANSFORMS

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / 'configs' / 'recognition' / 'rsanet'
#: every config file, the shared bases of ``_base_/`` included
CONFIG_FILES = sorted(CONFIG_DIR.rglob('*.py'))
#: the recipes (what ``tools/train.py`` is given): all but ``_base_/``
CONFIGS = [
    p for p in CONFIG_FILES if '_base_' not in p.relative_to(CONFIG_DIR).parts
]
RUNTIME = CONFIG_DIR / '_base_' / 'default_runtime.py'
MAIN = CONFIG_DIR / 'rsanet_r50_8x1_ssv1.py'
NUM_FRAMES = 20


@pytest.fixture(autouse=True, scope='module')
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def fake_data(tmp_path_factory):
    """Two rawframe folders and two videos, with annotation lists."""
    root = tmp_path_factory.mktemp('fake_data')
    rng = np.random.default_rng(0)
    frames_root = root / 'rawframes'
    videos_root = root / 'videos'
    videos_root.mkdir()
    raw_lines, video_lines = [], []
    for i, label in enumerate((86, 3)):
        folder = frames_root / f'clip{i}'
        folder.mkdir(parents=True)
        for j in range(1, NUM_FRAMES + 1):
            img = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
            cv2.imwrite(str(folder / f'{j:05}.jpg'), img)
        raw_lines.append(f'clip{i} {NUM_FRAMES} {label}')
        writer = cv2.VideoWriter(
            str(videos_root / f'clip{i}.mp4'), cv2.VideoWriter_fourcc(*'mp4v'),
            10, (80, 60))
        for _ in range(NUM_FRAMES):
            writer.write(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
        writer.release()
        video_lines.append(f'clip{i}.mp4 {label}')
    (root / 'rawframes.txt').write_text('\n'.join(raw_lines) + '\n')
    (root / 'videos.txt').write_text('\n'.join(video_lines) + '\n')
    return root


def point_to_fake_data(dataset_cfg, root: Path) -> bool:
    """Point a dataset config at the fake data; False for unknown types."""
    if dataset_cfg.type in ('RawframeDataset', 'CheckedRawframeDataset'):
        dataset_cfg.ann_file = str(root / 'rawframes.txt')
        dataset_cfg.data_prefix = dict(img=str(root / 'rawframes'))
    elif dataset_cfg.type in ('VideoDataset', 'CheckedVideoDataset'):
        dataset_cfg.ann_file = str(root / 'videos.txt')
        dataset_cfg.data_prefix = dict(video=str(root / 'videos'))
    else:
        return False
    return True


def load(path: Path) -> Config:
    cfg = Config.fromfile(str(path))
    init_default_scope(cfg.get('default_scope', 'mmaction'))
    return cfg


def test_configs_are_found():
    names = {p.name for p in CONFIGS}
    for name in ('rsanet_r50_8x1_ssv1.py', 'rsanet_r50_16x1_ssv1.py',
                 'rsanet_r50_8x1_ssv2.py', 'rsanet_r50_16x1_ssv2.py',
                 'rsanet_r50_16x2_diving48.py', 'rsanet_r50_8x1_gym99.py',
                 'rsanet_r50_8x1_gym288.py'):
        assert name in names


@pytest.mark.parametrize(
    'path', CONFIGS, ids=[str(p.relative_to(CONFIG_DIR)) for p in CONFIGS])
def test_config_builds_model_and_pipelines(path, fake_data):
    cfg = load(path)
    assert 'mmrsa' in cfg.custom_imports['imports']
    assert not cfg.custom_imports.get('allow_failed_imports', False)

    cfg.model.backbone.pretrained = None  # no downloads
    model = MODELS.build(cfg.model)
    num_segments = getattr(model.backbone, 'num_segments', None)

    for split in ('train', 'val', 'test'):
        dataset_cfg = copy.deepcopy(cfg[f'{split}_dataloader'].dataset)
        if not point_to_fake_data(dataset_cfg, fake_data):
            # a dataset type this test cannot fake: build the transforms
            for step in dataset_cfg.pipeline:
                TRANSFORMS.build(step)
            continue
        dataset = DATASETS.build(dataset_cfg)
        sample = dataset[0]
        inputs = sample['inputs']
        assert inputs.dtype == torch.uint8 and inputs.shape[1] == 3
        if path.name.startswith('rsanet_r50'):  # the paper's recipes
            assert inputs.shape[2:] == (224, 224)
        if num_segments is not None:
            # whole clips only; twice_sample gives two of them
            assert inputs.shape[0] % num_segments == 0


def test_metafile_paths_exist():
    meta = yaml.safe_load((CONFIG_DIR / 'metafile.yml').read_text())
    for collection in meta['Collections']:
        assert (REPO_ROOT / collection['README']).is_file()
    for model in meta['Models']:
        assert (REPO_ROOT / model['Config']).is_file(), model['Config']
        assert Path(model['Config']).stem == model['Name']


# The public class names of Something-Something, one per line, line i being
# class i: V1 in the line order of something-something-v1-labels.csv (the
# ids of MMAction2's sthv1 lists, tools/data/sthv1/label_map.txt), V2 in the
# order of the ids of something-something-v2-labels.json
# (tools/data/sthv2/label_map.txt).
SS_LABEL_NAMES = REPO_ROOT / 'tests' / 'data' / 'something_something'
#: "Plugging something into something but pulling it right out as you
#: remove your hand": "right" meaning "at once", not a direction.
NOT_A_DIRECTION = 'pulling it right out'


def direction_classes(label_file: Path) -> set:
    """Ids of the classes whose names say "left" or "right" (as a word
    naming a direction)."""
    names = label_file.read_text(encoding='utf-8').splitlines()
    assert len(names) == len(set(names)) == 174
    words = [set(name.lower().replace(',', ' ').split()) for name in names]
    adverb = [i for i, name in enumerate(names) if NOT_A_DIRECTION in name]
    assert len(adverb) == 1
    return {i
            for i, w in enumerate(words)
            if w & {'left', 'right'}} - set(adverb)


SS_CONFIGS = [p for p in CONFIGS if 'ssv1' in p.name or 'ssv2' in p.name]


@pytest.mark.parametrize(
    'path',
    SS_CONFIGS,
    ids=[str(p.relative_to(CONFIG_DIR)) for p in SS_CONFIGS])
def test_ss_flips_never_touch_left_right_classes(path):
    """The classes a config never flips are exactly those whose names say
    left or right, in that dataset's own numbering (the paper,
    supplementary Sec. 1)."""
    cfg = load(path)
    version = 'sthv1' if 'ssv1' in path.name else 'sthv2'
    ids = direction_classes(SS_LABEL_NAMES / f'{version}_label_names.txt')
    # camera turned left/right, pushed/pulled from left to right and back
    assert len(ids) == 6
    for pipeline in (cfg.train_pipeline,
                     cfg.train_dataloader.dataset.pipeline):
        flips = [s for s in pipeline if s['type'] == 'LabelAwareFlip']
        assert len(flips) == 1 and set(flips[0]['no_flip_labels']) == ids
        flip = TRANSFORMS.build(dict(flips[0], flip_ratio=1.0))
        for label in ids:
            img = np.arange(12, dtype=np.uint8).reshape(1, 4, 3)
            results = flip(
                dict(
                    imgs=[img.copy()],
                    label=label,
                    img_shape=(1, 4),
                    modality='RGB'))
            np.testing.assert_array_equal(results['imgs'][0], img)


def test_ssv1_recipe_is_the_papers():
    cfg = load(MAIN)
    backbone, head = cfg.model.backbone, cfg.model.cls_head
    assert backbone.rsa_blocks == ((2, ), (1, 3), (1, 3, 5), (1, ))
    assert backbone.drop_path_rate == 0.2
    assert backbone.pretrained == 'torchvision://resnet50'
    assert head.dropout_ratio == 0.3 and head.label_smooth_eps == 0.1
    assert head.num_classes == 174
    # "average softmax scores for final prediction" (paper Sec. 5.1)
    assert head.average_clips == 'prob'
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay,
            opt.nesterov) == ('SGD', 0.02, 0.9, 5e-4, True)
    assert cfg.optim_wrapper.clip_grad.max_norm == 100
    assert cfg.auto_scale_lr.base_batch_size == 64
    assert cfg.train_dataloader.batch_size * 8 == 64
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end) == ('LinearLR', 5)
    assert (cosine.type, cosine.begin, cosine.end,
            cosine.eta_min_ratio) == ('CosineAnnealingLR', 5, 50, 1e-3)
    assert cfg.train_cfg.max_epochs == 50


def _shrink(pipeline, size: int = 48):
    """The recipe's pipeline at a small resolution (224 -> ``size``)."""
    out = []
    for step in copy.deepcopy(pipeline):
        if step['type'] == 'Resize' and step['scale'] == (320, 240):
            step['scale'] = (size * 4 // 3, size)
        elif step['type'] == 'Resize':
            step['scale'] = (size, size)
        elif step['type'] == 'MultiScaleCrop':
            step['input_size'] = size
        elif step['type'] == 'CenterCrop':
            step['crop_size'] = size
        out.append(step)
    return out


def test_ssv1_recipe_runs_two_iterations(fake_data, tmp_path):
    cfg = load(MAIN)
    cfg.work_dir = str(tmp_path / 'work_dir')
    cfg.model.backbone.pretrained = None
    for split in ('train', 'val', 'test'):
        loader = cfg[f'{split}_dataloader']
        loader.batch_size = 1
        loader.num_workers = 0
        loader.persistent_workers = False
        point_to_fake_data(loader.dataset, fake_data)
        loader.dataset.pipeline = _shrink(loader.dataset.pipeline)
    cfg.train_cfg.max_epochs = 1
    cfg.default_hooks.logger.interval = 1
    cfg.log_level = 'WARNING'

    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    # two of the 5 x 2 linear warm-up iterations have passed
    lr = runner.optim_wrapper.get_lr()['lr'][0]
    assert 0.02 * 0.1 < lr < 0.02 * 0.3
    assert (tmp_path / 'work_dir' / 'epoch_1.pth').is_file()
    metrics = runner.test()
    assert set(metrics) >= {'acc/top1', 'acc/top5', 'acc/mean1'}


# ---------------------------------------------------------------------- #
# structure: one shared runtime, pipelines written out
# ---------------------------------------------------------------------- #
#: ``_base_.train_pipeline[1:]``: a step that moves breaks it silently
BASE_SLICE = re.compile(r'_base_\.[\w.]+\s*\[')
#: what only the shared runtime assigns
RUNTIME_KEYS = {
    'custom_imports', 'custom_hooks', 'runner_type', 'default_scope'
}
CUSTOM_HOOKS = [
    'ClipCheckHook', 'CheckpointFitHook', 'RandomStateHook',
    'ProcessGroupShutdownHook', 'NonFiniteCheckHook', 'PreemptionHook'
]
#: ``rsanet_r50_16x2_ssv1.py``: 16 frames per clip, 2 test clips per video
FRAMES_CLIPS = re.compile(r'_(\d+)x(\d+)_')


def _ids(paths):
    return [str(p.relative_to(CONFIG_DIR)) for p in paths]


def _top_level_names(path: Path) -> dict:
    """``{name: value node}`` of the top-level assignments of a config."""
    names = {}
    for node in ast.parse(path.read_text(encoding='utf-8')).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node.value
    return names


def _local_bases(path: Path) -> set:
    """The config files ``path`` inherits, directly or not (``mmaction::``
    bases left out)."""
    node = _top_level_names(path).get('_base_')
    if node is None:
        return set()
    bases = ast.literal_eval(node)
    bases = [bases] if isinstance(bases, str) else bases
    found = set()
    for base in bases:
        if '::' in base:
            continue
        base_path = (path.parent / base).resolve()
        assert base_path.is_file(), f'{path}: {base}'
        found |= {base_path} | _local_bases(base_path)
    return found


def test_base_slice_pattern():
    for text in ('_base_.train_pipeline[1:]', '_base_.val_pipeline[:1]',
                 '_base_.train_dataloader.dataset.pipeline [2:]'):
        assert BASE_SLICE.search(text), text
    for text in ('_base_.num_frames', '_base_.no_flip_labels)'):
        assert not BASE_SLICE.search(text), text


@pytest.mark.parametrize('path', CONFIG_FILES, ids=_ids(CONFIG_FILES))
def test_no_config_slices_a_base_pipeline(path):
    """Pipelines are written out in full, never ``_base_.x[i:]``."""
    match = BASE_SLICE.search(path.read_text(encoding='utf-8'))
    assert match is None, match and match.group(0)


@pytest.mark.parametrize('path', CONFIG_FILES, ids=_ids(CONFIG_FILES))
def test_only_the_shared_runtime_sets_the_runtime(path):
    if path == RUNTIME:
        assert RUNTIME_KEYS - {'default_scope'} <= set(_top_level_names(path))
    else:
        assert not RUNTIME_KEYS & set(_top_level_names(path))


@pytest.mark.parametrize('path', CONFIGS, ids=_ids(CONFIGS))
def test_recipe_inherits_the_shared_runtime(path):
    assert RUNTIME in _local_bases(path)
    cfg = Config.fromfile(str(path))
    assert cfg.runner_type == 'ResumableRunner'
    assert cfg.default_scope == 'mmaction'
    assert [h['type'] for h in cfg.custom_hooks] == CUSTOM_HOOKS
    assert cfg.custom_imports == dict(
        imports=['mmrsa'], allow_failed_imports=False)
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'


def _sample_frames(pipeline) -> dict:
    steps = [s for s in pipeline if s['type'] == 'SampleFrames']
    assert len(steps) == 1
    return steps[0]


@pytest.mark.parametrize('path', CONFIGS, ids=_ids(CONFIGS))
def test_pipelines_sample_the_frames_and_clips_of_the_name(path):
    """``..._16x2_...`` samples 16 frames in every split and tests on 2
    clips per video, in the top-level pipelines and the dataloaders."""
    frames, clips = map(int, FRAMES_CLIPS.search(path.name).groups())
    cfg = Config.fromfile(str(path))
    assert cfg.model.backbone.get('num_segments', frames) == frames
    for split in ('train', 'val', 'test'):
        for pipeline in (cfg[f'{split}_pipeline'],
                         cfg[f'{split}_dataloader'].dataset.pipeline):
            step = _sample_frames(pipeline)
            if step.get('clip_len', 1) == 1:  # 2D: one frame per segment
                assert step['num_clips'] == frames, split
                twice = step.get('twice_sample', False)
                assert twice == (split == 'test' and clips == 2), split
            else:  # 3D (NCTHW): clips of `frames` frames
                assert step['clip_len'] == frames, split
                assert step['num_clips'] == (clips
                                             if split == 'test' else 1), split
