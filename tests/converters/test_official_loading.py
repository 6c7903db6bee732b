# Copyright (c) mmrsa contributors. All rights reserved.
"""The authors' checkpoint loads as it is: ``init_recognizer``, ``load_from``
and the inferencers get the converted weights (in memory, logged), never a
silently random model; a checkpoint that does not fit fails loudly."""
from pathlib import Path

import pytest
import torch
from run_helpers import serve_folder
from test_official import (MAIN, build, clip, official_forward, save_official,
                           strip, to_official)

import mmrsa  # noqa: F401
from mmrsa.engine import CheckpointMismatchError
from mmrsa.fileio.checkpoint import (from_official_layout, is_official_layout,
                                     load_checkpoint_file)


@pytest.fixture(scope='module')
def official_file(tmp_path_factory):
    """An authors'-layout file (random weights) and its state dict."""
    official = to_official(build(MAIN), seed=3)
    path = save_official(
        tmp_path_factory.mktemp('authors') / 'resnet_rgb_model_best.pth.tar',
        official)
    return path, strip(official)


def _logits(model, x):
    with torch.no_grad():
        return model(x, mode='tensor', stage='head')


def test_layout_is_recognised(official_file):
    path, _ = official_file
    raw = torch.load(path, weights_only=True)
    assert is_official_layout(raw)
    assert not is_official_layout({'state_dict': {'backbone.conv1.w': 1}})
    assert from_official_layout({'a': 1}, 'x') == {'a': 1}


def test_init_recognizer_gives_the_authors_logits(official_file):
    from mmaction.apis import init_recognizer
    path, official = official_file
    from mmengine.config import Config
    cfg = Config.fromfile(str(MAIN))
    cfg.model.backbone.pretrained = None
    model = init_recognizer(cfg, str(path), device='cpu')
    x = clip()
    theirs = official_forward(official, x)
    assert theirs.abs().max() > 0.1
    assert (_logits(model, x) - theirs).abs().max() <= 1e-4


def test_loader_says_it_converted(official_file, monkeypatch):
    from mmrsa.fileio import checkpoint as loader
    path, _ = official_file
    said = []
    monkeypatch.setattr(loader, 'print_log',
                        lambda message, **kwargs: said.append(message))
    converted = load_checkpoint_file(str(path))
    assert set(converted) == {'meta', 'state_dict'}
    assert converted['meta']['official'] is True
    assert converted['meta']['epoch'] == 50
    assert all(
        k.startswith(('backbone.', 'cls_head.'))
        for k in converted['state_dict'])
    (line, ) = [m for m in said if 'authors' in m]
    assert str(path) in line and 'converted in memory' in line


def test_authors_url_loads_through_load_from(official_file, tmp_path,
                                             monkeypatch):
    """Served as the authors' repository serves it (two runs, one name),
    the file reaches the model through the http scheme."""
    from mmengine.runner import load_checkpoint
    path, official = official_file
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    root = tmp_path / 'served'
    run = root / 'net_runs' / 'RSA_R50_SSV1_16frames'
    run.mkdir(parents=True)
    (run / path.name).write_bytes(path.read_bytes())
    model = build(MAIN)
    with serve_folder(root) as base:
        load_checkpoint(
            model, f'{base}/net_runs/RSA_R50_SSV1_16frames/'
            f'{path.name}',
            map_location='cpu',
            strict=True,
            logger='silent')
    cached = Path(torch.hub.get_dir(), 'checkpoints', 'RSA_R50_SSV1_16frames',
                  path.name)
    assert cached.is_file()
    x = clip()
    assert (_logits(model, x) - official_forward(official, x)).abs().max() \
        <= 1e-4


def test_checkpoint_that_fits_nothing_fails_loudly(tmp_path):
    """Keys that match nothing (another network) no longer give a random
    model with a warning: init_recognizer raises, naming the problem."""
    from mmengine.config import Config

    from mmaction.apis import init_recognizer
    path = tmp_path / 'other.pth'
    torch.save({'state_dict': {'features.0.weight': torch.ones(3)}}, path)
    cfg = Config.fromfile(str(MAIN))
    cfg.model.backbone.pretrained = None
    with pytest.raises(
            CheckpointMismatchError, match="none of the backbone's"):
        init_recognizer(cfg, str(path), device='cpu')


def test_checkpoint_of_other_rsa_settings_fails_loudly(official_file,
                                                       tmp_path):
    """The 8-frame RSANet's file into a model with another kernel size:
    tensors of other shapes are an error, not a warning."""
    from mmengine.config import Config

    from mmaction.apis import init_recognizer
    model = build(MAIN)
    path = tmp_path / 'rsanet.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    cfg = Config.fromfile(str(MAIN))
    cfg.model.backbone.pretrained = None
    cfg.model.backbone.rsa_cfg.kernel_size = (3, 5, 5)
    with pytest.raises(CheckpointMismatchError, match='other shapes'):
        init_recognizer(cfg, str(path), device='cpu')
