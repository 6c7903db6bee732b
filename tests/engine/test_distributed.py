# Copyright (c) mmrsa contributors. All rights reserved.
"""``tools/dist_train.sh`` / ``tools/dist_test.sh`` (torchrun, MMEngine's
``--launcher pytorch``) run the demo config in 2 CPU processes: gloo instead
of NCCL, no device ids, BN instead of SyncBN; and on a GPU with NCCL."""
import socket
import subprocess
import sys

import pytest
import torch
from run_helpers import DEMO_CONFIG, REPO_ROOT, SMALL_RUN, tool_env
from train_helpers import read_checkpoint as load_checkpoint

# What a config written for GPUs asks for: NCCL and SyncBN.
GPU_STYLE = [
    'env_cfg.dist_cfg.backend=nccl', 'model.backbone.norm_cfg.type=SyncBN'
]
# 8 clips, 2 processes, 2 clips per process and iteration
DIST_RUN = [o for o in SMALL_RUN if 'batch_size' not in o] + [
    'train_cfg.max_epochs=1', 'train_dataloader.batch_size=2',
    'val_dataloader.batch_size=2', 'test_dataloader.batch_size=2',
    'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False'
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _launch(script: str, args, cwd, cpu: bool = True):
    """``bash tools/SCRIPT ARGS`` with a free port and this Python; with
    ``cpu`` no GPU is visible (the CPU path, on any machine)."""
    extra = dict(PORT=str(_free_port()), PYTHON=sys.executable)
    if cpu:
        extra['CUDA_VISIBLE_DEVICES'] = ''
    env = tool_env(extra)
    return subprocess.run(
        ['bash', str(REPO_ROOT / 'tools' / script), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300)


@pytest.fixture(scope='module')
def dist_run(synth_dir):
    work_dir = synth_dir / 'work_dirs' / 'dist'
    result = _launch('dist_train.sh', [
        DEMO_CONFIG, 2, '--work-dir', work_dir, '--cfg-options', *DIST_RUN,
        *GPU_STYLE
    ], synth_dir)
    return work_dir, result


def test_dist_train_two_cpu_processes(dist_run):
    work_dir, result = dist_run
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert 'Distributed launcher: pytorch' in out
    assert 'using the gloo backend instead of nccl' in out
    assert 'SyncBatchNorm layers are reverted to BatchNorm' in out
    # 8 clips over 2 processes with 2 clips each: 2 iterations, not 4
    meta = load_checkpoint(work_dir / 'epoch_1.pth')['meta']
    assert (meta['epoch'], meta['iter']) == (1, 2)
    assert 'Epoch(val) [1][1/1]' in out


@pytest.mark.slow
def test_dist_test_two_cpu_processes(dist_run, synth_dir):
    work_dir, result = dist_run
    assert result.returncode == 0
    test = _launch('dist_test.sh', [
        DEMO_CONFIG, work_dir / 'epoch_1.pth', 2, '--work-dir',
        work_dir / 'test', '--cfg-options', *DIST_RUN, *GPU_STYLE
    ], synth_dir)
    out = test.stdout + test.stderr
    assert test.returncode == 0, out[-4000:]
    assert 'Epoch(test) [1/1]' in out and 'acc/top1' in out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_dist_train_one_gpu_nccl(synth_dir):
    work_dir = synth_dir / 'work_dirs' / 'dist_gpu'
    result = _launch(
        'dist_train.sh', [
            DEMO_CONFIG, 1, '--work-dir', work_dir, '--cfg-options', *DIST_RUN,
            *GPU_STYLE
        ],
        synth_dir,
        cpu=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert 'using the gloo backend' not in out
    assert (work_dir / 'epoch_1.pth').is_file()
