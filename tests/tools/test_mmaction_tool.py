# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/mmaction_tool.py: MMAction2's packaged tools, run for real after
``import mmrsa``."""
import hashlib
import os.path as osp
import pathlib
import pickle

import pytest
import torch
from mmengine.logging import MessageHub
from run_helpers import REPO_ROOT, import_tool, run_tool

SCRIPT = REPO_ROOT / 'tools' / 'mmaction_tool.py'
CONFIG = 'configs/recognition/rsanet/rsanet_r18_8x1_synthmotion.py'

TOOL = import_tool('tools/mmaction_tool.py')
PACKAGED = pathlib.Path(TOOL.tools_root())


def _score_dump(path, preds, gts, num_classes=3):
    """A score file as ``tools/test.py --dump`` (MMEngine's DumpResults)
    writes one: a pickled list of dicts of tensors."""
    rows = []
    for pred, gt in zip(preds, gts):
        score = torch.full((num_classes, ), 0.1)
        score[pred] = 0.8
        rows.append(
            dict(
                pred_score=score,
                pred_label=torch.tensor([pred]),
                gt_label=torch.tensor([gt])))
    with open(path, 'wb') as f:
        pickle.dump(rows, f)


def _runner_checkpoint(path):
    """Weights plus what MMEngine's Runner adds: message hub (log buffers),
    optimizer state, data preprocessor buffers."""
    hub = MessageHub.get_instance('mmrsa_test_mmaction_tool')
    hub.update_scalar('train/loss', 2.3)
    torch.save(
        dict(
            meta=dict(epoch=1, iter=3),
            state_dict={
                'backbone.w': torch.arange(6.).reshape(2, 3),
                'data_preprocessor.mean': torch.zeros(3)
            },
            message_hub=hub.state_dict(),
            optimizer=dict(state={}, param_groups=[dict(lr=0.1)])), path)


@pytest.mark.skipif(
    not (PACKAGED / 'analysis_tools' / 'confusion_matrix.py').is_file(),
    reason='the installed mmaction2 has no packaged tools')
def test_confusion_matrix_runs_on_a_score_dump(tmp_path):
    preds = [0, 1, 2, 2, 1, 0, 1]
    gts = [0, 1, 2, 1, 1, 2, 0]
    _score_dump(tmp_path / 'scores.pkl', preds, gts)
    (tmp_path / 'labels.txt').write_text('push\npull\nspin\n')
    args = [
        'analysis_tools/confusion_matrix.py', CONFIG, tmp_path / 'scores.pkl',
        '--label-file', tmp_path / 'labels.txt', '--out', tmp_path / 'cm.pkl',
        '--show-path', tmp_path / 'cm.png', '--include-values'
    ]
    # without mmrsa the packaged tool stops at MMAction2's missing module
    plain = run_tool([PACKAGED / args[0], *args[1:]], cwd=REPO_ROOT)
    assert plain.returncode != 0
    assert "No module named 'mmaction.models.localizers.drn'" in plain.stderr
    assert not (tmp_path / 'cm.pkl').exists()

    result = run_tool([SCRIPT, *args], cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'saved at {tmp_path / "cm.png"}' in result.stdout
    assert (tmp_path / 'cm.png').read_bytes()[:4] == b'\x89PNG'
    with open(tmp_path / 'cm.pkl', 'rb') as f:
        cm = pickle.load(f)  # written by this test's own run
    expected = torch.zeros(3, 3, dtype=torch.long)
    for pred, gt in zip(preds, gts):
        expected[gt, pred] += 1
    assert torch.equal(torch.as_tensor(cm), expected)


@pytest.mark.skipif(
    not (PACKAGED / 'deployment' / 'publish_model.py').is_file(),
    reason='the installed mmaction2 has no packaged tools')
def test_publish_model_runs_on_a_runner_checkpoint(tmp_path):
    _runner_checkpoint(tmp_path / 'epoch_1.pth')
    args = ['deployment/publish_model.py', tmp_path / 'epoch_1.pth']
    plain = run_tool([PACKAGED / args[0], *args[1:], tmp_path / 'plain.pth'],
                     cwd=REPO_ROOT)
    assert plain.returncode != 0 and 'Weights only load failed' in \
        plain.stderr

    result = run_tool([SCRIPT, *args, tmp_path / 'pub.pth'], cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    (out, ) = tmp_path.glob('pub_*.pth')  # pub_<date>-<sha256[:8]>.pth
    assert hashlib.sha256(out.read_bytes()).hexdigest()[:8] == \
        out.stem.rsplit('-', 1)[1]
    ckpt = torch.load(out, map_location='cpu', weights_only=True)
    assert set(ckpt) == {'meta', 'state_dict'}
    assert list(ckpt['state_dict']) == ['backbone.w']
    assert torch.equal(ckpt['state_dict']['backbone.w'],
                       torch.arange(6.).reshape(2, 3))


def test_a_checkpoint_that_pickles_objects_is_refused(tmp_path):
    torch.save(
        dict(state_dict={}, path=pathlib.PurePosixPath('/x')),
        tmp_path / 'odd.pth')
    result = run_tool([
        SCRIPT, 'deployment/publish_model.py', tmp_path / 'odd.pth',
        tmp_path / 'out.pth'
    ],
                      cwd=REPO_ROOT)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert 'error: ' in result.stderr and 'PurePosixPath' in result.stderr
    assert not list(tmp_path.glob('out*'))


@pytest.mark.parametrize('name,message', [
    ('analysis_tools/confusoin_matrix.py',
     'Did you mean analysis_tools/confusion_matrix.py'),
    ('no_such_tool.py', 'List them with --list'),
    ('dist_train.sh', 'no tool'),
    ('../../mmengine/__init__.py', 'no tool'),
])
def test_a_missing_tool_is_named(name, message):
    result = run_tool([SCRIPT, name], cwd=REPO_ROOT)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert 'error: MMAction2 1.2.0' in result.stderr
    assert repr(name) in result.stderr and message in result.stderr


def test_tool_names_are_resolved():
    path = TOOL.resolve_tool('analysis_tools/confusion_matrix.py')
    assert path == osp.realpath(PACKAGED / 'analysis_tools' /
                                'confusion_matrix.py')
    assert TOOL.resolve_tool('tools/analysis_tools/confusion_matrix') == path
    tools = TOOL.list_tools()
    assert 'analysis_tools/confusion_matrix.py' in tools
    assert 'deployment/publish_model.py' in tools
    assert not any('__pycache__' in t or not t.endswith('.py') for t in tools)


def test_missing_tools_folder_is_explained(tmp_path):
    with pytest.raises(TOOL.ToolNotFoundError, match='no packaged tools'):
        TOOL.resolve_tool('train.py', root=str(tmp_path / 'none'))


def test_usage_and_list():
    result = run_tool([SCRIPT], cwd=REPO_ROOT)
    assert result.returncode == 2 and 'usage:' in result.stderr
    result = run_tool([SCRIPT, '--help'], cwd=REPO_ROOT)
    assert result.returncode == 0 and 'usage:' in result.stdout
    result = run_tool([SCRIPT, '--list'], cwd=REPO_ROOT)
    assert result.returncode == 0
    assert 'analysis_tools/confusion_matrix.py' in result.stdout.split()


def test_torch_load_is_safe_only_while_the_tool_runs(tmp_path):
    import mmrsa  # noqa: F401
    from mmrsa.fileio.checkpoint import (UnsafeCheckpointError,
                                         torch_load_through_loader)
    torch.save(dict(p=pathlib.PurePosixPath('/x')), tmp_path / 'odd.pth')
    original = torch.load
    with torch_load_through_loader():
        assert torch.load is not original
        with pytest.raises(UnsafeCheckpointError):
            torch.load(str(tmp_path / 'odd.pth'), weights_only=False)
        torch.save(dict(w=torch.ones(2)), tmp_path / 'ok.pth')
        assert torch.equal(torch.load(tmp_path / 'ok.pth')['w'], torch.ones(2))
    assert torch.load is original
