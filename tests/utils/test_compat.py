# Copyright (c) mmrsa contributors. All rights reserved.
"""Tests for the runtime fixes in ``mmrsa.utils.compat``."""
import importlib.machinery
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from run_helpers import run_tool

import mmrsa  # noqa: F401  (applies the fixes, as users get them)
from mmrsa.utils import compat

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run_python(code: str,
                timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that can import this checkout."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), env.get('PYTHONPATH')]))
    return subprocess.run([sys.executable, '-c', code],
                          cwd=REPO_ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=timeout)


def _drn_is_placeholder() -> bool:
    module = sys.modules.get(compat.DRN_MODULE + '.drn')
    return module is not None and module.__doc__ == compat.PLACEHOLDER_DOC


# ---------------------------------------------------------------- DRN ----


def test_import_mmaction_models_after_mmrsa():
    result = _run_python('import mmrsa, mmaction.models; '
                         'from mmaction.models import Recognizer2D; '
                         'print(Recognizer2D.__name__)')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == 'Recognizer2D'


def test_import_mmaction_models_without_mmrsa_shows_the_upstream_bug():
    if not _drn_is_placeholder():
        pytest.skip('this mmaction2 installation ships the DRN package')
    result = _run_python('import mmaction.models')
    assert result.returncode != 0
    assert ("No module named 'mmaction.models.localizers.drn'"
            in result.stderr)


def test_drn_placeholder_raises_a_clear_error():
    if not _drn_is_placeholder():
        pytest.skip('this mmaction2 installation ships the DRN package')
    from mmaction.models.localizers import DRN
    from mmaction.registry import MODELS

    with pytest.raises(ImportError, match='open-mmlab/mmaction2#2714'):
        DRN()
    with pytest.raises(ImportError, match='DRN is not available'):
        MODELS.build(dict(type='DRN', vocab_size=10))


def test_patch_missing_drn_is_idempotent():
    before = (sys.modules[compat.DRN_MODULE],
              sys.modules[compat.DRN_MODULE + '.drn'])
    assert compat.patch_missing_drn() is False
    assert compat.patch_missing_drn() is False
    after = (sys.modules[compat.DRN_MODULE],
             sys.modules[compat.DRN_MODULE + '.drn'])
    assert after[0] is before[0] and after[1] is before[1]


def test_patch_missing_drn_is_a_noop_when_drn_is_installed(
        tmp_path, monkeypatch):
    # A fake mmaction tree that does ship localizers/drn/drn.py.
    drn_dir = tmp_path / 'mmaction' / 'models' / 'localizers' / 'drn'
    drn_dir.mkdir(parents=True)
    (drn_dir / '__init__.py').write_text('')
    (drn_dir / 'drn.py').write_text('')
    spec = importlib.machinery.ModuleSpec(
        'mmaction', loader=None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path / 'mmaction')]
    monkeypatch.setattr(compat.importlib.util, 'find_spec',
                        lambda name, *args: spec)
    for name in (compat.DRN_MODULE, compat.DRN_MODULE + '.drn'):
        monkeypatch.delitem(sys.modules, name, raising=False)

    assert compat.patch_missing_drn() is False
    assert compat.DRN_MODULE not in sys.modules


def test_patch_missing_drn_inserts_placeholders_when_missing(
        tmp_path, monkeypatch):
    spec = importlib.machinery.ModuleSpec(
        'mmaction', loader=None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path / 'mmaction')]
    monkeypatch.setattr(compat.importlib.util, 'find_spec',
                        lambda name, *args: spec)
    for name in (compat.DRN_MODULE, compat.DRN_MODULE + '.drn'):
        monkeypatch.delitem(sys.modules, name, raising=False)

    assert compat.patch_missing_drn() is True
    package = sys.modules[compat.DRN_MODULE]
    module = sys.modules[compat.DRN_MODULE + '.drn']
    assert package.drn is module
    assert module.DRN.__name__ == 'DRN'
    with pytest.raises(ImportError, match='DRN is not available'):
        module.DRN()
    assert compat.patch_missing_drn() is False


