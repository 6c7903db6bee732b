# Copyright (c) mmrsa contributors. All rights reserved.
import pytest
from mmengine.config import Config
from run_helpers import DEMO_CONFIG, REPO_ROOT, run_tool

from mmrsa.utils.config import check_batch_sizes


@pytest.mark.parametrize('size', [0, -1, 2.0, True, None])
def test_bad_batch_size_is_named(size):
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.val_dataloader.batch_size = size
    with pytest.raises(
            ValueError, match=r'val_dataloader\.batch_size=.*positive int'):
        check_batch_sizes(cfg)


def test_train_tool_refuses_batch_size_zero(tmp_path):
    result = run_tool([
        REPO_ROOT / 'tools' / 'train.py', DEMO_CONFIG, '--work-dir',
        tmp_path / 'w', '--cfg-options', 'train_dataloader.batch_size=0'
    ],
                      cwd=tmp_path)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert ('error: train_dataloader.batch_size=0: it must be a positive '
            'int') in result.stderr