def test_patch_missing_drn_without_mmaction(monkeypatch):
    monkeypatch.setattr(compat.importlib.util, 'find_spec',
                        lambda name, *args: None)
    monkeypatch.delitem(sys.modules, compat.DRN_MODULE, raising=False)
    assert compat.patch_missing_drn() is False


# -------------------------------------------------------------- numpy ----


def test_numpy_aliases_exist_and_compute():
    assert np.Inf == np.inf
    assert np.trapz([1.0, 2.0, 3.0]) == pytest.approx(4.0)
    assert np.trapz([0.0, 1.0], x=[0.0, 2.0]) == pytest.approx(1.0)
    np.testing.assert_array_equal(
        np.in1d([[1, 2], [3, 4]], [2, 3]), [False, True, True, False])
    np.testing.assert_array_equal(
        np.in1d([1, 2, 3], [2], invert=True), [True, False, True])
    # What mmaction's retrieval metric does with it.
    assert int(np.in1d([5, 7], [7, 9]).max()) == 1


def test_numpy_aliases_are_idempotent():
    before = {name: vars(np)[name] for name in ('Inf', 'trapz', 'in1d')}
    assert compat.patch_numpy_aliases() is False
    assert compat.patch_numpy_aliases() is False
    after = {name: vars(np)[name] for name in ('Inf', 'trapz', 'in1d')}
    assert after == before


@pytest.mark.parametrize('name', ['Inf', 'trapz', 'in1d'])
def test_numpy_aliases_keep_existing_names(monkeypatch, name):
    sentinel = object()
    monkeypatch.setattr(np, name, sentinel, raising=False)
    assert compat.patch_numpy_aliases() is False
    assert getattr(np, name) is sentinel


@pytest.mark.parametrize('name', ['Inf', 'trapz', 'in1d'])
def test_numpy_aliases_restore_a_missing_name(monkeypatch, name):
    original = vars(np)[name]
    monkeypatch.delattr(np, name)
    assert compat.patch_numpy_aliases() is True
    assert name in vars(np)
    # Put back the object numpy had, so other tests see the same state.
    monkeypatch.setattr(np, name, original)


# -------------------------------------------------------- distributed ----


def test_cpu_distributed_patch_is_idempotent():
    from mmengine.dist import utils as dist_utils
    before = [getattr(dist_utils, n) for n in compat._DIST_INIT_FUNCTIONS]
    assert compat.patch_cpu_distributed() is False
    after = [getattr(dist_utils, n) for n in compat._DIST_INIT_FUNCTIONS]
    assert after == before
    assert all(getattr(fn, compat._PATCH_FLAG, False) for fn in after)


def test_cpu_distributed_patch_is_a_noop_with_an_accelerator(monkeypatch):
    import mmengine.device
    from mmengine.dist import utils as dist_utils
    original = dist_utils._init_dist_pytorch
    monkeypatch.setattr(dist_utils, '_init_dist_pytorch', original.__wrapped__)
    monkeypatch.setattr(mmengine.device, 'get_device', lambda: 'cuda')
    assert compat.patch_cpu_distributed() is False
    assert dist_utils._init_dist_pytorch is original.__wrapped__


def test_cpu_distributed_picks_gloo_and_skips_set_device(monkeypatch):
    """The CPU path, forced on any machine (mmengine finds no device)."""
    import mmengine.device
    import torch
    from mmengine.dist import utils as dist_utils

    monkeypatch.setattr(mmengine.device, 'get_device', lambda: 'cpu')
    init = dist_utils._init_dist_pytorch
    init = getattr(init, '__wrapped__', init)
    monkeypatch.setattr(dist_utils, '_init_dist_pytorch',
                        compat._cpu_safe(init))
    calls = []

    def fake_set_device(device):
        raise AssertionError('torch.cuda.set_device must not be called')

    monkeypatch.setattr(torch.cuda, 'set_device', fake_set_device)
    monkeypatch.setattr(dist_utils.torch_dist, 'init_process_group',
                        lambda backend, **kwargs: calls.append(backend))
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')

    dist_utils._init_dist_pytorch('nccl')
    dist_utils._init_dist_pytorch('gloo')
    assert calls == ['gloo', 'gloo']
    assert torch.cuda.set_device is fake_set_device  # restored afterwards


_TORCHRUN_WORKER = textwrap.dedent("""
    import sys
    import types

    import mmrsa  # noqa: F401
    import torch
    from mmengine.dist import get_backend, get_rank, get_world_size
    from mmengine.runner import Runner

    # mmaction2's default_runtime env_cfg, i.e. backend='nccl'; Runner with
    # launcher='pytorch' passes it to init_dist in setup_env.
    env_cfg = dict(
        cudnn_benchmark=False,
        mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
        dist_cfg=dict(backend='nccl'))
    runner = types.SimpleNamespace(distributed=True, launcher='pytorch')
    Runner.setup_env(runner, env_cfg)

    value = torch.tensor([float(get_rank() + 1)])
    torch.distributed.all_reduce(value)
    with open(f'{sys.argv[1]}/rank{get_rank()}.txt', 'w') as f:
        f.write(f'rank={get_rank()} world={get_world_size()} '
                f'backend={get_backend()} sum={value.item()}')
    torch.distributed.destroy_process_group()
""")


def test_torchrun_two_cpu_processes(tmp_path):
    """The CPU start-up path, forced on any machine (no GPU visible)."""
    script = tmp_path / 'worker.py'
    script.write_text(_TORCHRUN_WORKER)
    result = run_tool([
        '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
        script, tmp_path
    ],
                      cwd=tmp_path,
                      env={'CUDA_VISIBLE_DEVICES': ''},
                      timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    results = [(tmp_path / f'rank{rank}.txt').read_text() for rank in (0, 1)]
    assert results == [
        'rank=0 world=2 backend=gloo sum=3.0',
        'rank=1 world=2 backend=gloo sum=3.0',
    ]


def test_cpu_ddp_patch_is_idempotent():
    from mmengine.model.wrappers import distributed
    init_fn = distributed.MMDistributedDataParallel.__init__
    assert getattr(init_fn, compat._PATCH_FLAG, False)
    assert compat.patch_cpu_ddp() is False
    assert distributed.MMDistributedDataParallel.__init__ is init_fn


def test_cpu_ddp_patch_is_a_noop_with_an_accelerator(monkeypatch):
    import mmengine.device
    from mmengine.model.wrappers import distributed
    original = distributed.MMDistributedDataParallel.__init__
    monkeypatch.setattr(distributed.MMDistributedDataParallel, '__init__',
                        original.__wrapped__)
    monkeypatch.setattr(mmengine.device, 'get_device', lambda: 'cuda')
    assert compat.patch_cpu_ddp() is False
    assert (distributed.MMDistributedDataParallel.__init__
            is original.__wrapped__)


_CPU_DDP = textwrap.dedent("""
    import sys
    import mmengine.device
    import torch
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    from mmrsa.utils import compat

    mmengine.device.get_device = lambda: 'cpu'
    init = MMDistributedDataParallel.__init__
    MMDistributedDataParallel.__init__ = compat._cpu_safe_ddp_init(
        getattr(init, '__wrapped__', init))
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.SyncBatchNorm(4))
    dist.init_process_group('gloo', init_method=f'file://{sys.argv[1]}/store',
                            rank=0, world_size=1)
    try:
        wrapped = MMDistributedDataParallel(module=model, device_ids=[0])
        wrapped(torch.randn(2, 3, 8, 8)).sum().backward()
        print('device_ids', wrapped.device_ids)
        print('sync_bn', any(
            isinstance(m, torch.nn.SyncBatchNorm) for m in wrapped.modules()))
        print('grad', model[0].weight.grad is not None)
    finally:
        dist.destroy_process_group()
""")


def test_cpu_ddp_drops_device_ids_and_reverts_sync_bn(tmp_path):
    """What ``Runner.wrap_model`` does under torchrun, on a CPU model with
    SyncBN layers (the CPU path, forced on any machine). In a fresh
    interpreter, as a training process runs it: in a test worker, the end
    of the process group once hung (its gloo thread, releasing a finished
    collective, waited for the GIL that the main thread held while it
    joined that thread)."""
    script = tmp_path / 'ddp.py'
    script.write_text(_CPU_DDP)
    result = run_tool([script, tmp_path],
                      cwd=tmp_path,
                      env={'CUDA_VISIBLE_DEVICES': ''},
                      timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-3:] == [
        'device_ids None', 'sync_bn False', 'grad True'
    ], result.stdout + result.stderr


def test_apply_compat_fixes_lists_every_fix():
    assert set(compat.apply_compat_fixes()) == {
        'numpy_aliases', 'missing_drn', 'cpu_distributed', 'cpu_ddp',
        'bf16_head_loss', 'tsm_optim_params'
    }


def test_bf16_head_loss_is_computed_in_float32():
    import torch

    from mmaction.models import TSNHead
    from mmaction.structures import ActionDataSample
    from mmrsa.utils.compat import patch_bf16_head_loss
    assert patch_bf16_head_loss() is False  # applied by `import mmrsa`
    head = TSNHead(num_classes=4, in_channels=8)
    samples = [ActionDataSample().set_gt_label(i) for i in (0, 3)]
    scores = torch.randn(2, 4, dtype=torch.bfloat16)
    losses = head.loss_by_feat(scores, samples)
    assert losses['loss_cls'].dtype == torch.float32
    assert 'top1_acc' in losses


def _tsm_groups(model, lr=0.01, weight_decay=1e-4):
    from mmaction.engine.optimizers import TSMOptimWrapperConstructor
    constructor = TSMOptimWrapperConstructor(
        dict(
            type='OptimWrapper',
            optimizer=dict(
                type='SGD', lr=lr, momentum=0.9, weight_decay=weight_decay)),
        dict(fc_lr5=True))
    return constructor(model).optimizer.param_groups


def test_tsm_recipe_trains_every_rsa_parameter():
    # TSM's optimizer constructor left RSA's P1 and I (parameters of a
    # module with children) out of every group: never trained
    from mmrsa.apis.model import build_model
    model = build_model(
        'configs/recognition/rsanet/hybrids/tsm_rsa_r18_8x1_synthmotion.py',
        eval_mode=False)
    groups = _tsm_groups(model)
    held = [id(p) for group in groups for p in group['params']]
    assert len(held) == len(set(held))  # no parameter in two groups
    trainable = {
        name
        for name, p in model.named_parameters() if p.requires_grad
    }
    names = {id(p): name for name, p in model.named_parameters()}
    assert {names[i] for i in held} == trainable
    rsa_direct = [name for name in trainable if name.endswith(('.P1', '.I'))]
    assert len(rsa_direct) == 8  # P1 and I of the 4 RSA layers
    group_of = {
        names[id(p)]: group
        for group in groups
        for p in group['params']
    }
    for name in rsa_direct:
        assert group_of[name]['lr'] == 0.01
        assert group_of[name]['weight_decay'] == 1e-4


def test_tsm_recipe_leaves_other_modules_as_upstream_does():
    import torch
    from torch import nn

    class Holder(nn.Module):  # not an mmrsa module

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.scale = nn.Parameter(torch.ones(1))

    model = nn.Sequential(Holder(), nn.Linear(4, 2))
    groups = _tsm_groups(model)
    held = {id(p) for group in groups for p in group['params']}
    assert id(model[0].scale) not in held
    assert id(model[0].conv.weight) in held
